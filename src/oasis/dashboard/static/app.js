// oasis's dashboard: a client of the public API (/v1, plus /health and /metrics), like any other program.
// Plain modules, no build step: what is here is what the browser runs.

const KEY_STORAGE = "oasis-api-key";
const PAGES = ["playground", "files", "vector-stores", "batches", "assistants", "fine-tuning", "server"];
const TEXT_ENGINES = new Set(["llamacpp", "upstream"]);

const $ = (id) => document.getElementById(id);
let apiKey = sessionStorage.getItem(KEY_STORAGE);
let conversation = [];
let chatAbort = null; // the reply being streamed, stopped by Clear
let pageTimer = null; // the open page's next refresh
let routeGeneration = 0; // bumped on every page change: work started for an older page does nothing more
let openStore = null;
let openJob = null;
let openAssistant = null;
let openThread = null;
let lastTokens = null;

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function readError(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch {
    // not JSON: the status line says enough
  }
  return new ApiError(response.status, message);
}

async function call(path, { method = "GET", body, key = apiKey, raw = false, signal } = {}) {
  const headers = { Authorization: `Bearer ${key}` };
  let payload = body;
  if (body !== undefined && !(body instanceof FormData)) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const response = await fetch(path, { method, headers, body: payload, signal });
  if (!response.ok) throw await readError(response);
  return raw ? response : response.json();
}

function showError(error) {
  const box = $("error");
  box.textContent = error instanceof Error ? error.message : String(error);
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

// --- pages -------------------------------------------------------------------------------------------------------

// Each page: what opening it does, and what to redo while it stays open (one refresh at a time, the next one
// scheduled when the last has finished, so that an older answer never lands after a newer one).
const PAGE_ACTIONS = {
  playground: { open: () => openPlayground() },
  files: { open: () => loadFiles() },
  "vector-stores": { open: () => refreshStores(), refresh: () => refreshStores(), every: 1000 },
  batches: { open: () => openBatches(), refresh: () => refreshBatches(), every: 1000 },
  assistants: { open: () => openAssistants() },
  "fine-tuning": { open: () => refreshJobs(), refresh: () => refreshJobs(), every: 2000 },
  server: { open: () => openServer(), refresh: () => refreshServer(), every: 2000 },
};

function current(generation) {
  return generation === routeGeneration;
}

function poll(generation, actions) {
  if (!actions.refresh || !current(generation)) return;
  pageTimer = setTimeout(async () => {
    if (!current(generation)) return;
    try {
      await actions.refresh();
    } catch (error) {
      if (current(generation)) showError(error);
    }
    poll(generation, actions);
  }, actions.every);
}

function route() {
  const generation = ++routeGeneration;
  clearTimeout(pageTimer);
  pageTimer = null;
  const signedIn = Boolean(apiKey);
  $("nav").hidden = !signedIn;
  $("sign-out").hidden = !signedIn;
  const wanted = location.hash.slice(1);
  const page = signedIn ? (PAGES.includes(wanted) ? wanted : "playground") : "sign-in";
  for (const id of ["sign-in", ...PAGES]) $(id).hidden = id !== page;
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.getAttribute("href") === `#${page}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const actions = PAGE_ACTIONS[page];
  if (!actions) return;
  actions.open().then(
    () => poll(generation, actions),
    (error) => {
      if (current(generation)) showError(error);
      poll(generation, actions);
    },
  );
}

async function signIn(event) {
  event.preventDefault();
  clearError();
  const key = $("api-key").value.trim();
  try {
    await call("/v1/models", { key });
  } catch (error) {
    showError(error.status === 401 ? `Not signed in: ${error.message}` : error);
    return;
  }
  apiKey = key;
  sessionStorage.setItem(KEY_STORAGE, key);
  $("api-key").value = "";
  if (location.hash === "#playground") route();
  else location.hash = "#playground";
}

function signOut() {
  // a fresh page: nothing of this project (its threads, events, a new key's secret) stays in the tab
  sessionStorage.removeItem(KEY_STORAGE);
  location.replace("/");
}

// --- playground --------------------------------------------------------------------------------------------------

async function modelIds() {
  const [models, health] = await Promise.all([call("/v1/models"), fetch("/health").then((r) => r.json())]);
  const engines = new Map((health.models || []).map((model) => [model.id, model.engine]));
  const ids = models.data.map((model) => model.id);
  // text models first (a fine-tune is one); other ids may be aliases of anything, so they stay, after them
  const isText = (id) => TEXT_ENGINES.has(engines.get(id)) || id.startsWith("ft:");
  const known = (id) => engines.has(id) || id.startsWith("ft:");
  return [...ids.filter(isText), ...ids.filter((id) => !known(id)), ...ids.filter((id) => known(id) && !isText(id))];
}

async function openPlayground(wanted) {
  const select = $("chat-model");
  if (wanted && ![...select.options].some((option) => option.value === wanted)) select.append(new Option(wanted, wanted));
  if (wanted) select.value = wanted;
  if (select.options.length > (wanted ? 1 : 0)) return;
  for (const id of await modelIds()) if (id !== wanted) select.append(new Option(id, id));
  if (wanted) select.value = wanted;
}

function chatRequest() {
  const request = {
    model: $("chat-model").value,
    messages: [],
    stream: true,
    stream_options: { include_usage: true },
    temperature: Number($("chat-temperature").value),
    top_p: Number($("chat-top-p").value),
    max_tokens: Number($("chat-max-tokens").value),
  };
  const system = $("chat-system").value.trim();
  if (system) request.messages.push({ role: "system", content: system });
  request.messages.push(...conversation);
  if ($("chat-stop").value) request.stop = [$("chat-stop").value];
  if ($("chat-json").checked) request.response_format = { type: "json_object" };
  const tools = $("chat-tools").value.trim();
  if (tools) {
    try {
      request.tools = JSON.parse(tools);
    } catch (error) {
      throw new Error(`Tools are not valid JSON: ${error.message}`);
    }
  }
  return request;
}

function addMessage(role, text) {
  const item = element("li", undefined, `message ${role}`);
  item.append(element("span", role, "role"), element("div", text, "content"));
  $("chat-log").append(item);
  return item.querySelector(".content");
}

async function* serverSentEvents(response) {
  // yields {event, data}: `event:` names the Assistants stream's events; chat streams have data only
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n"); // the spec allows CRLF and CR line ends too
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end).split("\n");
      buffer = buffer.slice(end + 2);
      const named = frame.find((line) => line.startsWith("event:"));
      const data = frame
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""))
        .join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      yield { event: named ? named.slice(6).trim() : "message", data: JSON.parse(data) };
    }
  }
}

function pendingToolCalls() {
  const last = conversation[conversation.length - 1];
  return last && last.role === "assistant" && last.tool_calls ? last.tool_calls : null;
}

function showChatInputRole() {
  $("chat-input-label").textContent = pendingToolCalls() ? "Tool result (sent for each call the model made)" : "Message";
}

async function sendChat(event) {
  event.preventDefault();
  if (chatAbort) return; // one reply at a time (Ctrl+Enter does not wait for the button)
  clearError();
  const text = $("chat-input").value;
  if (!text.trim()) return;
  const mine = conversation; // Clear starts a new conversation: this reply then belongs to none
  const calls = pendingToolCalls();
  const added = calls
    ? calls.map((call) => ({ role: "tool", tool_call_id: call.id, content: text }))
    : [{ role: "user", content: text }];
  mine.push(...added);
  let request;
  try {
    request = chatRequest();
  } catch (error) {
    mine.splice(mine.length - added.length, added.length);
    showError(error);
    return;
  }
  const asked = addMessage(calls ? "tool" : "user", text).closest("li");
  $("chat-input").value = "";
  $("chat-send").disabled = true;
  const shown = addMessage("assistant", "");
  shown.setAttribute("aria-busy", "true");
  const started = performance.now();
  let firstToken = null;
  let content = "";
  const made = [];
  let usage = null;
  chatAbort = new AbortController();
  try {
    const response = await call("/v1/chat/completions", { method: "POST", body: request, raw: true, signal: chatAbort.signal });
    for await (const { data: chunk } of serverSentEvents(response)) {
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) usage = chunk.usage;
      const delta = chunk.choices && chunk.choices[0] ? chunk.choices[0].delta : null;
      if (!delta) continue;
      if ((delta.content || delta.tool_calls) && firstToken === null) firstToken = performance.now();
      if (delta.content) content += delta.content;
      for (const part of delta.tool_calls || []) {
        const known = made[part.index] || (made[part.index] = { id: part.id, type: "function", function: { name: "", arguments: "" } });
        if (part.function && part.function.name) known.function.name += part.function.name;
        if (part.function && part.function.arguments) known.function.arguments += part.function.arguments;
      }
      const callText = made.map((c) => `${c.function.name}(${c.function.arguments})`).join("\n");
      shown.textContent = [content, callText].filter(Boolean).join("\n");
    }
    const message = { role: "assistant", content: content || null };
    if (made.length) message.tool_calls = made;
    if (mine === conversation) mine.push(message);
    const ended = performance.now();
    if (firstToken !== null) {
      const tokens = usage ? usage.completion_tokens : null;
      const seconds = (ended - firstToken) / 1000;
      const speed = tokens && seconds > 0 ? `${(tokens / seconds).toFixed(1)} tokens/s` : "";
      $("chat-stats").textContent = [`first token ${Math.round(firstToken - started)} ms`, speed].filter(Boolean).join(" · ");
    }
  } catch (error) {
    // the turn did not happen: what was asked goes back into the box, and leaves the conversation
    if (mine === conversation) {
      mine.splice(mine.length - added.length, added.length);
      $("chat-input").value = text;
      asked.remove();
      shown.closest("li").remove();
    }
    if (error.name !== "AbortError") showError(error);
  } finally {
    shown.removeAttribute("aria-busy");
    $("chat-send").disabled = false;
    chatAbort = null;
    showChatInputRole();
  }
}

function clearChat() {
  if (chatAbort) chatAbort.abort();
  conversation = [];
  $("chat-log").replaceChildren();
  $("chat-stats").textContent = "";
  showChatInputRole();
}

// --- playground tabs, audio, images ------------------------------------------------------------------------------

function selectTab(tab) {
  for (const other of document.querySelectorAll('[role="tab"]')) {
    const chosen = other === tab;
    other.setAttribute("aria-selected", String(chosen));
    other.tabIndex = chosen ? 0 : -1;
    $(other.getAttribute("aria-controls")).hidden = !chosen;
  }
  tab.focus();
}

function tabKeys(event) {
  // arrow keys move between tabs, as the WAI-ARIA tabs pattern has it
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  const at = tabs.indexOf(event.target);
  if (event.key === "ArrowRight") selectTab(tabs[(at + 1) % tabs.length]);
  if (event.key === "ArrowLeft") selectTab(tabs[(at + tabs.length - 1) % tabs.length]);
}

let recorder = null;
let recorded = null;

async function toggleRecording() {
  clearError();
  if (recorder) {
    recorder.stop();
    return;
  }
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  const chunks = [];
  recorder = new MediaRecorder(stream);
  recorder.addEventListener("dataavailable", (event) => chunks.push(event.data));
  recorder.addEventListener("stop", () => {
    for (const track of stream.getTracks()) track.stop();
    recorded = new File(chunks, "recording.webm", { type: recorder.mimeType || "audio/webm" });
    recorder = null;
    $("record").textContent = "Record";
    $("record-state").textContent = `recorded ${(recorded.size / 1024).toFixed(1)} KB`;
  });
  recorder.start();
  recorded = null;
  $("record").textContent = "Stop";
  $("record-state").textContent = "recording…";
}

async function transcribe(event) {
  event.preventDefault();
  clearError();
  const clip = $("hear-file").files[0] || recorded;
  if (!clip) {
    showError("Choose an audio file or record a clip first.");
    return;
  }
  const form = new FormData();
  form.append("file", clip);
  form.append("model", $("hear-model").value);
  $("hear-text").textContent = "…";
  try {
    const reply = await call(`/v1/audio/${$("hear-task").value}`, { method: "POST", body: form });
    $("hear-text").textContent = reply.text;
  } catch (error) {
    $("hear-text").textContent = "";
    showError(error);
  }
}

async function speak(event) {
  event.preventDefault();
  clearError();
  try {
    const body = {
      model: $("speak-model").value,
      input: $("speak-text").value,
      voice: $("speak-voice").value,
      response_format: $("speak-format").value,
    };
    const response = await call("/v1/audio/speech", { method: "POST", body, raw: true });
    const player = $("speak-audio");
    if (player.src) URL.revokeObjectURL(player.src);
    player.src = URL.createObjectURL(await response.blob());
    player.hidden = false;
  } catch (error) {
    showError(error);
  }
}

let editing = null; // {source: HTMLImageElement, painted: boolean}

async function generate(event) {
  event.preventDefault();
  clearError();
  const body = {
    model: $("draw-model").value,
    prompt: $("draw-prompt").value,
    size: $("draw-size").value,
    n: Number($("draw-n").value),
    response_format: "b64_json",
  };
  try {
    showPictures(await call("/v1/images/generations", { method: "POST", body }), body.prompt);
  } catch (error) {
    showError(error);
  }
}

function showPictures(reply, prompt) {
  const items = reply.data.map((picture, index) => {
    const item = element("li");
    const image = element("img");
    image.src = `data:image/png;base64,${picture.b64_json}`;
    image.alt = `${picture.revised_prompt || prompt} (${index + 1})`;
    const edit = actionButton("Edit this", `Edit picture ${index + 1}`, async () => startEdit(image));
    item.append(image, edit);
    return item;
  });
  $("pictures").replaceChildren(...items);
}

async function startEdit(image) {
  await image.decode();
  const canvas = $("edit-canvas");
  canvas.width = image.naturalWidth;
  canvas.height = image.naturalHeight;
  editing = { source: image, mask: document.createElement("canvas") };
  editing.mask.width = canvas.width;
  editing.mask.height = canvas.height;
  drawEditor();
  $("edit-form").hidden = false;
  canvas.scrollIntoView({ block: "nearest" });
}

function drawEditor() {
  const canvas = $("edit-canvas");
  const context = canvas.getContext("2d");
  context.drawImage(editing.source, 0, 0);
  context.globalAlpha = 0.55;
  context.drawImage(editing.mask, 0, 0);
  context.globalAlpha = 1;
}

function paint(event) {
  if (!editing || !(event.buttons & 1)) return;
  const canvas = $("edit-canvas");
  const box = canvas.getBoundingClientRect();
  const x = ((event.clientX - box.left) * canvas.width) / box.width;
  const y = ((event.clientY - box.top) * canvas.height) / box.height;
  const mask = editing.mask.getContext("2d");
  mask.fillStyle = "#ff2d55";
  mask.beginPath();
  mask.arc(x, y, canvas.width / 14, 0, 2 * Math.PI);
  mask.fill();
  drawEditor();
}

function clearMask() {
  if (!editing) return;
  editing.mask.getContext("2d").clearRect(0, 0, editing.mask.width, editing.mask.height);
  drawEditor();
}

function canvasBlob(canvas) {
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

async function submitEdit(event) {
  event.preventDefault();
  clearError();
  if (!editing) return;
  const { width, height } = editing.mask;
  // the image as it is, and a mask whose transparent pixels mark what to redraw (OpenAI's convention)
  const source = document.createElement("canvas");
  source.width = width;
  source.height = height;
  source.getContext("2d").drawImage(editing.source, 0, 0);
  const mask = document.createElement("canvas");
  mask.width = width;
  mask.height = height;
  const context = mask.getContext("2d");
  context.fillStyle = "#000";
  context.fillRect(0, 0, width, height);
  context.globalCompositeOperation = "destination-out";
  context.drawImage(editing.mask, 0, 0);
  const form = new FormData();
  form.append("image", await canvasBlob(source), "image.png");
  form.append("mask", await canvasBlob(mask), "mask.png");
  form.append("prompt", $("edit-prompt").value);
  form.append("model", $("draw-model").value);
  form.append("size", `${width}x${height}`);
  form.append("response_format", "b64_json");
  try {
    showPictures(await call("/v1/images/edits", { method: "POST", body: form }), $("edit-prompt").value);
    editing = null;
    $("edit-form").hidden = true; // the new pictures can be edited in turn
  } catch (error) {
    showError(error);
  }
}

// --- files -------------------------------------------------------------------------------------------------------

async function loadFiles() {
  const purpose = $("files-purpose").value;
  const query = new URLSearchParams({ limit: "10000" });
  if (purpose) query.set("purpose", purpose);
  const listed = await call(`/v1/files?${query}`);
  const rows = listed.data.map((file) => {
    const row = element("tr");
    row.dataset.fileId = file.id;
    const created = new Date(file.created_at * 1000).toLocaleString();
    for (const text of [file.filename, file.id, file.purpose, String(file.bytes), created]) row.append(element("td", text));
    const actions = element("td");
    actions.append(
      actionButton("Download", `Download ${file.filename}`, () => downloadFile(file)),
      actionButton("Delete", `Delete ${file.filename}`, () => deleteFile(file)),
    );
    row.append(actions);
    return row;
  });
  $("files-list").replaceChildren(...rows);
  $("files-empty").hidden = rows.length > 0;
}

function uploadFile(event) {
  event.preventDefault();
  clearError();
  const chosen = $("upload-file").files[0];
  if (!chosen) return;
  const form = uploadForm($("upload-purpose").value, chosen);
  const progress = $("upload-progress");
  progress.hidden = false;
  progress.value = 0;
  // XMLHttpRequest, not fetch: only it reports upload progress
  const request = new XMLHttpRequest();
  request.open("POST", "/v1/files");
  request.setRequestHeader("Authorization", `Bearer ${apiKey}`);
  request.upload.addEventListener("progress", (e) => {
    if (e.lengthComputable) progress.value = Math.round((100 * e.loaded) / e.total);
  });
  request.addEventListener("load", () => {
    if (request.status >= 200 && request.status < 300) {
      progress.value = 100;
      $("upload-form").reset();
      loadFiles().catch(showError);
    } else {
      let message = `${request.status} ${request.statusText}`;
      try {
        message = JSON.parse(request.responseText).error.message;
      } catch {
        // keep the status line
      }
      showError(message);
    }
  });
  request.addEventListener("error", () => showError("The upload failed: the server could not be reached."));
  request.send(form);
}

function actionButton(label, name, action) {
  const button = element("button", label);
  button.type = "button";
  button.setAttribute("aria-label", name);
  button.addEventListener("click", () => action().catch(showError));
  return button;
}

function uploadForm(purpose, file) {
  const form = new FormData();
  form.append("purpose", purpose);
  form.append("file", file);
  return form;
}

async function downloadFile(file) {
  const response = await call(`/v1/files/${encodeURIComponent(file.id)}/content`, { raw: true });
  const url = URL.createObjectURL(await response.blob());
  const link = element("a");
  link.href = url;
  link.download = file.filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function deleteFile(file) {
  await call(`/v1/files/${encodeURIComponent(file.id)}`, { method: "DELETE" });
  await loadFiles();
}

// --- vector stores -----------------------------------------------------------------------------------------------

async function refreshStores() {
  const listed = await call("/v1/vector_stores?limit=100");
  const rows = listed.data.map((store) => {
    const row = element("tr");
    const counts = store.file_counts;
    for (const text of [store.name || "(unnamed)", store.id, store.status, `${counts.completed} / ${counts.total}`, String(store.usage_bytes)]) {
      row.append(element("td", text));
    }
    const actions = element("td");
    actions.append(
      actionButton("Open", `Open ${store.name || store.id}`, async () => showStore(store)),
      actionButton("Delete", `Delete ${store.name || store.id}`, async () => {
        await call(`/v1/vector_stores/${store.id}`, { method: "DELETE" });
        if (openStore && openStore.id === store.id) closeStore();
        await refreshStores();
      }),
    );
    row.append(actions);
    return row;
  });
  $("stores-list").replaceChildren(...rows);
  if (openStore) await refreshStoreFiles();
}

function closeStore() {
  openStore = null;
  $("store-detail").hidden = true;
}

async function showStore(store) {
  openStore = store;
  $("store-title").textContent = `Store ${store.name || store.id}`;
  $("store-detail").hidden = false;
  $("search-results").replaceChildren();
  await refreshStoreFiles();
}

async function refreshStoreFiles() {
  const store = openStore;
  const listed = await call(`/v1/vector_stores/${store.id}/files?limit=100`);
  const names = new Map();
  await Promise.all(
    listed.data.map(async (entry) => {
      try {
        names.set(entry.id, (await call(`/v1/files/${entry.id}`)).filename);
      } catch {
        names.set(entry.id, entry.id); // the file itself was deleted: the store keeps its chunks
      }
    }),
  );
  if (openStore !== store) return;
  const rows = listed.data.map((entry) => {
    const row = element("tr");
    const error = entry.last_error ? `${entry.last_error.code}: ${entry.last_error.message}` : "";
    for (const text of [names.get(entry.id), entry.status, String(entry.usage_bytes), error]) row.append(element("td", text));
    return row;
  });
  $("store-files").replaceChildren(...rows);
}

async function createStore(event) {
  event.preventDefault();
  clearError();
  try {
    const store = await call("/v1/vector_stores", { method: "POST", body: { name: $("store-name").value } });
    $("store-form").reset();
    await refreshStores();
    await showStore(store);
  } catch (error) {
    showError(error);
  }
}

async function addStoreFile(event) {
  event.preventDefault();
  clearError();
  const chosen = $("store-file").files[0];
  if (!chosen || !openStore) return;
  try {
    const uploaded = await call("/v1/files", { method: "POST", body: uploadForm("assistants", chosen) });
    await call(`/v1/vector_stores/${openStore.id}/files`, { method: "POST", body: { file_id: uploaded.id } });
    $("store-file-form").reset();
    await refreshStores();
  } catch (error) {
    showError(error);
  }
}

async function searchStore(event) {
  event.preventDefault();
  clearError();
  try {
    const found = await call(`/v1/vector_stores/${openStore.id}/search`, {
      method: "POST",
      body: { query: $("search-query").value, max_num_results: 5 },
    });
    const items = found.data.map((hit) => {
      const item = element("li", undefined, "hit");
      const text = hit.content.map((part) => part.text).join("\n");
      item.append(element("div", `${hit.filename} · score ${hit.score.toFixed(3)}`, "hit-source"), element("div", text, "hit-text"));
      return item;
    });
    if (!items.length) items.push(element("li", "Nothing found."));
    $("search-results").replaceChildren(...items);
  } catch (error) {
    showError(error);
  }
}

// --- batches -----------------------------------------------------------------------------------------------------

async function openBatches() {
  const files = await call("/v1/files?purpose=batch&limit=10000");
  const select = $("batch-file");
  const chosen = select.value;
  select.replaceChildren(...files.data.map((file) => new Option(`${file.filename} (${file.id})`, file.id)));
  if (chosen) select.value = chosen;
  await refreshBatches();
}

async function refreshBatches() {
  const listed = await call("/v1/batches?limit=100");
  const rows = listed.data.map((batch) => {
    const row = element("tr");
    row.append(element("td", batch.id), element("td", batch.status));
    const counts = batch.request_counts || { total: 0, completed: 0, failed: 0 };
    const bar = element("progress");
    bar.max = Math.max(1, counts.total);
    bar.value = counts.completed + counts.failed;
    bar.setAttribute("aria-label", `Progress of ${batch.id}`);
    const progress = element("td");
    progress.append(bar);
    row.append(progress, element("td", `${counts.completed} / ${counts.failed} / ${counts.total}`));
    const actions = element("td");
    if (batch.output_file_id) {
      actions.append(actionButton("Output", `Download the output of ${batch.id}`, () => downloadFile({ id: batch.output_file_id, filename: `${batch.id}-output.jsonl` })));
    }
    if (batch.error_file_id) {
      actions.append(actionButton("Errors", `Download the errors of ${batch.id}`, () => downloadFile({ id: batch.error_file_id, filename: `${batch.id}-errors.jsonl` })));
    }
    if (["validating", "in_progress", "finalizing"].includes(batch.status)) {
      actions.append(actionButton("Cancel", `Cancel ${batch.id}`, async () => {
        await call(`/v1/batches/${batch.id}/cancel`, { method: "POST" });
        await refreshBatches();
      }));
    }
    row.append(actions);
    return row;
  });
  $("batches-list").replaceChildren(...rows);
}

async function createBatch(event) {
  event.preventDefault();
  clearError();
  try {
    const body = { input_file_id: $("batch-file").value, endpoint: $("batch-endpoint").value, completion_window: "24h" };
    await call("/v1/batches", { method: "POST", body });
    await refreshBatches();
  } catch (error) {
    showError(error);
  }
}

// --- assistants --------------------------------------------------------------------------------------------------

async function openAssistants() {
  const select = $("assistant-model");
  if (!select.options.length) for (const id of await modelIds()) select.append(new Option(id, id));
  await refreshAssistants();
}

async function refreshAssistants() {
  const listed = await call("/v1/assistants?limit=100");
  const rows = listed.data.map((assistant) => {
    const row = element("tr");
    const tools = assistant.tools.map((tool) => (tool.type === "function" ? tool.function.name : tool.type)).join(", ");
    for (const text of [assistant.name || "(unnamed)", assistant.id, assistant.model, tools]) row.append(element("td", text));
    const actions = element("td");
    const label = assistant.name || assistant.id;
    actions.append(
      actionButton("Open", `Open ${label}`, async () => showAssistant(assistant)),
      actionButton("Delete", `Delete ${label}`, async () => {
        await call(`/v1/assistants/${assistant.id}`, { method: "DELETE" });
        if (openAssistant && openAssistant.id === assistant.id) newAssistant();
        await refreshAssistants();
      }),
    );
    row.append(actions);
    return row;
  });
  $("assistants-list").replaceChildren(...rows);
}

function newAssistant() {
  openAssistant = null;
  $("assistant-form").reset();
  $("assistant-id").value = "";
  $("assistant-form-title").textContent = "New assistant";
  $("assistant-save").textContent = "Create assistant";
  $("thread-panel").hidden = true;
}

async function showAssistant(assistant) {
  openAssistant = assistant;
  $("assistant-id").value = assistant.id;
  $("assistant-name").value = assistant.name || "";
  const select = $("assistant-model");
  if (![...select.options].some((option) => option.value === assistant.model)) select.append(new Option(assistant.model, assistant.model));
  select.value = assistant.model;
  $("assistant-instructions").value = assistant.instructions || "";
  $("assistant-file-search").checked = assistant.tools.some((tool) => tool.type === "file_search");
  $("assistant-code").checked = assistant.tools.some((tool) => tool.type === "code_interpreter");
  const functions = assistant.tools.filter((tool) => tool.type === "function");
  $("assistant-functions").value = functions.length ? JSON.stringify(functions, null, 2) : "";
  $("assistant-form-title").textContent = `Edit ${assistant.name || assistant.id}`;
  $("assistant-save").textContent = "Save assistant";
  $("thread-title").textContent = `Threads with ${assistant.name || assistant.id}`;
  $("thread-panel").hidden = false;
}

async function saveAssistant(event) {
  event.preventDefault();
  clearError();
  try {
    const tools = [];
    if ($("assistant-file-search").checked) tools.push({ type: "file_search" });
    if ($("assistant-code").checked) tools.push({ type: "code_interpreter" });
    const functions = $("assistant-functions").value.trim();
    if (functions) {
      try {
        tools.push(...JSON.parse(functions));
      } catch (error) {
        throw new Error(`Function tools are not valid JSON: ${error.message}`);
      }
    }
    const body = {
      name: $("assistant-name").value || null,
      model: $("assistant-model").value,
      instructions: $("assistant-instructions").value || null,
      tools,
    };
    const id = $("assistant-id").value;
    const saved = await call(id ? `/v1/assistants/${id}` : "/v1/assistants", { method: "POST", body });
    await refreshAssistants();
    await showAssistant(saved);
  } catch (error) {
    showError(error);
  }
}

async function newThread() {
  clearError();
  const thread = await call("/v1/threads", { method: "POST", body: {} });
  await showThread(thread.id);
}

async function showThread(id) {
  openThread = id;
  $("thread-title").textContent = `Thread ${id}`;
  $("thread-open-id").value = id;
  $("run-steps").replaceChildren();
  $("run-state").textContent = "";
  $("tool-outputs").hidden = true;
  await refreshMessages();
}

function messageParts(message) {
  // the text with each citation marked [n], and the cited files in that order
  const lines = [];
  const cited = [];
  const numbers = new Map(); // a marker cited twice keeps its first number
  for (const part of message.content) {
    if (part.type !== "text") {
      lines.push(`[${part.type}]`);
      continue;
    }
    let text = part.text.value;
    for (const annotation of part.text.annotations || []) {
      const source = annotation.file_citation || annotation.file_path;
      if (!source || (annotation.text && numbers.has(annotation.text))) continue;
      cited.push({ fileId: source.file_id, kind: annotation.type === "file_path" ? "file made by the run" : "cited file" });
      if (annotation.text) {
        numbers.set(annotation.text, cited.length);
        text = text.split(annotation.text).join(`[${cited.length}]`);
      }
    }
    lines.push(text);
  }
  return { text: lines.join("\n"), cited };
}

async function downloadById(fileId) {
  const file = await call(`/v1/files/${encodeURIComponent(fileId)}`);
  await downloadFile(file);
}

async function refreshMessages() {
  const listed = await call(`/v1/threads/${openThread}/messages?order=asc&limit=100`);
  const items = listed.data.map((message) => {
    const item = element("li", undefined, `message ${message.role}`);
    const { text, cited } = messageParts(message);
    item.append(element("span", message.role, "role"), element("div", text, "content"));
    if (cited.length) {
      // each citation links to its file: a click downloads it
      const sources = element("ol", undefined, "citations");
      sources.setAttribute("aria-label", "Sources");
      cited.forEach((source, index) => {
        const entry = element("li");
        entry.append(actionButton(`[${index + 1}] ${source.fileId}`, `Download ${source.kind} ${index + 1} (${source.fileId})`, () => downloadById(source.fileId)));
        sources.append(entry);
      });
      item.append(sources);
    }
    return item;
  });
  $("thread-messages").replaceChildren(...items);
}

async function sendToThread(event) {
  event.preventDefault();
  clearError();
  const text = $("thread-input").value;
  try {
    if (!openThread) await newThread();
    if (text.trim()) {
      await call(`/v1/threads/${openThread}/messages`, { method: "POST", body: { role: "user", content: text } });
      $("thread-input").value = "";
      await refreshMessages();
    }
    const body = { assistant_id: openAssistant.id, stream: true, tool_choice: $("run-tool-choice").value };
    const budget = $("run-max-tokens").value;
    if (budget) body.max_completion_tokens = Number(budget);
    const response = await call(`/v1/threads/${openThread}/runs`, { method: "POST", body, raw: true });
    await followRun(response);
  } catch (error) {
    showError(error);
  }
}

async function followRun(response) {
  $("thread-run").disabled = true;
  const item = element("li", undefined, "message assistant");
  const shown = element("div", "", "content");
  item.append(element("span", "assistant", "role"), shown);
  $("thread-messages").append(item);
  let text = "";
  const calls = new Map(); // a step's tool calls by index, as they stream
  let run = null;
  try {
    for await (const { event, data } of serverSentEvents(response)) {
      if (event === "error") throw new Error((data.error && data.error.message) || data.message || "The run's stream failed.");
      if (event.startsWith("thread.run.") && !event.startsWith("thread.run.step")) {
        run = data;
        $("run-state").textContent = `run ${data.id}: ${data.status}`;
      }
      if (event === "thread.message.delta") {
        for (const part of data.delta.content || []) if (part.type === "text" && part.text.value) text += part.text.value;
      }
      if (event === "thread.run.step.delta") {
        const details = data.delta.step_details;
        for (const call of (details && details.tool_calls) || []) {
          const known = calls.get(call.index) || { type: call.type, text: "" };
          if (call.code_interpreter) {
            known.text += call.code_interpreter.input || "";
            for (const output of call.code_interpreter.outputs || []) known.text += output.logs ? `\n→ ${output.logs}` : `\n→ [${output.type}]`;
          }
          if (call.function) known.text += `${call.function.name || ""}${call.function.arguments || ""}`;
          if (call.type === "file_search") known.text = "file_search";
          calls.set(call.index, known);
        }
      }
      const toolText = [...calls.values()].map((c) => `${c.type}: ${c.text}`).join("\n");
      shown.textContent = [toolText, text].filter(Boolean).join("\n");
    }
  } finally {
    $("thread-run").disabled = false;
  }
  if (!run) return;
  await refreshMessages();
  await showSteps(run.id);
  if (run.status === "requires_action") askForOutputs(run);
  else if (run.status !== "completed" && run.last_error) showError(`The run ${run.status}: ${run.last_error.message}`);
}

function askForOutputs(run) {
  const fields = run.required_action.submit_tool_outputs.tool_calls.map((call) => {
    const wrap = element("div");
    const id = `output-${call.id}`;
    const label = element("label", `Output of ${call.function.name}(${call.function.arguments})`);
    label.htmlFor = id;
    const input = element("textarea");
    input.id = id;
    input.rows = 2;
    input.dataset.callId = call.id;
    wrap.append(label, input);
    return wrap;
  });
  $("tool-output-fields").replaceChildren(...fields);
  const form = $("tool-outputs");
  form.dataset.runId = run.id;
  form.hidden = false;
}

async function submitOutputs(event) {
  event.preventDefault();
  clearError();
  const form = $("tool-outputs");
  const tool_outputs = [...form.querySelectorAll("textarea")].map((input) => ({ tool_call_id: input.dataset.callId, output: input.value }));
  form.hidden = true;
  let response;
  try {
    response = await call(`/v1/threads/${openThread}/runs/${form.dataset.runId}/submit_tool_outputs`, {
      method: "POST",
      body: { tool_outputs, stream: true },
      raw: true,
    });
  } catch (error) {
    form.hidden = false; // refused: the outputs are still there to send again
    showError(error);
    return;
  }
  try {
    await followRun(response);
  } catch (error) {
    showError(error);
  }
}

async function showSteps(runId) {
  const listed = await call(`/v1/threads/${openThread}/runs/${runId}/steps?order=asc&limit=100`);
  const items = listed.data.map((step) => {
    let detail = "";
    if (step.step_details.type === "tool_calls") {
      detail = step.step_details.tool_calls
        .map((call) => (call.type === "function" ? `${call.function.name}(${call.function.arguments}) → ${call.function.output ?? "…"}` : call.type))
        .join("; ");
    } else if (step.step_details.message_creation) {
      detail = `message ${step.step_details.message_creation.message_id}`;
    }
    return element("li", `${step.type} · ${step.status}${detail ? ` · ${detail}` : ""}`);
  });
  $("run-steps").replaceChildren(...items);
}

// --- fine-tuning -------------------------------------------------------------------------------------------------

async function refreshJobs() {
  const listed = await call("/v1/fine_tuning/jobs?limit=100");
  const rows = listed.data.map((job) => {
    const row = element("tr");
    for (const text of [job.id, job.model, job.status, job.trained_tokens == null ? "" : String(job.trained_tokens), job.fine_tuned_model || ""]) {
      row.append(element("td", text));
    }
    const actions = element("td");
    actions.append(actionButton("Open", `Open ${job.id}`, async () => showJob(job.id)));
    row.append(actions);
    return row;
  });
  $("jobs-list").replaceChildren(...rows);
  $("jobs-empty").hidden = rows.length > 0;
  if (openJob) await refreshJob();
}

async function showJob(id) {
  openJob = id;
  settledJob = null; // opened again: read it once more
  $("job-detail").hidden = false;
  $("job-events").replaceChildren();
  $("loss-curve").replaceChildren();
  await refreshJob();
}

async function allEvents(id) {
  // newest first, 100 a page: read back to the first (a long job has one metrics event per step)
  const events = [];
  let after = null;
  for (let page = 0; page < 100; page++) {
    const query = new URLSearchParams({ limit: "100" });
    if (after) query.set("after", after);
    const listed = await call(`/v1/fine_tuning/jobs/${id}/events?${query}`);
    events.push(...listed.data);
    if (!listed.has_more || !listed.data.length) break;
    after = listed.data[listed.data.length - 1].id;
  }
  return events;
}

let settledJob = null; // a job drawn after it ended: nothing more will change

async function refreshJob() {
  const id = openJob;
  if (settledJob === id) return;
  // the job first: its last events are saved with its final status, so events read after it include them
  const job = await call(`/v1/fine_tuning/jobs/${id}`);
  const [events, checkpoints] = await Promise.all([allEvents(id), call(`/v1/fine_tuning/jobs/${id}/checkpoints?limit=100`)]);
  if (openJob !== id) return;
  if (["succeeded", "failed", "cancelled"].includes(job.status)) settledJob = id;
  $("job-title").textContent = `Job ${job.id}`;
  const parts = [`${job.status}`, `base ${job.model}`];
  if (job.fine_tuned_model) parts.push(`model ${job.fine_tuned_model}`);
  if (job.error && job.error.message) parts.push(`error: ${job.error.message}`);
  $("job-status").textContent = parts.join(" · ");
  const tryButton = $("job-try");
  tryButton.hidden = !job.fine_tuned_model;
  tryButton.onclick = () => {
    location.hash = "#playground";
    openPlayground(job.fine_tuned_model).catch(showError);
  };
  const metrics = events.filter((event) => event.type === "metrics" && event.data).map((event) => event.data);
  drawCurve(metrics.sort((a, b) => a.step - b.step));
  $("job-checkpoints").replaceChildren(
    ...checkpoints.data.map((checkpoint) => element("li", `step ${checkpoint.step_number}: ${checkpoint.fine_tuned_model_checkpoint}`)),
  );
  $("job-events").replaceChildren(
    ...events.filter((event) => event.type !== "metrics").map((event) => {
      const when = new Date(event.created_at * 1000).toLocaleTimeString();
      return element("li", `${when} [${event.level}] ${event.message}`);
    }),
  );
}

function drawCurve(points) {
  const svg = $("loss-curve");
  const NS = "http://www.w3.org/2000/svg";
  const width = 640, height = 260, left = 48, bottom = 28, top = 12, right = 12;
  const series = [
    ["train_loss", "train-line"],
    ["valid_loss", "valid-line"],
  ].map(([key, className]) => ({ className, points: points.filter((p) => typeof p[key] === "number").map((p) => [p.step, p[key]]) }));
  const all = series.flatMap((s) => s.points);
  svg.replaceChildren();
  if (!all.length) {
    const empty = document.createElementNS(NS, "text");
    empty.setAttribute("x", "50%");
    empty.setAttribute("y", "50%");
    empty.setAttribute("text-anchor", "middle");
    empty.textContent = "No steps yet";
    svg.append(empty);
    return;
  }
  const maxStep = Math.max(...all.map((p) => p[0]), 1);
  const maxLoss = Math.max(...all.map((p) => p[1])) * 1.05 || 1;
  const x = (step) => left + ((width - left - right) * step) / maxStep;
  const y = (loss) => top + (height - top - bottom) * (1 - loss / maxLoss);
  const axis = document.createElementNS(NS, "path");
  axis.setAttribute("d", `M${left},${top} V${height - bottom} H${width - right}`);
  axis.setAttribute("class", "axis");
  svg.append(axis);
  for (const [text, px, py, anchor] of [
    [maxLoss.toFixed(2), left - 6, top + 10, "end"],
    ["0", left - 6, height - bottom, "end"],
    [`step ${maxStep}`, width - right, height - 8, "end"],
  ]) {
    const label = document.createElementNS(NS, "text");
    label.setAttribute("x", px);
    label.setAttribute("y", py);
    label.setAttribute("text-anchor", anchor);
    label.setAttribute("class", "tick");
    label.textContent = text;
    svg.append(label);
  }
  for (const line of series) {
    if (!line.points.length) continue;
    const path = document.createElementNS(NS, "path");
    path.setAttribute("d", line.points.map(([step, loss], i) => `${i ? "L" : "M"}${x(step).toFixed(1)},${y(loss).toFixed(1)}`).join(" "));
    path.setAttribute("class", line.className);
    path.dataset.points = String(line.points.length);
    svg.append(path);
  }
}

// --- server ------------------------------------------------------------------------------------------------------

function parseMetrics(text) {
  // name{label="v",...} value  ->  [{name, labels, value}]
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = line.match(/^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)/);
    if (!match) continue;
    const labels = {};
    for (const pair of (match[3] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]] = pair[2];
    samples.push({ name: match[1], labels, value: Number(match[4]) });
  }
  return samples;
}

async function openServer() {
  hideNewKey();
  lastTokens = null; // speeds are measured between two refreshes of this visit
  await Promise.all([refreshServer(), refreshKeys()]);
}

function hideNewKey() {
  $("new-key").hidden = true;
  $("new-key-value").textContent = "";
}

let projectId = null;

async function refreshKeys() {
  let projects;
  try {
    projects = await call("/v1/organization/projects");
  } catch (error) {
    $("keys-panel").hidden = true;
    $("keys-note").textContent = error.message; // a server without keys: say how to make the first
    return;
  }
  projectId = projects.data[0].id;
  let listed;
  try {
    listed = await call(`/v1/organization/projects/${projectId}/api_keys`);
  } catch (error) {
    $("keys-panel").hidden = true; // a plain key: say how to get one that manages keys
    $("keys-note").textContent = `Project ${projects.data[0].name} (${projectId}). ${error.message}`;
    return;
  }
  $("keys-note").textContent = `Project ${projects.data[0].name} (${projectId}).`;
  const rows = listed.data.map((key) => {
    const row = element("tr");
    for (const text of [key.id, key.redacted_value, new Date(key.created_at * 1000).toLocaleString()]) row.append(element("td", text));
    const actions = element("td");
    actions.append(
      actionButton("Revoke", `Revoke ${key.redacted_value}`, async () => {
        await call(`/v1/organization/projects/${projectId}/api_keys/${key.id}`, { method: "DELETE" });
        hideNewKey();
        await refreshKeys();
      }),
    );
    row.append(actions);
    return row;
  });
  $("keys-list").replaceChildren(...rows);
  $("keys-panel").hidden = false;
}

async function createKey() {
  clearError();
  const created = await call(`/v1/organization/projects/${projectId}/api_keys`, { method: "POST" });
  $("new-key-value").textContent = created.value;
  $("new-key").hidden = false;
  await refreshKeys();
}

async function refreshServer() {
  const health = await fetch("/health").then((r) => r.json());
  let samples = [];
  const note = $("metrics-note");
  const response = await fetch("/metrics");
  if (response.ok) {
    samples = parseMetrics(await response.text());
    note.textContent = "";
  } else {
    note.textContent = "Slots, queues and speed need /metrics, which this server keeps behind its metrics token.";
  }
  const value = (name, model, kind) => {
    const found = samples.filter((s) => s.name === name && s.labels.model === model && (!kind || s.labels.kind === kind));
    return found.length ? found.reduce((sum, s) => sum + s.value, 0) : null;
  };
  const now = performance.now();
  const tokens = new Map();
  for (const model of health.models || []) tokens.set(model.id, value("oasis_tokens_total", model.id, "completion"));
  const rows = (health.models || []).map((model) => {
    const busy = value("oasis_engine_busy_slots", model.id);
    const slots = value("oasis_engine_slots", model.id);
    const queued = value("oasis_engine_queue_depth", model.id);
    let speed = "";
    const before = lastTokens && lastTokens.counts.get(model.id);
    const after = tokens.get(model.id);
    if (before != null && after != null && after >= before) speed = ((after - before) / ((now - lastTokens.at) / 1000)).toFixed(1);
    const row = element("tr");
    const state = model.error ? `${model.state}: ${model.error}` : model.state;
    for (const text of [model.id, model.engine, state, slots === null ? "" : `${busy} / ${slots}`, queued === null ? "" : String(queued), speed]) {
      row.append(element("td", text));
    }
    return row;
  });
  lastTokens = { at: now, counts: tokens };
  $("models-list").replaceChildren(...rows);
}

// --- wiring ------------------------------------------------------------------------------------------------------

$("sign-in-form").addEventListener("submit", signIn);
$("sign-out").addEventListener("click", signOut);
$("chat-form").addEventListener("submit", sendChat);
$("chat-clear").addEventListener("click", clearChat);
$("chat-input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("chat-form").requestSubmit();
});
$("upload-form").addEventListener("submit", uploadFile);
for (const tab of document.querySelectorAll('[role="tab"]')) {
  tab.addEventListener("click", () => selectTab(tab));
  tab.addEventListener("keydown", tabKeys);
}
$("record").addEventListener("click", () => toggleRecording().catch(showError));
$("hear-form").addEventListener("submit", transcribe);
$("speak-form").addEventListener("submit", speak);
$("draw-form").addEventListener("submit", generate);
$("edit-canvas").addEventListener("pointerdown", paint);
$("edit-canvas").addEventListener("pointermove", paint);
$("edit-clear").addEventListener("click", clearMask);
$("edit-form").addEventListener("submit", submitEdit);
$("key-create").addEventListener("click", () => createKey().catch(showError));
$("files-purpose").addEventListener("change", () => loadFiles().catch(showError));
$("store-form").addEventListener("submit", createStore);
$("store-file-form").addEventListener("submit", addStoreFile);
$("search-form").addEventListener("submit", searchStore);
$("batch-form").addEventListener("submit", createBatch);
$("assistant-form").addEventListener("submit", saveAssistant);
$("assistant-new").addEventListener("click", newAssistant);
$("thread-new").addEventListener("click", () => newThread().catch(showError));
$("thread-open").addEventListener("click", () => showThread($("thread-open-id").value.trim()).catch(showError));
$("thread-form").addEventListener("submit", sendToThread);
$("tool-outputs").addEventListener("submit", submitOutputs);
window.addEventListener("hashchange", () => {
  clearError();
  route();
});
route();
