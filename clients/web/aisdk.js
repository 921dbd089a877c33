// The "AI SDK" page: a chat driven by the AI SDK's own transports (the pinned `ai` package,
// bundled into vendor/ai.mjs), unmodified, against tokenwire:
// - HTTP: DefaultChatTransport, POST api/chat; resume with GET api/chat/{id}/stream.
// - WebSocket: WebSocketChatTransport on api/chat/ws, every turn on one socket.
// Each stream of UI message chunks is reduced with readUIMessageStream, the reducer useChat runs.
// Stop calls POST api/chat/{id}/stop: the SDK's own stop() only aborts the request, which on the
// HTTP route is a disconnect (the generation runs on for a resume), so a real stop is a call.
// "Drop connection" cuts the transport mid-reply (the fetch aborted, or the socket closed) and
// resumes the chat's active stream: a full replay from the log, then live.
// All URLs are relative to the page, so a mount path (/llm/aisdk) carries over.
// window.aisdkDemo exposes the state for tests.
import { DefaultChatTransport, WebSocketChatTransport, readUIMessageStream } from "./vendor/ai.mjs";

const $ = (id) => document.getElementById(id);
const API_KEY = "tokenwire.apiKey"; // the main page's session storage entry, shared

function newId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

const demo = {
  state: "idle", // idle, streaming, reconnecting
  transport: new URLSearchParams(location.search).get("transport") === "websocket" ? "websocket" : "http",
  chatId: "chat-" + newId(),
  messages: [], // UIMessage[]: the conversation as the SDK keeps it
  text: "", // the text of the reply in progress (or the last one)
  finish: null, // how the last reply ended: a finishReason, "abort", or null
  error: null,
  resumes: 0,
  chunks: 0,
  turns: 0, // turns sent
};
window.aisdkDemo = demo;

function apiKey() {
  return $("api-key").value.trim() || sessionStorage.getItem(API_KEY) || "";
}

function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// A short-lived token for the WebSocket handshake (browsers cannot set its headers).
async function socketParams() {
  if (!apiKey()) return {};
  const response = await fetch("v1/tokens", { method: "POST", headers: authHeaders() });
  if (!response.ok) throw new Error(`POST v1/tokens: ${response.status} ${await response.text()}`);
  return { token: (await response.json()).token };
}

const transports = {
  http: new DefaultChatTransport({ api: "api/chat", headers: authHeaders }),
  websocket: new WebSocketChatTransport({ url: "api/chat/ws", params: socketParams }),
};

let abort = null; // the AbortController of the request in flight
let dropping = false;

function setState(state) {
  demo.state = state;
  const pill = $("status");
  pill.dataset.status = state === "idle" ? (demo.error ? "failed" : "ended") : state;
  pill.textContent = state === "idle" ? (demo.error ? "error" : demo.finish ?? "idle") : state;
  const busy = state !== "idle";
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  $("drop").disabled = state !== "streaming";
  for (const input of document.querySelectorAll('input[name="transport"]')) input.disabled = busy;
  $("resumes").textContent = String(demo.resumes);
}

function bubble(role) {
  $("empty")?.remove();
  const message = document.createElement("div");
  message.className = `message ${role}`;
  const box = document.createElement("div");
  box.className = "bubble";
  const content = document.createElement("div");
  content.className = "content";
  box.append(content);
  message.append(box);
  $("conversation").append(message);
  return { message, box, content };
}

// Render an assistant UIMessage: reasoning, text and tool parts (as text: nothing is HTML).
function render(view, message) {
  const parts = message?.parts ?? [];
  const reasoning = parts.filter((p) => p.type === "reasoning").map((p) => p.text).join("");
  const tools = parts.filter((p) => p.type.startsWith("tool-") || p.type === "dynamic-tool");
  demo.text = parts.filter((p) => p.type === "text").map((p) => p.text).join("");
  view.content.textContent = demo.text;
  if (reasoning) {
    view.thinking ??= view.box.insertBefore(document.createElement("details"), view.content);
    view.thinking.className = "thinking";
    view.thinking.innerHTML = "<summary>Thinking</summary><div class=\"reasoning\"></div>";
    view.thinking.querySelector(".reasoning").textContent = reasoning;
  }
  if (tools.length) {
    view.tools ??= view.box.appendChild(document.createElement("div"));
    view.tools.className = "tool-calls";
    view.tools.replaceChildren(
      ...tools.map((part) => {
        const card = document.createElement("div");
        card.className = "tool-card";
        const name = part.type === "dynamic-tool" ? part.toolName : part.type.slice(5);
        const args = document.createElement("pre");
        args.className = "tool-args";
        args.textContent = `${name}(${JSON.stringify(part.input ?? null)})`;
        card.append(args);
        return card;
      }),
    );
  }
  $("conversation").scrollTop = $("conversation").scrollHeight;
}

// Reduce one chunk stream into the reply; returns the last UIMessage (undefined: none came).
async function consume(stream, view) {
  let last;
  const tapped = stream.pipeThrough(
    new TransformStream({
      transform(chunk, controller) {
        demo.chunks += 1;
        if (chunk.type === "finish") demo.finish = chunk.finishReason ?? "finish";
        if (chunk.type === "abort") demo.finish = "abort";
        if (chunk.type === "error") demo.error = chunk.errorText;
        controller.enqueue(chunk);
      },
    }),
  );
  const failed = (error) => {
    if (!dropping) demo.error ??= String(error?.message ?? error);
  };
  try {
    // a failed stream (the socket closed, the fetch aborted) reaches onError, not the loop
    for await (const message of readUIMessageStream({ stream: tapped, onError: failed })) {
      last = message;
      render(view, message);
    }
  } catch (error) {
    failed(error);
  }
  return last;
}

async function sendTurn(text) {
  const transport = transports[demo.transport];
  demo.messages.push({ id: "u-" + newId(), role: "user", parts: [{ type: "text", text }] });
  bubble("user").content.textContent = text;
  const view = bubble("assistant");
  view.message.classList.add("streaming");
  Object.assign(demo, { text: "", finish: null, error: null, chunks: 0, turns: demo.turns + 1 });
  setState("streaming");
  let reply;
  try {
    abort = new AbortController();
    let stream = await transport.sendMessages({
      chatId: demo.chatId,
      messages: demo.messages,
      trigger: "submit-message",
      messageId: undefined,
      abortSignal: abort.signal,
    });
    reply = await consume(stream, view);
    while (dropping) {
      // the transport was cut: resume the chat's active stream (a replay from its start)
      dropping = false;
      demo.resumes += 1;
      setState("reconnecting");
      abort = new AbortController();
      stream = await transport.reconnectToStream({ chatId: demo.chatId, abortSignal: abort.signal });
      if (stream === null) break; // it ended meanwhile: nothing more to show
      setState("streaming");
      reply = (await consume(stream, view)) ?? reply;
    }
  } catch (error) {
    demo.error = String(error?.message ?? error);
  } finally {
    abort = null;
    view.message.classList.remove("streaming");
    if (reply) demo.messages.push(reply);
    if (demo.error) {
      view.message.classList.add("failed");
      view.content.textContent = demo.text || demo.error;
    }
    setState("idle");
  }
}

function drop() {
  if (demo.state !== "streaming") return;
  dropping = true;
  if (demo.transport === "websocket") transports.websocket.close();
  else abort?.abort();
}

async function stop() {
  const url = `api/chat/${encodeURIComponent(demo.chatId)}/stop`;
  const response = await fetch(url, { method: "POST", headers: authHeaders() });
  if (!response.ok) demo.error = `stop: ${response.status} ${await response.text()}`;
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || demo.state !== "idle") return;
  $("prompt").value = "";
  void sendTurn(text);
});
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});
$("stop").addEventListener("click", () => void stop());
$("drop").addEventListener("click", drop);
for (const input of document.querySelectorAll('input[name="transport"]')) {
  input.checked = input.value === demo.transport;
  input.addEventListener("change", () => {
    demo.transport = input.value;
  });
}
$("chat-id").textContent = demo.chatId.slice(0, 13);
setState("idle");
