// The demo chat page: wires tokenwire.js to the DOM. Plain ES modules, no framework, no build.
//
// - Answers are Markdown, rendered with marked and sanitized with DOMPurify (vendored in
//   ./vendor/): HTML in a model's output never runs.
// - Reasoning shows as a collapsible "Thinking" block, tool calls as cards (name, arguments).
// - The conversation is kept in localStorage and restored on reload; each request sends as much
//   of it as fits the model's context (GET /v1/models reports context_window), oldest turns
//   dropped first, and the page says so.
// - With authentication on, a 401 asks for an API key (kept in sessionStorage, for this tab
//   only); tokenwire.js exchanges it for short-lived signed tokens for EventSource/WebSocket.
import { TokenwireClient } from "./tokenwire.js";
import { marked } from "./vendor/marked.esm.js";
import DOMPurify from "./vendor/purify.es.mjs";

const MAX_TOKENS = 256;
const HISTORY_KEY = "tokenwire.history";
const API_KEY = "tokenwire.apiKey";
const RESUME = "\uE000"; // where a stream was resumed: a private-use marker in the rendered text
const $ = (id) => document.getElementById(id);

const ui = {
  conversation: $("conversation"),
  empty: $("empty"),
  composer: $("composer"),
  prompt: $("prompt"),
  send: $("send"),
  stop: $("stop"),
  drop: $("drop"),
  status: $("status"),
  ttft: $("stat-ttft"),
  tps: $("stat-tps"),
  tokens: $("stat-tokens"),
  reconnects: $("stat-reconnects"),
  model: $("model"),
  historySize: $("history-size"),
  auth: $("auth"),
  authForm: $("auth-form"),
  authKey: $("api-key"),
  authError: $("auth-error"),
};

// turns: what the page shows and stores. {role: "user", content, excluded?} and
// {role: "assistant", content, reasoning, toolCalls, error, tags, trimmed}; a turn pair whose
// reply failed with no text is `excluded` from what is sent (ask again, or press Retry).
let turns = loadHistory();
let current = null; // the stream being received
let contextWindow = null; // tokens, when the server reports it
const demo = {
  stream: null,
  state: "idle",
  get history() { return messages(); }, // what the next request would send (before trimming)
  get turns() { return turns; },
  get contextWindow() { return contextWindow; },
};
window.tokenwireDemo = demo; // for tests and the curious

// -- Markdown -------------------------------------------------------------------------------
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.getAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

/** Render Markdown into `element`, sanitized; code blocks get a copy button, resume markers
 * become `.resume-mark` spans (drawn by CSS, no text of their own). */
function renderMarkdown(element, text, resumes = []) {
  const html = marked.parse(text, { gfm: true, breaks: true, async: false });
  element.innerHTML = DOMPurify.sanitize(html.trim());
  for (const pre of element.querySelectorAll("pre")) {
    const button = iconButton("copy-code", "Copy code", COPY_ICON);
    button.addEventListener("click", () => copy(pre.querySelector("code")?.textContent ?? pre.textContent, button));
    const wrap = document.createElement("div");
    wrap.className = "code-block";
    pre.replaceWith(wrap);
    wrap.append(pre, button);
  }
  if (resumes.length) placeResumeMarks(element, resumes);
}

function placeResumeMarks(element, resumes) {
  const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
  const nodes = [];
  while (walker.nextNode()) if (walker.currentNode.data.includes(RESUME)) nodes.push(walker.currentNode);
  let next = 0;
  for (const node of nodes) {
    const parts = node.data.split(RESUME);
    const out = [document.createTextNode(parts[0])];
    for (const part of parts.slice(1)) {
      const seq = resumes[next++] ?? "?";
      const mark = document.createElement("span");
      mark.className = "resume-mark";
      mark.dataset.seq = seq;
      mark.title = `connection resumed after event #${seq}: nothing lost, nothing repeated`;
      out.push(mark, document.createTextNode(part));
    }
    node.replaceWith(...out);
  }
}

// -- storage --------------------------------------------------------------------------------
function loadHistory() {
  try {
    const stored = JSON.parse(localStorage.getItem(HISTORY_KEY) ?? "[]");
    return Array.isArray(stored) ? stored.filter((t) => t && typeof t.content === "string") : [];
  } catch {
    return [];
  }
}

function saveHistory() {
  try {
    localStorage.setItem(HISTORY_KEY, JSON.stringify(turns));
  } catch {
    // storage full or denied: the conversation still works, it just won't survive a reload
  }
}

function messages() {
  return turns
    .filter((turn) => !turn.excluded && turn.content)
    .map(({ role, content }) => ({ role, content }));
}

// -- context: what fits -----------------------------------------------------------------------
// A cautious estimate (about 3 characters per token, plus the chat template's few tokens per
// message): the server's tokenizer is not available here, so err on the side of dropping.
const estimate = (message) => Math.ceil(message.content.length / 3) + 8;

function maxTokens() {
  return contextWindow ? Math.max(16, Math.min(MAX_TOKENS, Math.floor(contextWindow / 4))) : MAX_TOKENS;
}

/** The messages to send: the newest that fit the context (the last user turn always), never
 * starting with an assistant turn; and how many were left out. */
function fitToContext(all) {
  if (!contextWindow) return { sent: all, dropped: 0 };
  const budget = contextWindow - maxTokens() - 32;
  let start = all.length - 1;
  let used = estimate(all[start]);
  while (start > 0 && used + estimate(all[start - 1]) <= budget) {
    start -= 1;
    used += estimate(all[start]);
  }
  while (start < all.length - 1 && all[start].role !== "user") start += 1;
  return { sent: all.slice(start), dropped: start };
}

// -- theme ----------------------------------------------------------------------------------
const storedTheme = localStorage.getItem("tokenwire.theme");
const prefersDark = window.matchMedia("(prefers-color-scheme: dark)").matches;
document.documentElement.dataset.theme = storedTheme ?? (prefersDark ? "dark" : "light");
$("theme").addEventListener("click", () => {
  const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
  document.documentElement.dataset.theme = next;
  localStorage.setItem("tokenwire.theme", next);
});

// -- transport ------------------------------------------------------------------------------
const transportInputs = [...document.querySelectorAll('input[name="transport"]')];
const storedTransport = new URLSearchParams(location.search).get("transport")
  ?? localStorage.getItem("tokenwire.transport");
for (const input of transportInputs) {
  if (input.value === storedTransport) input.checked = true;
  input.addEventListener("change", () => localStorage.setItem("tokenwire.transport", input.value));
}
const transport = () => transportInputs.find((input) => input.checked).value;
requestAnimationFrame(() => document.body.classList.add("ready"));

const client = () => new TokenwireClient({
  transport: transport(),
  apiKey: sessionStorage.getItem(API_KEY),
});

// -- authentication -------------------------------------------------------------------------
let afterLogin = null; // what to do once a key is accepted

/** Ask for an API key; `then` runs once the server accepts it. */
function askForKey(then, message = "") {
  afterLogin = then;
  ui.authError.textContent = message;
  ui.authError.hidden = !message;
  ui.authKey.value = "";
  if (!ui.auth.open) ui.auth.showModal();
  ui.authKey.focus();
}

ui.authForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = ui.authKey.value.trim();
  if (!key) return;
  sessionStorage.setItem(API_KEY, key);
  try {
    await loadModels();
  } catch (error) {
    sessionStorage.removeItem(API_KEY);
    const refused = error.status === 401;
    askForKey(afterLogin, refused ? `The server refused this key: ${error.message}` : error.message);
    return;
  }
  ui.auth.close();
  ui.prompt.focus();
  const then = afterLogin;
  afterLogin = null;
  then?.();
});
$("auth-cancel").addEventListener("click", () => {
  ui.auth.close();
  ui.prompt.focus();
});
$("logout").addEventListener("click", () => {
  sessionStorage.removeItem(API_KEY);
  askForKey(null);
});

// -- header ---------------------------------------------------------------------------------
$("origin").textContent = location.host;

async function loadModels() {
  const models = await client().models();
  ui.model.textContent = models.map((m) => m.id).join(", ");
  contextWindow = models.find((m) => Number.isInteger(m.context_window))?.context_window ?? null;
  if (contextWindow) ui.model.textContent += ` · ${contextWindow} tokens`;
  $("logout").hidden = !sessionStorage.getItem(API_KEY);
}

loadModels().catch((error) => {
  if (error.status === 401) {
    ui.model.textContent = "sign in to chat";
    askForKey(null);
  } else {
    ui.model.textContent = error.code === "connection_lost" ? "server unreachable" : error.message;
  }
});

// -- composer -------------------------------------------------------------------------------
if (window.matchMedia("(max-width: 640px)").matches) ui.prompt.placeholder = "Message the model…";
function autosize() {
  ui.prompt.style.height = "auto";
  ui.prompt.style.height = `${Math.min(ui.prompt.scrollHeight, 180)}px`;
}
ui.prompt.addEventListener("input", autosize);
ui.prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  }
});
for (const chip of document.querySelectorAll(".chip")) {
  chip.addEventListener("click", () => {
    ui.prompt.value = chip.textContent;
    ui.composer.requestSubmit();
  });
}
ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.prompt.value.trim();
  if (!text || current) return;
  ui.prompt.value = "";
  autosize();
  ask(text);
});
ui.stop.addEventListener("click", () => current?.cancel());
ui.drop.addEventListener("click", () => current?.drop());
$("clear").addEventListener("click", () => {
  if (current) return;
  turns = [];
  saveHistory();
  for (const node of ui.conversation.querySelectorAll(".message, .note")) node.remove();
  ui.empty.hidden = false;
  updateHistorySize();
  ui.prompt.focus();
});

// -- rendering ------------------------------------------------------------------------------
const COPY_ICON = '<svg viewBox="0 0 24 24" aria-hidden="true"><rect x="9" y="9" width="11" height="11" rx="2"/><path d="M5 15V6a2 2 0 0 1 2-2h9"/></svg>';
const RETRY_ICON = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M4 12a8 8 0 1 0 2.3-5.7M4 4v4h4"/></svg>';
const TOOL_ICON = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M14.7 6.3a4 4 0 0 0-5.4 5.4L3 18l3 3 6.3-6.3a4 4 0 0 0 5.4-5.4l-2.5 2.5-2.4-.6-.6-2.4Z"/></svg>';

function iconButton(className, label, icon) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = `mini ${className}`;
  button.title = label;
  button.setAttribute("aria-label", label);
  button.innerHTML = icon; // a constant of this file, never model output
  return button;
}

async function copy(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = document.createElement("textarea"); // non-secure origins have no clipboard API
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  button.classList.add("done");
  button.dataset.copied = "true";
  setTimeout(() => button.classList.remove("done"), 1500);
}

function bubble(role, text = "") {
  ui.empty.hidden = true;
  const message = document.createElement("div");
  message.className = `message ${role}`;
  const body = document.createElement("div");
  body.className = "bubble";
  const content = document.createElement("div");
  content.className = "content";
  if (role === "user") content.textContent = text;
  body.append(content);
  const meta = document.createElement("div");
  meta.className = "meta";
  message.append(body, meta);
  ui.conversation.append(message);
  scrollDown();
  return { message, body, content, meta };
}

/** An assistant reply's parts, created as they are first needed. */
class Reply {
  constructor() {
    Object.assign(this, bubble("assistant"));
    this.thinking = null;
    this.tools = null;
    this.userToggled = false;
  }

  static restore(turn) {
    const reply = new Reply();
    reply.render(turn, []);
    reply.finish(turn);
    return reply;
  }

  /** Draw the reply so far: {content, reasoning, toolCalls, queuePosition}. */
  render({ content, reasoning, toolCalls = [], queuePosition = null }, resumes) {
    if (reasoning) {
      if (!this.thinking) this.thinking = this.makeThinking();
      this.thinking.querySelector(".reasoning").textContent = reasoning;
      // open while the model thinks; folded once the answer begins (unless the reader chose)
      if (!this.userToggled) this.thinking.open = !content && !toolCalls.length;
    }
    renderMarkdown(this.content, content, resumes);
    this.content.hidden = !content && Boolean(reasoning || toolCalls.length);
    if (toolCalls.length) this.renderTools(toolCalls);
    this.setWaiting(queuePosition);
  }

  makeThinking() {
    const details = document.createElement("details");
    details.className = "thinking";
    const summary = document.createElement("summary");
    summary.textContent = "Thinking";
    const reasoning = document.createElement("div");
    reasoning.className = "reasoning";
    details.append(summary, reasoning);
    summary.addEventListener("click", () => { this.userToggled = true; });
    this.body.prepend(details);
    return details;
  }

  renderTools(calls) {
    if (!this.tools) {
      this.tools = document.createElement("div");
      this.tools.className = "tool-calls";
      this.body.append(this.tools);
    }
    const cards = calls.map((call) => {
      const card = document.createElement("section");
      card.className = `tool-card${call.done === false ? " pending" : ""}`;
      card.dataset.index = call.index;
      card.setAttribute("aria-label", `Tool call ${call.name}`);
      const head = document.createElement("header");
      head.innerHTML = TOOL_ICON;
      const name = document.createElement("span");
      name.className = "tool-name";
      name.textContent = call.name;
      const id = document.createElement("span");
      id.className = "tool-id";
      id.textContent = call.call_id;
      head.append(name, id);
      const args = document.createElement("pre");
      args.className = "tool-args";
      args.textContent = prettyJson(call.arguments);
      card.append(head, args);
      return card;
    });
    this.tools.replaceChildren(...cards);
  }

  setWaiting(position) {
    let waiting = this.body.querySelector(".waiting");
    if (position === null || position === undefined) {
      waiting?.remove();
      return;
    }
    if (!waiting) {
      waiting = document.createElement("div");
      waiting.className = "waiting";
      this.body.prepend(waiting);
    }
    waiting.textContent = `Waiting for a free slot · ${position} ahead in the queue`;
  }

  showError(code, message) {
    const notice = document.createElement("div");
    notice.className = "notice";
    notice.setAttribute("role", "alert");
    const strong = document.createElement("strong");
    strong.textContent = code;
    notice.append(strong, document.createTextNode(`: ${message}`));
    this.body.append(notice);
    this.message.classList.add("failed");
  }

  /** The reply is complete: tags, error, copy and retry buttons. */
  finish(turn) {
    if (turn.trimmed) {
      const note = document.createElement("div");
      note.className = "trimmed";
      note.textContent = turn.trimmed;
      this.message.prepend(note);
    }
    if (turn.error) this.showError(turn.error.code, turn.error.message);
    for (const [text, kind] of turn.tags ?? []) tag(this.meta, text, kind);
    const actions = document.createElement("span");
    actions.className = "reply-actions";
    if (turn.content) {
      const copyButton = iconButton("copy", "Copy reply", COPY_ICON);
      copyButton.addEventListener("click", () => copy(turn.content, copyButton));
      actions.append(copyButton);
    }
    const retry = iconButton("retry", "Retry", RETRY_ICON);
    retry.addEventListener("click", () => retryLast());
    actions.append(retry);
    this.meta.prepend(actions);
  }
}

function prettyJson(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text; // still streaming, or not JSON: as the model wrote it
  }
}

// Follow the reply as it grows, unless the reader has scrolled up to read something else.
let following = true;
ui.conversation.addEventListener("scroll", () => {
  const { scrollHeight, scrollTop, clientHeight } = ui.conversation;
  following = scrollHeight - scrollTop - clientHeight < 40;
});

function scrollDown(force = false) {
  if (force) following = true;
  if (following) ui.conversation.scrollTop = ui.conversation.scrollHeight;
}

function tag(meta, text, kind = "") {
  const span = document.createElement("span");
  span.className = `tag ${kind}`.trim();
  span.textContent = text;
  meta.append(span);
}

const fmt = {
  ms: (value) => (value === null ? "—" : `${Math.round(value)} ms`),
  rate: (value) => (value === null || !Number.isFinite(value) ? "—" : value.toFixed(1)),
};

function renderStats(stream) {
  ui.ttft.textContent = fmt.ms(stream.ttft);
  ui.tps.textContent = fmt.rate(stream.tokensPerSecond);
  ui.tokens.textContent = stream.end?.usage?.completion_tokens ?? stream.deltas;
  ui.reconnects.textContent = stream.reconnects;
}

function setStatus(status) {
  ui.status.dataset.status = status;
  ui.status.textContent = status;
}

function setBusy(busy) {
  demo.state = busy ? "streaming" : "idle";
  document.body.dataset.state = demo.state;
  ui.send.hidden = busy;
  ui.stop.hidden = !busy;
  ui.drop.disabled = !busy;
  for (const input of transportInputs) input.disabled = busy;
  for (const button of ui.conversation.querySelectorAll(".retry")) button.disabled = busy;
}

function updateHistorySize() {
  const count = messages().length;
  ui.historySize.textContent = `${count} turn${count === 1 ? "" : "s"}`;
}

// -- restore --------------------------------------------------------------------------------
for (const turn of turns) {
  if (turn.role === "user") bubble("user", turn.content);
  else Reply.restore(turn);
}
updateHistorySize();
scrollDown(true);
if (!ui.auth.open) ui.prompt.focus();

// -- one exchange ---------------------------------------------------------------------------
function ask(text) {
  turns.push({ role: "user", content: text });
  saveHistory();
  bubble("user", text);
  scrollDown(true);
  receive();
}

/** Ask again for the last reply: the last assistant turn is replaced. */
function retryLast() {
  if (current) return;
  const last = turns.at(-1);
  if (last?.role === "assistant") {
    turns.pop();
    [...ui.conversation.querySelectorAll(".message.assistant")].at(-1)?.remove();
  }
  const question = turns.at(-1);
  if (question?.role !== "user") return;
  delete question.excluded;
  saveHistory();
  receive();
}

async function receive() {
  const { sent, dropped } = fitToContext(messages());
  const trimmed = dropped
    ? `${dropped} earlier message${dropped === 1 ? "" : "s"} left out to fit the model's context (${contextWindow} tokens)`
    : "";
  const reply = new Reply();
  reply.message.classList.add("streaming");
  // The one live region: the answer in progress (aria-busy until it is complete, so that
  // screen readers read it once, not at every token).
  for (const node of ui.conversation.querySelectorAll("[aria-live]")) node.removeAttribute("aria-live");
  reply.content.setAttribute("aria-live", "polite");
  reply.content.setAttribute("aria-busy", "true");

  const kind = transport();
  const stream = client().stream(sent, { max_tokens: maxTokens() });
  current = stream;
  demo.stream = stream;
  setBusy(true);
  setStatus("connecting");
  stream.addEventListener("status", (event) => setStatus(event.detail));

  // Where the stream was resumed: markers in the text, drawn by CSS (not part of the text).
  const resumes = [];
  let shown = "";
  let at = 0;
  const withMarks = () => {
    const clean = stream.text.replaceAll(RESUME, "");
    if (at < clean.length) {
      shown += clean.slice(at);
      at = clean.length;
    }
    return shown;
  };
  let frame = 0;
  const paint = () => {
    frame = 0;
    reply.render({
      content: withMarks(),
      reasoning: stream.reasoning,
      toolCalls: [
        ...stream.toolCalls.map((call) => ({ ...call, done: true })),
        ...stream.toolCallsInProgress.map((call) => ({ ...call, done: false })),
      ].sort((a, b) => a.index - b.index),
      queuePosition: stream.queuePosition,
    }, resumes.map((r) => r.seq));
    renderStats(stream);
    scrollDown();
  };
  let failure = null;
  try {
    for await (const event of stream) {
      if (event.type === "stream.resumed") {
        withMarks();
        shown += RESUME;
        resumes.push({ seq: event.after_seq });
      }
      if (!frame) frame = requestAnimationFrame(paint);
    }
  } catch (error) {
    failure = error;
    setStatus("failed");
  } finally {
    if (frame) cancelAnimationFrame(frame);
    paint();
    reply.message.classList.remove("streaming");
    reply.content.setAttribute("aria-busy", "false");
    const tags = [[kind === "sse" ? "SSE" : "WebSocket", ""]];
    if (stream.ttft !== null) tags.push([`TTFT ${fmt.ms(stream.ttft)}`, ""]);
    if (stream.tokensPerSecond !== null) tags.push([`${fmt.rate(stream.tokensPerSecond)} tok/s`, ""]);
    if (stream.reconnects) tags.push([`resumed ×${stream.reconnects}`, "resumed"]);
    const reason = stream.end?.finish_reason;
    if (reason && reason !== "stop") tags.push([reason, reason === "cancelled" ? "cancelled" : ""]);
    if (stream.error) tags.push([stream.error.code, "cancelled"]);
    const error = failure
      ? { code: failure.code ?? "error", message: failure.message }
      : stream.error && { code: stream.error.code, message: stream.error.message };
    const turn = {
      role: "assistant",
      content: stream.text.replaceAll(RESUME, ""),
      reasoning: stream.reasoning,
      toolCalls: stream.toolCalls,
      error: error || null,
      tags,
      trimmed,
    };
    const question = turns.at(-1);
    const nothing = !turn.content && !turn.reasoning && !turn.toolCalls.length;
    if (nothing && question?.role === "user") {
      question.excluded = true; // nothing came back: it can be asked again
      turn.excluded = true;
    }
    turns.push(turn);
    saveHistory();
    reply.finish(turn);
    updateHistorySize();
    current = null;
    setBusy(false);
    scrollDown();
    if (failure?.code === "unauthorized") {
      sessionStorage.removeItem(API_KEY);
      askForKey(() => retryLast(), failure.message);
    } else {
      ui.prompt.focus();
    }
  }
}
