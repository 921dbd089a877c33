// The AI SDK's WebSocketChatTransport, unmodified (the `ws` package as its WebSocket), against
// tokenwire's GET /api/chat/ws. One scenario per run; prints one JSON object on stdout.
//
//   node ws_chat.mjs send   <base> <prompt> [token]      a turn: its chunks and final message
//   node ws_chat.mjs many   <base> <prompt> [token]      three turns at once on one socket
//   node ws_chat.mjs abort  <base> <prompt> <n> [token]  abort after n text deltas, then resume
//   node ws_chat.mjs drop   <base> <prompt> <n> <resumeBase> [token]
//        send on <base>, drop the socket after n text deltas, resume on <resumeBase>
//   node ws_chat.mjs resume <base> <chatId> [token]      resume a chat (null: no active stream)
//
// A token is passed as the WebSocket subprotocol beside "tokenwire" (what a browser can do).
import { WebSocketChatTransport, readUIMessageStream } from 'ai';
import WebSocket from 'ws';

const [scenario, base, ...args] = process.argv.slice(2);

function transportFor(url, token) {
  return new WebSocketChatTransport({
    url: url.replace(/^http/, 'ws') + '/api/chat/ws',
    webSocket: WebSocket,
    ...(token ? { protocols: ['tokenwire', token] } : {}),
  });
}

function userMessage(text) {
  return { id: 'u-' + Math.random().toString(36).slice(2), role: 'user', parts: [{ type: 'text', text }] };
}

function send(transport, chatId, prompt, abortSignal) {
  return transport.sendMessages({
    chatId,
    messages: [userMessage(prompt)],
    trigger: 'submit-message',
    messageId: undefined,
    abortSignal,
  });
}

// Read a chunk stream through the SDK's own reducer (what useChat runs), keeping the chunks.
async function reduce(stream, { onChunk } = {}) {
  const chunks = [];
  const tapped = stream.pipeThrough(
    new TransformStream({
      transform(chunk, controller) {
        chunks.push(chunk);
        onChunk?.(chunk, chunks);
        controller.enqueue(chunk);
      },
    }),
  );
  let message;
  let error;
  try {
    for await (const snapshot of readUIMessageStream({ stream: tapped, terminateOnError: true })) {
      message = snapshot;
    }
  } catch (e) {
    error = String(e?.message ?? e);
  }
  return { chunks, message, error };
}

const textOf = message =>
  (message?.parts ?? []).filter(p => p.type === 'text').map(p => p.text).join('');
const deltas = chunks => chunks.filter(c => c.type === 'text-delta').map(c => c.delta).join('');

function summary({ chunks, message, error }) {
  return {
    types: chunks.map(c => c.type),
    chunks,
    text: textOf(message),
    reasoning: (message?.parts ?? []).filter(p => p.type === 'reasoning').map(p => p.text).join(''),
    tools: (message?.parts ?? []).filter(p => p.type.startsWith('tool-')),
    messageId: message?.id,
    error: error ?? null,
  };
}

async function main() {
  const out = {};
  if (scenario === 'send') {
    const [prompt, token] = args;
    const transport = transportFor(base, token);
    try {
      Object.assign(out, summary(await reduce(await send(transport, 'chat-send', prompt))));
    } catch (e) {
      out.thrown = String(e?.message ?? e);
    }
    transport.close();
  } else if (scenario === 'many') {
    const [prompt, token] = args;
    const transport = transportFor(base, token);
    const runs = await Promise.all(
      ['m1', 'm2', 'm3'].map(async id => summary(await reduce(await send(transport, id, prompt)))),
    );
    out.texts = runs.map(r => r.text);
    out.errors = runs.map(r => r.error ?? null);
    transport.close();
  } else if (scenario === 'abort') {
    const [prompt, n, token] = args;
    const transport = transportFor(base, token);
    const controller = new AbortController();
    const stream = await send(transport, 'chat-abort', prompt, controller.signal);
    const read = await reduce(stream, {
      onChunk: (chunk, chunks) => {
        if (chunks.filter(c => c.type === 'text-delta').length === Number(n)) controller.abort();
      },
    });
    out.before = deltas(read.chunks);
    out.error = read.error ?? null;
    // the server cancelled the generation: once it has ended, there is nothing to resume
    const deadline = Date.now() + 5000;
    let resumed;
    do {
      await new Promise(r => setTimeout(r, 50));
      resumed = await transport.reconnectToStream({ chatId: 'chat-abort' });
      if (resumed !== null) {
        const replay = summary(await reduce(resumed));
        out.replay = replay.text;
        out.finish = replay.chunks.at(-1);
      }
    } while (resumed !== null && Date.now() < deadline);
    out.resumedAfterEnd = resumed;
    transport.close();
  } else if (scenario === 'drop') {
    const [prompt, n, resumeBase, token] = args;
    const chatId = 'chat-drop-' + Math.random().toString(36).slice(2);
    const first = transportFor(base, token);
    const stream = await send(first, chatId, prompt);
    const read = await reduce(stream, {
      onChunk: (chunk, chunks) => {
        if (chunks.filter(c => c.type === 'text-delta').length === Number(n)) first.close();
      },
    });
    out.before = deltas(read.chunks);
    out.dropError = read.error ?? null;
    const second = transportFor(resumeBase, token);
    const resumed = await second.reconnectToStream({ chatId });
    Object.assign(out, summary(await reduce(resumed)));
    out.firstMessageId = read.chunks.find(c => c.type === 'start')?.messageId;
    out.afterEnd = await second.reconnectToStream({ chatId });
    second.close();
  } else if (scenario === 'resume') {
    const [chatId, token] = args;
    const transport = transportFor(base, token);
    try {
      const resumed = await transport.reconnectToStream({ chatId });
      out.resumed = resumed === null ? null : summary(await reduce(resumed));
    } catch (e) {
      out.thrown = String(e?.message ?? e);
    }
    transport.close();
  } else {
    throw new Error(`unknown scenario ${scenario}`);
  }
  process.stdout.write(JSON.stringify(out));
}

await main();
