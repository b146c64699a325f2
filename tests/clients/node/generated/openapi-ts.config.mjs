// @hey-api/openapi-ts from the live document of a running gateway (OPENAPI_URL), ESM with .js imports
// (tsconfig.json's nodenext), the fetch client it ships.
export default {
  input: process.env.OPENAPI_URL,
  output: { path: "out/hey-api", importFileExtension: ".js" },
  plugins: ["@hey-api/client-fetch", "@hey-api/typescript", "@hey-api/sdk"],
  logs: { level: "warn" },
};
