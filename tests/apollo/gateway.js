// Apollo Gateway composing the subgraph at SUBGRAPH_URL, listening on GATEWAY_PORT.
// Identity headers set by ig-gate (X-Auth-*) are forwarded to the subgraph.
import { ApolloServer } from "@apollo/server";
import { startStandaloneServer } from "@apollo/server/standalone";
import { ApolloGateway, IntrospectAndCompose, RemoteGraphQLDataSource } from "@apollo/gateway";

class ForwardIdentity extends RemoteGraphQLDataSource {
  willSendRequest({ request, context }) {
    for (const [k, v] of Object.entries(context.headers || {})) {
      if (k.startsWith("x-auth-") || k.startsWith("x-forwarded-")) request.http.headers.set(k, v);
    }
  }
}

const gateway = new ApolloGateway({
  supergraphSdl: new IntrospectAndCompose({ subgraphs: [{ name: "accounts", url: process.env.SUBGRAPH_URL }] }),
  buildService: ({ url }) => new ForwardIdentity({ url }),
});
const server = new ApolloServer({ gateway });
const { url } = await startStandaloneServer(server, {
  listen: { port: Number(process.env.GATEWAY_PORT), host: "127.0.0.1" },
  context: async ({ req }) => ({ headers: req.headers }),
});
console.log(`gateway ready at ${url}`);
