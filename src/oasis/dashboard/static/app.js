// oasis's dashboard: a client of the public API (/v1, plus /health and /metrics), like any other program.
// Plain modules, no build step: what is here is what the browser runs.

const KEY_STORAGE = "oasis-api-key";
const PAGES = ["playground", "files", "server"];
const TEXT_ENGINES = new Set(["llamacpp", "upstream"]);

const $ = (id) => document.getElementById(id);
let apiKey = sessionStorage.getItem(KEY_STORAGE);
let conversation = [];
let serverTimer = null;
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

function route() {
  clearInterval(serverTimer);
  serverTimer = null;
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
  const opened = { playground: openPlayground, files: loadFiles, server: openServer }[page];
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
    const download = element("button", "Download");
    download.type = "button";
    download.setAttribute("aria-label", `Download ${file.filename}`);
    download.addEventListener("click", () => downloadFile(file).catch(showError));
    const remove = element("button", "Delete");
    remove.type = "button";
    remove.setAttribute("aria-label", `Delete ${file.filename}`);
    remove.addEventListener("click", () => deleteFile(file).catch(showError));
    actions.append(download, remove);
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
  const form = new FormData();
  form.append("purpose", $("upload-purpose").value);
  form.append("file", chosen);
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
  serverTimer = setInterval(() => refreshServer().catch(showError), 2000);
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
window.addEventListener("hashchange", () => {
  clearError();
  route();
});
route();
