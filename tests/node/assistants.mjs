// Assistants v2 through the official openai-node SDK, unchanged but for its baseURL: function tools through
// requires_action, a streamed run, file_search with citations and code_interpreter. Prints what it saw as JSON.
import OpenAI, { toFile } from "openai";

const client = new OpenAI({ baseURL: process.env.OASIS_BASE_URL, apiKey: "sk-node", maxRetries: 0 });
const model = "gpt-4o-mini";
const seen = {};

const weather = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Get the weather for a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
};

// 1. A function tool: the run stops at requires_action, the outputs are submitted, the run completes.
const assistant = await client.beta.assistants.create({ model, temperature: 0, tools: [weather] });
const thread = await client.beta.threads.create({ messages: [{ role: "user", content: "Weather in Oslo?" }] });
let run = await client.beta.threads.runs.createAndPoll(thread.id, {
  assistant_id: assistant.id,
  tool_choice: { type: "function", function: { name: "get_weather" } },
  max_completion_tokens: 256,
});
seen.functionStatus = run.status;
const calls = run.required_action.submit_tool_outputs.tool_calls;
seen.functionName = calls[0].function.name;
run = await client.beta.threads.runs.submitToolOutputsAndPoll(run.id, {
  thread_id: thread.id,
  tool_outputs: calls.map((call) => ({ tool_call_id: call.id, output: "Snow, -3 C" })),
});
seen.afterOutputs = run.status;
const messages = await client.beta.threads.messages.list(thread.id, { order: "asc" });
seen.roles = messages.data.map((message) => message.role);

// 2. A streamed run: events in order, text as it comes, the final run.
const streamThread = await client.beta.threads.create({ messages: [{ role: "user", content: "Say hello." }] });
const events = [];
let streamed = "";
const stream = client.beta.threads.runs
  .stream(streamThread.id, { assistant_id: assistant.id, tool_choice: "none", max_completion_tokens: 256 })
  .on("event", (event) => events.push(event.event))
  .on("textDelta", (delta) => (streamed += delta.value ?? ""));
const finalRun = await stream.finalRun();
const finalMessages = await stream.finalMessages();
seen.streamEvents = events;
seen.streamStatus = finalRun.status;
seen.streamTextMatches = finalMessages[0].content[0].text.value === streamed && streamed.length > 0;

// 3. file_search over a vector store: a file_search step and citations that point at the markers.
const file = await client.files.create({
  file: await toFile(Buffer.from("Honeybees. The queen lays up to two thousand eggs a day."), "bees.txt"),
  purpose: "assistants",
});
let store = await client.vectorStores.create({ name: "bees", file_ids: [file.id] });
while (store.status !== "completed") {
  await new Promise((resolve) => setTimeout(resolve, 100));
  store = await client.vectorStores.retrieve(store.id);
}
seen.storeCompleted = store.file_counts.completed;
const searcher = await client.beta.assistants.create({
  model,
  temperature: 0,
  instructions: "Answer by quoting the sentence of the file that answers the question.",
  tools: [{ type: "file_search", file_search: { max_num_results: 1 } }],
  tool_resources: { file_search: { vector_store_ids: [store.id] } },
});
const searchRun = await client.beta.threads.createAndRunPoll({
  assistant_id: searcher.id,
  thread: { messages: [{ role: "user", content: "How many eggs does the queen bee lay a day?" }] },
  tool_choice: { type: "file_search" },
  max_completion_tokens: 256,
});
const searchSteps = await client.beta.threads.runs.steps.list(searchRun.id, {
  thread_id: searchRun.thread_id,
  order: "asc",
  include: ["step_details.tool_calls[*].file_search.results[*].content"],
});
const searchCall = searchSteps.data[0].step_details.tool_calls[0];
seen.searchType = searchCall.type;
seen.searchFile = searchCall.file_search.results[0].file_id === file.id;
seen.searchContent = searchCall.file_search.results[0].content[0].text;
const answer = (await client.beta.threads.messages.list(searchRun.thread_id, { run_id: searchRun.id })).data[0];
const text = answer.content[0].text;
seen.citations = text.annotations.map((note) => ({
  marker: text.value.slice(note.start_index, note.end_index) === note.text,
  file: note.file_citation.file_id === file.id,
}));

// 4. code_interpreter: the model's code runs; its step carries the input and the outputs.
const coder = await client.beta.assistants.create({
  model,
  temperature: 0,
  instructions: "Use python to answer.",
  tools: [{ type: "code_interpreter" }],
});
const codeRun = await client.beta.threads.createAndRunPoll({
  assistant_id: coder.id,
  thread: { messages: [{ role: "user", content: "Run this code: print(17 * 23)" }] },
  tool_choice: { type: "code_interpreter" },
  max_completion_tokens: 512,
});
const codeSteps = await client.beta.threads.runs.steps.list(codeRun.id, { thread_id: codeRun.thread_id, order: "asc" });
const codeCall = codeSteps.data[0].step_details.tool_calls[0];
seen.codeType = codeCall.type;
seen.codeInput = codeCall.code_interpreter.input;
seen.codeLogs = codeCall.code_interpreter.outputs.filter((out) => out.type === "logs").map((out) => out.logs).join("");

// 5. An OpenAI-shaped error surfaces as the SDK's typed error.
try {
  await client.beta.threads.runs.retrieve("run_missing", { thread_id: thread.id });
} catch (error) {
  seen.missingRun = { status: error.status, isNotFound: error instanceof OpenAI.NotFoundError, param: error.param };
}

console.log(JSON.stringify(seen));
