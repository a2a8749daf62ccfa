// oasis's dashboard: a client of the public API (/v1, plus /health and /metrics), like any other program.
// Plain modules, no build step: what is here is what the browser runs.

const KEY_STORAGE = "oasis-api-key";
const PAGES = ["playground", "files", "vector-stores", "batches", "server"];
const TEXT_ENGINES = new Set(["llamacpp", "upstream"]);

const $ = (id) => document.getElementById(id);
let apiKey = sessionStorage.getItem(KEY_STORAGE);
let conversation = [];
let pageTimer = null; // the open page's refresh, stopped when another page opens
let openStore = null;
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

async function call(path, { method = "GET", body, key = apiKey, raw = false } = {}) {
  const headers = { Authorization: `Bearer ${key}` };
  let payload = body;
  if (body !== undefined && !(body instanceof FormData)) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const response = await fetch(path, { method, headers, body: payload });
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

function every(milliseconds, refresh) {
  pageTimer = setInterval(() => refresh().catch(showError), milliseconds);
}

function route() {
  clearInterval(pageTimer);
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
  const opened = {
    playground: openPlayground,
    files: loadFiles,
    "vector-stores": openStores,
    batches: openBatches,
    server: openServer,
  }[page];
  if (opened) opened().catch(showError);
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
  apiKey = null;
  sessionStorage.removeItem(KEY_STORAGE);
  conversation = [];
  $("chat-log").replaceChildren();
  location.hash = "";
  route();
}

// --- playground --------------------------------------------------------------------------------------------------

async function openPlayground() {
  const select = $("chat-model");
  if (select.options.length) return;
  const [models, health] = await Promise.all([call("/v1/models"), fetch("/health").then((r) => r.json())]);
  const engines = new Map((health.models || []).map((model) => [model.id, model.engine]));
  const ids = models.data.map((model) => model.id);
  // text models first (a fine-tune is one); other ids may be aliases of anything, so they stay, after them
  const isText = (id) => TEXT_ENGINES.has(engines.get(id)) || id.startsWith("ft:");
  const known = (id) => engines.has(id) || id.startsWith("ft:");
  const ordered = [...ids.filter(isText), ...ids.filter((id) => !known(id)), ...ids.filter((id) => known(id) && !isText(id))];
  for (const id of ordered) select.append(new Option(id, id));
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
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trim())
        .join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

async function sendChat(event) {
  event.preventDefault();
  clearError();
  const text = $("chat-input").value;
  if (!text.trim()) return;
  let request;
  try {
    conversation.push({ role: "user", content: text });
    request = chatRequest();
  } catch (error) {
    conversation.pop();
    showError(error);
    return;
  }
  addMessage("user", text);
  $("chat-input").value = "";
  $("chat-send").disabled = true;
  const shown = addMessage("assistant", "");
  shown.setAttribute("aria-busy", "true");
  const started = performance.now();
  let firstToken = null;
  let content = "";
  const calls = [];
  let usage = null;
  try {
    const response = await call("/v1/chat/completions", { method: "POST", body: request, raw: true });
    for await (const chunk of serverSentEvents(response)) {
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) usage = chunk.usage;
      const delta = chunk.choices && chunk.choices[0] ? chunk.choices[0].delta : null;
      if (!delta) continue;
      if ((delta.content || delta.tool_calls) && firstToken === null) firstToken = performance.now();
      if (delta.content) content += delta.content;
      for (const part of delta.tool_calls || []) {
        const known = calls[part.index] || (calls[part.index] = { id: part.id, type: "function", function: { name: "", arguments: "" } });
        if (part.function && part.function.name) known.function.name += part.function.name;
        if (part.function && part.function.arguments) known.function.arguments += part.function.arguments;
      }
      const callText = calls.map((c) => `${c.function.name}(${c.function.arguments})`).join("\n");
      shown.textContent = [content, callText].filter(Boolean).join("\n");
    }
    const message = { role: "assistant", content: content || null };
    if (calls.length) message.tool_calls = calls;
    conversation.push(message);
    const ended = performance.now();
    if (firstToken !== null) {
      const tokens = usage ? usage.completion_tokens : null;
      const seconds = (ended - firstToken) / 1000;
      const speed = tokens && seconds > 0 ? `${(tokens / seconds).toFixed(1)} tokens/s` : "";
      $("chat-stats").textContent = [`first token ${Math.round(firstToken - started)} ms`, speed].filter(Boolean).join(" · ");
    }
  } catch (error) {
    conversation.pop();
    shown.closest("li").remove();
    showError(error);
  } finally {
    shown.removeAttribute("aria-busy");
    $("chat-send").disabled = false;
  }
}

function clearChat() {
  conversation = [];
  $("chat-log").replaceChildren();
  $("chat-stats").textContent = "";
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

async function openStores() {
  await refreshStores();
  every(1000, refreshStores);
}

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
  every(1000, refreshBatches);
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
  await refreshServer();
  every(2000, refreshServer);
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
    if (before != null && after != null) speed = ((after - before) / ((now - lastTokens.at) / 1000)).toFixed(1);
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
$("files-purpose").addEventListener("change", () => loadFiles().catch(showError));
$("store-form").addEventListener("submit", createStore);
$("store-file-form").addEventListener("submit", addStoreFile);
$("search-form").addEventListener("submit", searchStore);
$("batch-form").addEventListener("submit", createBatch);
window.addEventListener("hashchange", () => {
  clearError();
  route();
});
route();
