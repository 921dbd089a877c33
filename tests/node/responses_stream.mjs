// The official openai Node SDK, unmodified, against a tokenwire server: a streamed
// response, then a background one dropped and resumed with starting_after.
// Usage: node responses_stream.mjs <base URL>; prints one JSON object on stdout.
import OpenAI from "openai";

const client = new OpenAI({ baseURL: `${process.argv[2]}/v1`, apiKey: "unused", maxRetries: 0 });

const stream = await client.responses.create({ model: "scripted", input: "hi", stream: true });
const types = [];
const numbers = [];
let text = "";
for await (const event of stream) {
  types.push(event.type);
  numbers.push(event.sequence_number);
  if (event.type === "response.output_text.delta") text += event.delta;
}

const background = await client.responses.create({
  model: "scripted",
  input: "long",
  stream: true,
  background: true,
});
let id = null;
let last = -1;
let before = "";
for await (const event of background) {
  if (event.type === "response.created") id = event.response.id;
  last = event.sequence_number;
  if (event.type === "response.output_text.delta") {
    before += event.delta;
    break; // drops the connection
  }
}
const resumed = await client.responses.retrieve(id, { stream: true, starting_after: last });
let after = "";
const resumedNumbers = [];
for await (const event of resumed) {
  resumedNumbers.push(event.sequence_number);
  if (event.type === "response.output_text.delta") after += event.delta;
}
const final = await client.responses.retrieve(id);
console.log(
  JSON.stringify({ types, numbers, text, last, before, after, resumedNumbers, final: final.output_text }),
);
