// The entry of clients/web/vendor/ai.mjs, the AI SDK bundle the "AI SDK" page imports (built by
// vendor_web.py with esbuild from the pinned `ai` package): its own chat transports and the
// reducer that useChat runs on their chunk streams.
export { DefaultChatTransport, WebSocketChatTransport, readUIMessageStream } from 'ai';
