// The openai npm package pointed at the gateway, as its README shows (tests/clients/test_clients.py runs this).
// node embed.mjs CASE '{"base": "http://127.0.0.1:PORT", "key": "...", "model": "...", "texts": [...], "query": "..."}'
// Prints the vectors (and what else the case returns) as JSON on stdout.
import OpenAI from "openai";

const [name, raw] = process.argv.slice(2);
const a = JSON.parse(raw);

const cases = {
  async embeddings() {
    const client = new OpenAI({ baseURL: a.base + "/v1", apiKey: a.key });
    // The SDK asks for base64 unless told otherwise, and decodes it.
    const docs = await client.embeddings.create({ model: a.model, input: a.texts });
    const query = await client.embeddings.create({ model: a.model, input: a.query, encoding_format: "float" });
    const model = await client.models.retrieve(a.model);
    return {
      documents: docs.data.map((d) => Array.from(d.embedding)),
      query: Array.from(query.data[0].embedding),
      model: { id: model.id, object: model.object, owned_by: model.owned_by },
    };
  },
  async retried429() {
    // A team allowed one request per window: the second gets a 429, retried by the SDK after Retry-After.
    const client = new OpenAI({ baseURL: a.base + "/v1", apiKey: a.key, maxRetries: 3 });
    const first = await client.embeddings.create({ model: a.model, input: a.texts[0], encoding_format: "float" });
    const second = await client.embeddings.create({ model: a.model, input: a.texts[1], encoding_format: "float" });
    return { documents: [first.data[0].embedding, second.data[0].embedding] };
  },
  async errors() {
    const client = new OpenAI({ baseURL: a.base + "/v1", apiKey: a.key, maxRetries: 0 });
    try {
      await client.models.retrieve("no-such-model");
      return { unknown_model: null };
    } catch (err) {
      return { unknown_model: { class: err.constructor.name, status: err.status, type: err.type, code: err.code } };
    }
  },
};

const out = await cases[name]();
process.stdout.write(JSON.stringify(out));
