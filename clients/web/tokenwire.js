// tokenwire.js: the browser client of wire protocol v1, as one ES module (no build step).
//
//   import { TokenwireClient } from "./tokenwire.js";
//   const client = new TokenwireClient({ transport: "websocket" });   // or "sse"
//   const stream = client.stream([{ role: "user", content: "Hi" }], { max_tokens: 64 });
//   for await (const event of stream) {
//     if (event.type === "text.delta") output.textContent += event.delta;
//   }
//   stream.text; stream.reasoning; stream.toolCalls; stream.end.finish_reason; stream.reconnects;
//
// Events are the protocol's JSON objects (stream.start, text.delta, reasoning.delta,
// tool_call.start / .delta / .end, error, stream.end, stream.resumed, and stream.queued when the
// server's engine has no free slot yet); iteration ends after stream.end. Besides `text`, a
// stream gathers `reasoning` (the model's reasoning, apart from the answer), `toolCalls` (the
// complete calls: {index, call_id, name, arguments}), `toolCallsInProgress` (calls whose
// arguments are still streaming) and `queuePosition` (set while the server reports the
// stream queued, status "queued"; null otherwise).
//
// Authentication (a server with TOKENWIRE_API_KEYS set):
//   new TokenwireClient({ apiKey: "tw_..." })          // or
//   new TokenwireClient({ token: async () => (await myBackend.mint()).token })
// fetch calls send `Authorization: Bearer <key or token>`. Browsers' EventSource and WebSocket
// cannot send headers, so they carry a short-lived signed token as the `token` query parameter:
// the token provider's, or one minted with the key by POST /v1/tokens (cached until shortly
// before it expires; a resume gets a fresh one). A refusal is a TokenwireError with code
// "unauthorized" and status 401. A lost connection is resumed by itself
// after the last seq received, so text is never duplicated or missing:
// - "sse": the stream is started detached (fetch POST /v1/streams with Accept:
//   application/json -> 201 {stream_id, events_url}), then read with an EventSource, which
//   reconnects by itself sending Last-Event-ID (WHATWG HTML 9.2.3); when the EventSource gives
//   up, or after drop(), a new one resumes with ?last_event_id=<seq>.
// - "websocket": one socket per stream; after a close that is not terminal (1012 restart,
//   1013, 4008 slow consumer, 1006 network...) a new socket sends
//   {"type":"resume","stream_id","after_seq"} with exponential backoff and jitter.
// stream.reset, a terminal close code or an HTTP error end the iteration with a TokenwireError.

const TERMINAL_CLOSE_CODES = new Set([1002, 1003, 1007, 1008, 1009, 1010]); // RFC 6455 7.4.1
// The named SSE events of wire protocol v1 (`error` is listened to apart: see _listen).
const EVENT_TYPES = [
  "stream.start", "text.delta", "reasoning.delta", "tool_call.start", "tool_call.delta",
  "tool_call.end", "stream.end", "stream.resumed", "stream.reset", "stream.queued",
];

/** An error from the server or the connection: `code` is the protocol's error code. */
export class TokenwireError extends Error {
  constructor(message, { code = "connection_lost", status = 0, retryable = false } = {}) {
    super(message);
    this.name = "TokenwireError";
    this.code = code;
    this.status = status;
    this.retryable = retryable;
  }
}

/** Exponential backoff with full jitter: attempt n (from 1) waits up to initial * 2**(n-1). */
export function backoffDelay(attempt, { initial = 100, maximum = 5000, jitter = 100 } = {}) {
  const base = Math.min(initial * 2 ** Math.max(0, attempt - 1), maximum);
  return Math.min(base + Math.random() * jitter, maximum);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class TokenwireClient {
  /**
   * @param {object} options
   * @param {string} [options.baseUrl] the tokenwire app's URL, with the path it is mounted at
   *   (e.g. "https://example.com/llm"); "" (the default) for the app that served this module,
   *   so the demo page and any page importing /llm/web/tokenwire.js reach /llm/v1/....
   * @param {"sse"|"websocket"} [options.transport]
   * @param {{attempts:number, initial:number, maximum:number, jitter:number}} [options.reconnect]
   *   backoff in milliseconds; attempts per outage (the count restarts after new events).
   */
  constructor({ baseUrl = "", transport = "sse", reconnect = {}, apiKey = null, token = null } = {}) {
    if (transport !== "sse" && transport !== "websocket") {
      throw new TypeError(`transport must be "sse" or "websocket", got ${transport}`);
    }
    if (token !== null && typeof token !== "function") {
      throw new TypeError("token must be a function that returns a signed token (or a promise of one)");
    }
    this.baseUrl = baseUrl.replace(/\/$/, "");
    this.transport = transport;
    this.reconnect = { attempts: 8, initial: 100, maximum: 5000, jitter: 100, ...reconnect };
    this.apiKey = apiKey || null;
    this.tokenProvider = token;
    this._minted = null; // {token, expiresAt (ms)} minted with the API key
  }

  /** Headers that authenticate a fetch: the API key, else the token provider's token. */
  async authHeaders() {
    if (this.apiKey) return { Authorization: `Bearer ${this.apiKey}` };
    if (this.tokenProvider) return { Authorization: `Bearer ${await this.tokenProvider()}` };
    return {};
  }

  /** A signed token for EventSource / WebSocket URLs, or null without credentials. With an
   * API key, POST /v1/tokens mints one; it is reused until 10 s before it expires. */
  async streamToken() {
    if (this.tokenProvider) return this.tokenProvider();
    if (!this.apiKey) return null;
    if (this._minted && this._minted.expiresAt - Date.now() > 10_000) return this._minted.token;
    const response = await fetch(this.url("/v1/tokens"), {
      method: "POST",
      headers: { Authorization: `Bearer ${this.apiKey}` },
    });
    if (response.status !== 201) throw await httpError(response);
    const { token, expires_at: expiresAt } = await response.json();
    this._minted = { token, expiresAt: expiresAt * 1000 };
    return token;
  }

  /** `url(path)` with the stream token as the `token` query parameter, when there is one. */
  async authedUrl(path) {
    const url = this.url(path);
    const token = await this.streamToken();
    if (token) url.searchParams.set("token", token);
    return url;
  }

  /** GET /v1/models: the served models, [{id, context_window?, ...}] (context_window: the
   * model's context size in tokens, when the server knows it). */
  async models() {
    const response = await fetch(this.url("/v1/models"), { headers: await this.authHeaders() });
    if (!response.ok) throw await httpError(response);
    return (await response.json()).data;
  }

  /** Start a stream: `params` are the other fields of the request (max_tokens, ...). */
  stream(messages, params = {}) {
    const body = { messages, on_disconnect: "detach", ...params };
    const Kind = this.transport === "sse" ? SSEStream : WebSocketStream;
    return new Kind(this, body);
  }

  /** The URL of `path` ("/v1/streams") under the app's base; an absolute URL (an
   * `events_url` from the server) is used as it is. */
  url(path) {
    if (/^[a-z][a-z0-9+.-]*:/i.test(path)) return new URL(path);
    const base = this.baseUrl ? `${this.baseUrl}/` : new URL("..", import.meta.url).href;
    return new URL(path.replace(/^\//, ""), new URL(base, window.location.href));
  }

  async cancel(streamId) {
    const response = await fetch(this.url(`/v1/streams/${encodeURIComponent(streamId)}/cancel`), {
      method: "POST",
      headers: await this.authHeaders(),
    });
    if (response.status !== 202 && response.status !== 404) throw await httpError(response);
  }
}

async function httpError(response) {
  try {
    const { error } = await response.json();
    return new TokenwireError(error.message, {
      code: error.code,
      status: response.status,
      retryable: Boolean(error.retryable),
    });
  } catch {
    return new TokenwireError(`HTTP ${response.status}`, {
      code: "http_error",
      status: response.status,
    });
  }
}

/**
 * One stream's events (async iterable) and its state so far. Dispatches DOM events:
 * "event" (detail: the protocol event) and "status" (detail: connecting | streaming |
 * reconnecting | ended | failed).
 */
class TokenwireStream extends EventTarget {
  constructor(client, body) {
    super();
    this.client = client;
    this.body = body;
    this.requestId = `req_${Math.random().toString(36).slice(2, 12)}`;
    this.streamId = null;
    this.lastSeq = 0;
    this.text = "";
    this.reasoning = "";
    this.toolCalls = []; // complete calls, in the order their tool_call.end arrived
    this._partialCalls = new Map(); // index -> {index, call_id, name, arguments}
    this.queuePosition = null;
    this.reconnects = 0;
    this.end = null;
    this.error = null;
    this.status = "connecting";
    this.startedAt = performance.now();
    this.firstTokenAt = null;
    this.lastTokenAt = null;
    this.deltas = 0;
    this._queue = [];
    this._waiters = [];
    this._failure = null;
    this._cancelRequested = false;
    this._cancelSent = false;
    this.done = new Promise((resolve, reject) => {
      this._resolve = resolve;
      this._reject = reject;
    });
    this.done.catch(() => {}); // the failure is also thrown to the iterator
    queueMicrotask(() => this._open());
  }

  /** Tool calls whose arguments are still streaming: [{index, call_id, name, arguments}]. */
  get toolCallsInProgress() {
    return [...this._partialCalls.values()];
  }

  /** Milliseconds from stream() to the first delta (text, reasoning or tool call), or null. */
  get ttft() {
    return this.firstTokenAt === null ? null : this.firstTokenAt - this.startedAt;
  }

  /** Deltas per second since the first one (completion tokens at the end), or null. */
  get tokensPerSecond() {
    if (this.firstTokenAt === null || this.lastTokenAt === this.firstTokenAt) return null;
    const tokens = this.end?.usage?.completion_tokens ?? this.deltas;
    return ((tokens - 1) * 1000) / (this.lastTokenAt - this.firstTokenAt);
  }

  [Symbol.asyncIterator]() {
    return {
      next: () => {
        if (this._queue.length) return Promise.resolve({ value: this._queue.shift(), done: false });
        if (this._failure) return Promise.reject(this._failure);
        if (this.end || this.status === "failed") {
          return Promise.resolve({ value: undefined, done: true });
        }
        return new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
      },
      return: () => {
        this.close();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }

  /** Ask the server to end the stream; events go on up to stream.end (cancelled). */
  async cancel() {
    this._cancelRequested = true;
    await this._sendCancel();
  }

  async _sendCancel() {
    if (this._cancelSent || this.end || !this.streamId) return;
    this._cancelSent = true;
    try {
      await this._cancelOverConnection();
    } catch {
      this._cancelSent = false;
    }
  }

  async _cancelOverConnection() {
    await this.client.cancel(this.streamId);
  }

  _setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this.dispatchEvent(new CustomEvent("status", { detail: status }));
  }

  /** Handle one protocol event; duplicates (seq <= lastSeq) from a replay are dropped. */
  _accept(event) {
    if (this.end) return;
    if (event.type === "stream.reset") {
      this._fail(new TokenwireError(`the server cannot resume this stream (${event.reason})`, {
        code: event.reason,
      }));
      return;
    }
    if (event.type === "error" && event.code === "slow_consumer" && event.retryable) {
      this._lost("evicted as a slow consumer");
      return;
    }
    // stream.resumed has no seq; stream.queued may come without one (it is not part of the
    // generation's output, so it is never replayed twice either way)
    const unnumbered = event.type === "stream.resumed"
      || (event.type === "stream.queued" && typeof event.seq !== "number");
    if (!unnumbered) {
      if (typeof event.seq !== "number" || event.seq <= this.lastSeq) return;
      this.lastSeq = event.seq;
    }
    if (event.type.endsWith(".delta")) {
      const now = performance.now();
      if (this.firstTokenAt === null) this.firstTokenAt = now;
      this.lastTokenAt = now;
      this.deltas += 1;
    }
    if (event.type === "stream.queued") {
      this.queuePosition = event.position ?? null;
    } else if (event.type !== "stream.resumed" && event.type !== "stream.start") {
      this.queuePosition = null; // output (or the end) means the stream left the queue
    }
    switch (event.type) {
      case "stream.start":
        this.streamId = event.stream_id;
        if (this._cancelRequested) this._sendCancel();
        break;
      case "text.delta":
        this.text += event.delta;
        break;
      case "reasoning.delta":
        this.reasoning += event.delta;
        break;
      case "tool_call.start":
        this._partialCalls.set(event.index, {
          index: event.index, call_id: event.call_id, name: event.name, arguments: "",
        });
        break;
      case "tool_call.delta": {
        const call = this._partialCalls.get(event.index);
        if (call) call.arguments += event.delta;
        break;
      }
      case "tool_call.end":
        this._partialCalls.delete(event.index);
        this.toolCalls.push({
          index: event.index, call_id: event.call_id, name: event.name, arguments: event.arguments,
        });
        break;
      case "error":
        this.error = event;
        break;
      default:
    }
    this._setStatus(this.queuePosition === null ? "streaming" : "queued");
    if (event.type === "stream.end") {
      this.end = event;
      this._closeConnection();
      this._setStatus("ended");
      this._resolve(event);
    }
    this._push(event);
    this.dispatchEvent(new CustomEvent("event", { detail: event }));
  }

  _push(event) {
    const waiter = this._waiters.shift();
    if (waiter) waiter.resolve({ value: event, done: false });
    else this._queue.push(event);
    if (this.end) {
      for (const w of this._waiters.splice(0)) w.resolve({ value: undefined, done: true });
    }
  }

  _fail(error) {
    if (this.end || this._failure) return;
    this._failure = error;
    this._closeConnection();
    this._setStatus("failed");
    this._reject(error);
    for (const w of this._waiters.splice(0)) w.reject(error);
  }

  /** The connection is gone before stream.end: resume with backoff, or fail. */
  async _lost(reason) {
    if (this.end || this._failure || this._resuming) return;
    this._resuming = true;
    this._closeConnection();
    this._setStatus("reconnecting");
    this.reconnects += 1;
    const { attempts } = this.client.reconnect;
    const seqBefore = this.lastSeq;
    for (let attempt = 1; attempt <= attempts; attempt += 1) {
      if (this.end || this._failure) break;
      if (attempt > 1) await sleep(backoffDelay(attempt - 1, this.client.reconnect));
      try {
        await this._resume();
        this._resuming = false;
        return;
      } catch (error) {
        if (error instanceof TokenwireError && !error.retryable) {
          this._resuming = false;
          this._fail(error);
          return;
        }
        if (this.lastSeq > seqBefore) attempt = 0; // progress: a fresh outage budget
      }
    }
    this._resuming = false;
    this._fail(new TokenwireError(`connection lost (${reason}); gave up after ${attempts} attempts`));
  }

  /** Close the current connection on purpose and resume after the last seq: a demo of resume. */
  drop() {
    if (this.end || this._failure) return;
    this._lost("dropped on purpose");
  }

  /** Stop reading. A stream left before its end is cancelled on the server (best effort):
   *  it was started detached, and would otherwise run on for the server's grace period. */
  close() {
    this._closeConnection();
    if (!this.end && !this._failure) {
      if (this.streamId) this.client.cancel(this.streamId).catch(() => {});
      this._failure = new TokenwireError("closed by the client", { code: "closed" });
      this._setStatus("failed");
    }
  }
}

class SSEStream extends TokenwireStream {
  async _open() {
    // A network error or a retryable answer (503 while the server drains) is tried again.
    let response;
    for (let attempt = 1; ; attempt += 1) {
      let error;
      try {
        response = await fetch(this.client.url("/v1/streams"), {
          method: "POST",
          headers: {
            "Content-Type": "application/json",
            Accept: "application/json",
            ...(await this.client.authHeaders()),
          },
          body: JSON.stringify(this.body),
        });
        if (response.status === 201) break;
        error = await httpError(response);
      } catch (failure) {
        error = failure instanceof TokenwireError
          ? failure
          : new TokenwireError(`could not reach the server: ${failure.message}`, { retryable: true });
      }
      if (!error.retryable || attempt >= this.client.reconnect.attempts) {
        this._fail(error);
        return;
      }
      await sleep(backoffDelay(attempt, this.client.reconnect));
    }
    const { stream_id: streamId, events_url: eventsUrl } = await response.json();
    this.streamId = streamId;
    this.eventsUrl = eventsUrl;
    if (this._cancelRequested) this._sendCancel();
    try {
      await this._listen(await this._eventsUrl());
    } catch (error) {
      if (error.retryable) this._lost(error.message);
      else this._fail(error);
    }
  }

  /** The events URL, with a (fresh) stream token when authenticating. */
  async _eventsUrl() {
    const url = this.client.url(this.eventsUrl);
    const token = await this.client.streamToken();
    if (token) url.searchParams.set("token", token);
    return url;
  }

  _listen(url) {
    return new Promise((resolve, reject) => {
      const source = new EventSource(url);
      this.source = source;
      let opened = false;
      let failed = false; // an error since the last open: the browser is reconnecting
      const onEvent = (message) => this._accept(JSON.parse(message.data));
      for (const type of EVENT_TYPES) {
        source.addEventListener(type, onEvent);
      }
      source.addEventListener("open", () => {
        if (failed) this.reconnects += 1; // the EventSource reconnected by itself
        failed = false;
        opened = true;
        this._setStatus("streaming");
        resolve();
      });
      source.addEventListener("error", (message) => {
        if (message instanceof MessageEvent) {
          onEvent(message); // the protocol's `event: error`, not a connection error
          return;
        }
        if (this.source !== source || this.end) return;
        if (source.readyState === EventSource.CLOSED) {
          // The browser gave up (HTTP error, or 204 at the end): resume ourselves.
          source.close();
          if (!opened) reject(new TokenwireError("the event stream could not be opened", { retryable: true }));
          else this._lost("the event stream closed");
        } else {
          failed = true; // CONNECTING: the browser reconnects with Last-Event-ID
          this._setStatus("reconnecting");
        }
      });
    });
  }

  async _resume() {
    const url = await this._eventsUrl();
    url.searchParams.set("last_event_id", String(this.lastSeq));
    await this._listen(url);
  }

  _closeConnection() {
    this.source?.close();
  }
}

class WebSocketStream extends TokenwireStream {
  _open() {
    this._connect({ type: "generate", request_id: this.requestId, ...this.body }).catch((error) =>
      error.retryable ? this._lost(error.message) : this._fail(error),
    );
  }

  async _connect(firstMessage) {
    const url = await this.client.authedUrl("/v1/ws");
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(url);
      this.socket = socket;
      let opened = false;
      socket.addEventListener("open", () => {
        opened = true;
        socket.send(JSON.stringify(firstMessage));
        if (this._cancelRequested && this.streamId) {
          this._cancelSent = false;
          this._sendCancel();
        }
        resolve();
      });
      socket.addEventListener("message", (message) => {
        const event = JSON.parse(message.data);
        if (event.type === "pong") return;
        if (event.type === "error" && !event.stream_id) {
          this._fail(new TokenwireError(event.message, { code: event.code }));
          return;
        }
        this._accept(event);
      });
      socket.addEventListener("close", (close) => {
        if (this.socket !== socket || this.end || this._failure) return;
        if (!opened) {
          reject(new TokenwireError(`could not connect (close ${close.code})`, { retryable: true }));
        } else if (close.code === 1008 && close.reason.startsWith("unauthorized")) {
          this._fail(new TokenwireError(close.reason.replace(/^unauthorized: /, ""), {
            code: "unauthorized",
            status: 401,
          }));
        } else if (TERMINAL_CLOSE_CODES.has(close.code)) {
          this._fail(new TokenwireError(`the server closed the connection (${close.code} ${close.reason})`));
        } else {
          this._lost(`closed with code ${close.code}`);
        }
      });
    });
  }

  async _resume() {
    const message = this.streamId
      ? { type: "resume", stream_id: this.streamId, after_seq: this.lastSeq }
      : { type: "generate", request_id: this.requestId, ...this.body };
    await this._connect(message);
  }

  async _cancelOverConnection() {
    if (this.socket?.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify({ type: "cancel", stream_id: this.streamId }));
    } else {
      await this.client.cancel(this.streamId);
    }
  }

  _closeConnection() {
    const socket = this.socket;
    this.socket = null;
    if (socket && socket.readyState <= WebSocket.OPEN) socket.close(1000, "client closed");
  }
}
