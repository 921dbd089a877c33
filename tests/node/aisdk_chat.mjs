// The AI SDK's own chat transport, unmodified, against a tokenwire server: what useChat runs
// (DefaultChatTransport.sendMessages / reconnectToStream, readUIMessageStream) and the stop
// endpoint. Usage: node aisdk_chat.mjs <scenario> '<JSON options>'; prints one JSON object.
//   options: api (send), resumeApi (reconnect; default api), stopUrl (the stop route's base;
//   default api), headers, resumeHeaders, prompt, parts, messages, dropMessages, chatId.
import { DefaultChatTransport, readUIMessageStream } from "ai";

const [scenario, raw] = process.argv.slice(2);
const options = JSON.parse(raw ?? "{}");
const chatId = options.chatId ?? `chat-${crypto.randomUUID()}`;
const resumeApi = options.resumeApi ?? options.api;

function transport(api, headers) {
  return new DefaultChatTransport({
    api,
    headers,
    prepareSendMessagesRequest: options.dropMessages
      ? ({ id, trigger }) => ({ body: { id, trigger } })
      : undefined,
  });
}

function userMessage() {
  return {
    id: "u1",
    role: "user",
    parts: options.parts ?? [{ type: "text", text: options.prompt ?? "hi" }],
  };
}

// Reads a chunk stream to its end (or until `until(chunks)` says stop): the chunks, the last
// message readUIMessageStream built from them, and the error that ended the read, if any.
async function read(stream, until) {
  const [raw, forMessages] = stream.tee();
  const chunks = [];
  let message = null;
  let error = null;
  const building = (async () => {
    for await (const built of readUIMessageStream({ stream: forMessages })) message = built;
  })().catch(() => {});
  const reader = raw.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      if (until && until(chunks)) break;
    }
  } catch (caught) {
    error = String(caught?.message ?? caught);
  }
  if (!until) await building;
  return { chunks, message, error };
}

const textOf = (message) =>
  (message?.parts ?? []).filter((p) => p.type === "text").map((p) => p.text).join("");
const deltas = (chunks) =>
  chunks.filter((c) => c.type === "text-delta").map((c) => c.delta).join("");

async function send(api, headers, abortSignal) {
  return transport(api, headers).sendMessages({
    trigger: "submit-message",
    chatId,
    messageId: undefined,
    messages: options.messages ?? [userMessage()],
    abortSignal,
  });
}

async function reconnect(headers) {
  const stream = await transport(resumeApi, headers).reconnectToStream({ chatId });
  if (stream === null) return null;
  return read(stream);
}

async function stop(headers) {
  const base = options.stopUrl ?? resumeApi;
  const response = await fetch(`${base}/${encodeURIComponent(chatId)}/stop`, {
    method: "POST",
    headers,
  });
  return { status: response.status, body: await response.json() };
}

const out = { chatId };
if (scenario === "send") {
  // One whole turn: every chunk, and the message useChat would show.
  try {
    const { chunks, message, error } = await read(await send(options.api, options.headers));
    Object.assign(out, { chunks, message, error });
  } catch (caught) {
    out.thrown = { message: String(caught?.message), status: caught?.statusCode ?? null };
  }
  out.afterEnd = await reconnect(options.headers);
} else if (scenario === "resume") {
  // stop() in the SDK aborts the fetch: a disconnect. The generation runs on; a reconnect
  // replays the message from its start and follows it to the end.
  const controller = new AbortController();
  const first = await read(
    await send(options.api, options.headers, controller.signal),
    (chunks) => chunks.filter((c) => c.type === "text-delta").length >= 3,
  );
  controller.abort();
  out.before = deltas(first.chunks);
  const resumed = await reconnect(options.headers);
  out.resumedTypes = resumed.chunks.map((c) => c.type);
  out.resumedText = textOf(resumed.message);
  out.resumedMessageId = resumed.message.id;
  out.sentMessageId = first.chunks[0].messageId;
  out.afterEnd = await reconnect(options.headers);
} else if (scenario === "stop") {
  // The stop endpoint cancels the generation: the open stream ends with abort, and there
  // is nothing to resume after.
  const stream = await send(options.api, options.headers);
  const reading = read(stream);
  await new Promise((resolve) => setTimeout(resolve, 150));
  out.stop = await stop(options.headers);
  const { chunks } = await reading;
  out.types = chunks.map((c) => c.type);
  out.text = deltas(chunks);
  out.afterEnd = await reconnect(options.headers);
  out.stopAgain = await stop(options.headers);
} else if (scenario === "foreign") {
  // Another key neither resumes nor stops this key's chat; its own stream is unaffected.
  const stream = await send(options.api, options.headers);
  const reading = read(stream);
  await new Promise((resolve) => setTimeout(resolve, 100));
  out.foreignResume = await reconnect(options.resumeHeaders);
  out.foreignStop = await stop(options.resumeHeaders);
  const { chunks } = await reading;
  out.types = chunks.map((c) => c.type);
  out.text = deltas(chunks);
} else {
  throw new Error(`unknown scenario ${scenario}`);
}
console.log(JSON.stringify(out));
