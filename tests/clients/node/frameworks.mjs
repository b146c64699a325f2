// LangChain JS and the Vercel AI SDK pointed at the gateway, each as its documentation shows (issue 23).
// Run with the Node.js 22 of node_modules/.bin (these packages need it; tests/clients/test_more_clients.py):
// node frameworks.mjs CASE '{"base": "http://127.0.0.1:PORT", "key": "...", "model": "...", "texts": [...], "query": "..."}'
// Prints {"documents": [[...]], "query": [...], "again": [[...]]} as JSON on stdout: `again` is the documents
// asked a second time (the test checks that the upstream saw them once: a cache hit).
import { OpenAIEmbeddings } from "@langchain/openai";
import { embed, embedMany } from "ai";
import { createOpenAI } from "@ai-sdk/openai";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";

const [name, raw] = process.argv.slice(2);
const a = JSON.parse(raw);

async function aiSdk(model) {
  const docs = await embedMany({ model, values: a.texts, maxRetries: 0 });
  const query = await embed({ model, value: a.query, maxRetries: 0 });
  const again = await embedMany({ model, values: a.texts, maxRetries: 0 });
  return { documents: docs.embeddings, query: query.embedding, again: again.embeddings };
}

const cases = {
  async langchain() {
    const embedder = new OpenAIEmbeddings({ model: a.model, apiKey: a.key, configuration: { baseURL: a.base + "/v1" } });
    const documents = await embedder.embedDocuments(a.texts);
    const query = await embedder.embedQuery(a.query);
    return { documents, query, again: await embedder.embedDocuments(a.texts) };
  },
  async langchain_rate_limited() {
    // A team allowed 2 requests a minute: the third gets a 429 whose Retry-After LangChain waits out (it
    // gives up at once when Retry-After is above 60 s), then succeeds.
    const embedder = new OpenAIEmbeddings({ model: a.model, apiKey: a.key, configuration: { baseURL: a.base + "/v1" } });
    const started = Date.now();
    const documents = [];
    for (const text of a.texts) documents.push(await embedder.embedQuery(text));
    return { documents, seconds: (Date.now() - started) / 1000 };
  },
  async ai_sdk_openai() {
    const openai = createOpenAI({ baseURL: a.base + "/v1", apiKey: a.key });
    return aiSdk(openai.embedding(a.model));
  },
  async ai_sdk_openai_compatible() {
    const provider = createOpenAICompatible({ name: "gateway", baseURL: a.base + "/v1", apiKey: a.key });
    return aiSdk(provider.embeddingModel(a.model));
  },
};

const out = await cases[name]();
process.stdout.write(JSON.stringify(out));
