// The demo chat page: wires tokenwire.js to the DOM. Plain ES module, no framework.
import { TokenwireClient } from "./tokenwire.js";

const MAX_TOKENS = 256;
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
};

const history = [];
let current = null; // the stream being received
const demo = { history, stream: null, state: "idle" };
window.tokenwireDemo = demo; // for tests and the curious: the live stream and the history

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

// -- header ---------------------------------------------------------------------------------
$("origin").textContent = location.host;
fetch("v1/models")
  .then((response) => response.json())
  .then(({ data }) => { ui.model.textContent = data.map((m) => m.id).join(", "); })
  .catch(() => { ui.model.textContent = "server unreachable"; });

// -- composer -------------------------------------------------------------------------------
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
  send(text);
});
ui.stop.addEventListener("click", () => current?.cancel());
ui.drop.addEventListener("click", () => current?.drop());
$("clear").addEventListener("click", () => {
  if (current) return;
  history.length = 0;
  for (const node of ui.conversation.querySelectorAll(".message")) node.remove();
  ui.empty.hidden = false;
  ui.historySize.textContent = "0 turns";
});

// -- rendering ------------------------------------------------------------------------------
function bubble(role, text = "") {
  ui.empty.hidden = true;
  const message = document.createElement("div");
  message.className = `message ${role}`;
  const body = document.createElement("div");
  body.className = "bubble";
  const content = document.createElement("span");
  content.className = "content";
  content.textContent = text;
  body.append(content);
  const meta = document.createElement("div");
  meta.className = "meta";
  message.append(body, meta);
  ui.conversation.append(message);
  scrollDown();
  return { message, content, meta };
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
}

// -- one exchange ---------------------------------------------------------------------------
async function send(text) {
  history.push({ role: "user", content: text });
  bubble("user", text);
  scrollDown(true);
  const reply = bubble("assistant");
  reply.message.classList.add("streaming");

  const kind = transport();
  const stream = new TokenwireClient({ transport: kind }).stream([...history], { max_tokens: MAX_TOKENS });
  current = stream;
  demo.stream = stream;
  setBusy(true);
  setStatus("connecting");
  stream.addEventListener("status", (event) => setStatus(event.detail));

  // Where the stream was resumed: a marker drawn by CSS (not part of the text itself).
  const resumes = [];
  let frame = 0;
  const paint = () => {
    frame = 0;
    const nodes = [];
    let at = 0;
    for (const { offset, seq } of resumes) {
      nodes.push(document.createTextNode(stream.text.slice(at, offset)));
      const mark = document.createElement("span");
      mark.className = "resume-mark";
      mark.dataset.seq = seq;
      mark.title = `connection resumed after event #${seq}: nothing lost, nothing repeated`;
      nodes.push(mark);
      at = offset;
    }
    nodes.push(document.createTextNode(stream.text.slice(at)));
    reply.content.replaceChildren(...nodes);
    renderStats(stream);
    scrollDown();
  };
  try {
    for await (const event of stream) {
      if (event.type === "stream.resumed") {
        resumes.push({ offset: stream.text.length, seq: event.after_seq });
      }
      if (!frame) frame = requestAnimationFrame(paint);
    }
  } catch (error) {
    const notice = document.createElement("div");
    notice.className = "notice";
    notice.textContent = `${error.code ?? "error"}: ${error.message}`;
    reply.meta.before(notice);
    reply.message.classList.add("failed");
    setStatus("failed");
  } finally {
    if (frame) cancelAnimationFrame(frame);
    paint();
    reply.message.classList.remove("streaming");
    tag(reply.meta, kind === "sse" ? "SSE" : "WebSocket");
    if (stream.ttft !== null) tag(reply.meta, `TTFT ${fmt.ms(stream.ttft)}`);
    if (stream.tokensPerSecond !== null) tag(reply.meta, `${fmt.rate(stream.tokensPerSecond)} tok/s`);
    if (stream.reconnects) tag(reply.meta, `resumed ×${stream.reconnects}`, "resumed");
    const reason = stream.end?.finish_reason;
    if (reason && reason !== "stop") tag(reply.meta, reason, reason === "cancelled" ? "cancelled" : "");
    if (stream.error) tag(reply.meta, stream.error.code, "cancelled");
    if (stream.text) history.push({ role: "assistant", content: stream.text });
    else history.pop(); // nothing came back: let the user ask again
    ui.historySize.textContent = `${history.length} turns`;
    current = null;
    setBusy(false);
    scrollDown();
    ui.prompt.focus();
  }
}
