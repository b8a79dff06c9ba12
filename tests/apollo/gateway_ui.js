// The Apollo Gateway of gateway.js on node:http, also serving a web page (the file UI_PAGE) at GET /ui and
// GraphQL subscriptions over WebSocket (graphql-ws, subprotocol graphql-transport-ws) at /graphql/ws, where
// the page subscribes (the Apollo Gateway has no subscriptions): the web app and its GraphQL API share one
// origin behind `ig-gate serve --upstream`, as deployed apps do. `subscription { me { subject risk } }`
// streams the identity ig-gate verified (its X-Auth-* headers on the upgrade request) once a second.
import http from "node:http";
import { readFileSync } from "node:fs";
import { ApolloServer, HeaderMap } from "@apollo/server";
import { makeExecutableSchema } from "@graphql-tools/schema";
import { useServer } from "graphql-ws/use/ws";
import { WebSocketServer } from "ws";
import { composedGateway } from "./composed_gateway.js";

const WS_PATH = "/graphql/ws";

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

const subscriptions = makeExecutableSchema({
  typeDefs: `
    type Me { subject: String risk: String }
    type Query { me: Me }
    type Subscription { me: Me }
  `,
  resolvers: {
    Subscription: {
      me: {
        subscribe: async function* (_, __, { headers }) {
          const me = { subject: headers["x-auth-subject"], risk: headers["x-auth-risk"] };
          for (;;) {
            yield { me };
            await new Promise((resolve) => setTimeout(resolve, 1000));
          }
        },
      },
    },
  },
});
const sockets = new WebSocketServer({ noServer: true });
useServer({ schema: subscriptions, context: (ctx) => ({ headers: ctx.extra.request.headers }) }, sockets);

const httpServer = http.createServer((req, res) => {
  const url = new URL(req.url, "http://127.0.0.1");
  if (req.method === "GET" && url.pathname === "/ui") {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(page);
    return;
  }
  graphql(req, res, url).catch((err) => res.writeHead(500).end(String(err)));
});
httpServer.on("upgrade", (req, socket, head) => {
  if (new URL(req.url, "http://127.0.0.1").pathname !== WS_PATH) {
    socket.destroy();
    return;
  }
  sockets.handleUpgrade(req, socket, head, (ws) => sockets.emit("connection", ws, req));
});
httpServer.listen(Number(process.env.GATEWAY_PORT), "127.0.0.1", () => console.log("gateway with page ready"));
