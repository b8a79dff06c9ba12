// Apollo Server with GraphQL over WebSocket as Apollo documents it: HTTP through Apollo Server and, on the
// same port, graphql-ws (graphql-transport-ws) or subscriptions-transport-ws (legacy graphql-ws), picked
// by the subprotocol the client offers. `renames` counts the mutations executed, `sockets` the open
// WebSockets (to prove what the gate kept away or closed). Port from WS_PORT.
import http from "node:http";
import { ApolloServer, HeaderMap } from "@apollo/server";
import { makeExecutableSchema } from "@graphql-tools/schema";
import { execute, subscribe } from "graphql";
import { useServer } from "graphql-ws/use/ws";
import { SubscriptionServer } from "subscriptions-transport-ws";
import { WebSocketServer } from "ws";

const modern = new WebSocketServer({ noServer: true });
const legacy = new WebSocketServer({ noServer: true });
let renames = 0;

const schema = makeExecutableSchema({
  typeDefs: `
    type Query { renames: Int! sockets: Int! }
    type Mutation { rename(name: String!): String! }
    type Subscription { ticks: Int! }
  `,
  resolvers: {
    Query: { renames: () => renames, sockets: () => modern.clients.size + legacy.clients.size },
    Mutation: { rename: (_, { name }) => { renames += 1; return name; } },
    Subscription: {
      ticks: {
        subscribe: async function* () {
          for (let i = 0; ; i += 1) {
            yield { ticks: i };
            await new Promise((resolve) => setTimeout(resolve, 200));
          }
        },
      },
    },
  },
});

const apollo = new ApolloServer({ schema });
await apollo.start();

const server = http.createServer(async (req, res) => {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString();
  const headers = new HeaderMap();
  for (const [name, value] of Object.entries(req.headers)) headers.set(name, [].concat(value).join(", "));
  const result = await apollo.executeHTTPGraphQLRequest({
    httpGraphQLRequest: {
      method: req.method, headers, search: new URL(req.url, "http://upstream").search,
      body: text ? JSON.parse(text) : undefined,
    },
    context: async () => ({}),
  });
  res.statusCode = result.status || 200;
  for (const [name, value] of result.headers) res.setHeader(name, value);
  if (result.body.kind === "complete") {
    res.end(result.body.string);
  } else {
    for await (const chunk of result.body.asyncIterator) res.write(chunk);
    res.end();
  }
});

useServer({ schema }, modern);
SubscriptionServer.create({ schema, execute, subscribe }, legacy);
server.on("upgrade", (req, socket, head) => {
  const offered = (req.headers["sec-websocket-protocol"] || "").split(",").map((p) => p.trim());
  const wss = offered.includes("graphql-transport-ws") ? modern : offered.includes("graphql-ws") ? legacy : null;
  if (wss === null) {
    socket.destroy();
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => wss.emit("connection", ws, req));
});
server.listen(Number(process.env.WS_PORT), "127.0.0.1", () => console.log("subscriptions server ready"));
