// Drives the official `openai` Node SDK against the mock directly and through genai-tap, and
// checks that every call gives the SDK the same result both ways.
// Usage: node openai_node.mjs DIRECT_BASE PROXY_BASE
import OpenAI from "openai";
import { isDeepStrictEqual } from "node:util";

const [directBase, proxyBase] = process.argv.slice(2);
const messages = [{ role: "user", content: "Say hello from Node." }];
const client = (base) => new OpenAI({ baseURL: `${base}/v1`, apiKey: "sk-conformance", maxRetries: 0 });

const scenarios = {
  chat: (c) => c.chat.completions.create({ model: "gpt-4o-mini", messages }),
  chat_stream: async (c) => {
    const chunks = [];
    for await (const chunk of await c.chat.completions.create({ model: "gpt-4o-mini", messages, stream: true })) {
      chunks.push(chunk);
    }
    return chunks;
  },
  embeddings: (c) => c.embeddings.create({ model: "text-embedding-3-small", input: "hello world" }),
};

let failed = false;
for (const [name, run] of Object.entries(scenarios)) {
  const want = JSON.parse(JSON.stringify(await run(client(directBase))));
  const got = JSON.parse(JSON.stringify(await run(client(proxyBase))));
  const same = isDeepStrictEqual(want, got);
  failed ||= !same;
  console.log(JSON.stringify({ sdk: "node", scenario: name, same }));
  if (!same) console.error(JSON.stringify({ want, got }));
}
process.exit(failed ? 1 : 0);
