// Apollo Gateway composing the subgraph at SUBGRAPH_URL, listening on GATEWAY_PORT.
// Identity headers set by ig-gate (X-Auth-*) are forwarded to the subgraph (composed_gateway.js).
import { ApolloServer } from "@apollo/server";
import { startStandaloneServer } from "@apollo/server/standalone";
import { composedGateway } from "./composed_gateway.js";

const server = new ApolloServer({ gateway: composedGateway() });
const { url } = await startStandaloneServer(server, {
  listen: { port: Number(process.env.GATEWAY_PORT), host: "127.0.0.1" },
  context: async ({ req }) => ({ headers: req.headers }),
});
console.log(`gateway ready at ${url}`);
