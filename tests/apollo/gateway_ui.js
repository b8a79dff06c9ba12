// The Apollo Gateway of gateway.js on node:http, also serving a web page (the file UI_PAGE) at GET /ui:
// the web app and its GraphQL API share one origin behind `ig-gate serve --upstream`, as deployed apps do.
import http from "node:http";
import { readFileSync } from "node:fs";
import { ApolloServer, HeaderMap } from "@apollo/server";
import { composedGateway } from "./composed_gateway.js";

const server = new ApolloServer({ gateway: composedGateway() });
await server.start();
const page = readFileSync(process.env.UI_PAGE);

async function graphql(req, res, url) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString();
  let body;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    res.writeHead(400, { "content-type": "application/json" }).end('{"errors":[{"message":"body is not JSON"}]}');
    return;
  }
  const headers = new HeaderMap();
  for (const [k, v] of Object.entries(req.headers)) headers.set(k, Array.isArray(v) ? v.join(", ") : v);
  const result = await server.executeHTTPGraphQLRequest({
    httpGraphQLRequest: { method: req.method.toUpperCase(), headers, search: url.search, body },
    context: async () => ({ headers: req.headers }),
  });
  for (const [k, v] of result.headers) res.setHeader(k, v);
  res.statusCode = result.status || 200;
  if (result.body.kind === "complete") {
    res.end(result.body.string);
    return;
  }
  for await (const chunk of result.body.asyncIterator) res.write(chunk);
  res.end();
}

http.createServer((req, res) => {
  const url = new URL(req.url, "http://127.0.0.1");
  if (req.method === "GET" && url.pathname === "/ui") {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(page);
    return;
  }
  graphql(req, res, url).catch((err) => res.writeHead(500).end(String(err)));
}).listen(Number(process.env.GATEWAY_PORT), "127.0.0.1", () => console.log("gateway with page ready"));
