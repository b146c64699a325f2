// Clients generated from the gateway's live OpenAPI document (tests/clients/test_generated_clients.py makes
// out/schema.d.ts with openapi-typescript and out/hey-api with @hey-api/openapi-ts, then compiles this file
// with tsc under `strict`): each gets vectors, a 401 and a 429, the errors read through their generated types
// (`error.error.code` compiles only if the error responses are typed).
// node out/js/calls.js CLIENT '{"base": "...", "key": "...", "throttled": "...", "model": "...", "texts": [...]}'
import createFetchClient from "openapi-fetch";
import type { paths } from "./out/schema.js";
import { createClient } from "./out/hey-api/client/index.js";
import { createEmbeddings } from "./out/hey-api/sdk.gen.js";
import type { OpenAiError } from "./out/hey-api/types.gen.js";

interface Args {
  base: string;
  key: string;
  throttled: string;
  model: string;
  texts: string[];
}

interface Failure {
  status: number;
  type: string;
  code: string | null | undefined;
}

interface Outcome {
  vectors: number[][];
  unauthorized: Failure | null;
  limited: Failure | null;
}

type Embed = (key: string) => Promise<{ vectors: number[][] | null; failure: Failure | null }>;

function floats(data: { embedding: number[] | string }[]): number[][] {
  return data.map((d) => {
    if (typeof d.embedding === "string") throw new Error("asked for floats, got base64");
    return d.embedding;
  });
}

function openapiFetch(a: Args): Embed {
  return async (key) => {
    const client = createFetchClient<paths>({ baseUrl: a.base, headers: { Authorization: `Bearer ${key}` } });
    const { data, error, response } = await client.POST("/v1/embeddings", {
      body: { model: a.model, input: a.texts, encoding_format: "float" },
    });
    if (data !== undefined) return { vectors: floats(data.data), failure: null };
    return { vectors: null, failure: { status: response.status, type: error.error.type, code: error.error.code } };
  };
}

function heyApi(a: Args): Embed {
  return async (key) => {
    const client = createClient({ baseUrl: a.base, auth: () => key });
    const { data, error, response } = await createEmbeddings({
      client,
      body: { model: a.model, input: a.texts, encoding_format: "float" },
    });
    if (data !== undefined) return { vectors: floats(data.data), failure: null };
    const typed: OpenAiError | undefined = error;
    if (typed === undefined || response === undefined) throw new Error("no response, or no error body");
    return { vectors: null, failure: { status: response.status, type: typed.error.type, code: typed.error.code } };
  };
}

async function run(embed: Embed, a: Args): Promise<Outcome> {
  const ok = await embed(a.key);
  if (ok.vectors === null) throw new Error(`expected vectors, got ${JSON.stringify(ok.failure)}`);
  const unauthorized = (await embed("not-a-key")).failure;
  await embed(a.throttled); // the team's one request of the window
  const limited = (await embed(a.throttled)).failure;
  return { vectors: ok.vectors, unauthorized, limited };
}

const [name, raw] = process.argv.slice(2);
const args = JSON.parse(raw) as Args;
const clients: Record<string, (a: Args) => Embed> = { "openapi-fetch": openapiFetch, "hey-api": heyApi };
process.stdout.write(JSON.stringify(await run(clients[name](args), args)));
