// The Apollo Gateway composing the subgraph at SUBGRAPH_URL. Identity headers set by ig-gate (X-Auth-*)
// and X-Forwarded-* are forwarded to the subgraph. Used by gateway.js and gateway_ui.js.
import { ApolloGateway, IntrospectAndCompose, RemoteGraphQLDataSource } from "@apollo/gateway";

class ForwardIdentity extends RemoteGraphQLDataSource {
  willSendRequest({ request, context }) {
    for (const [k, v] of Object.entries(context.headers || {})) {
      if (k.startsWith("x-auth-") || k.startsWith("x-forwarded-")) request.http.headers.set(k, v);
    }
  }
}

export function composedGateway() {
  return new ApolloGateway({
    supergraphSdl: new IntrospectAndCompose({ subgraphs: [{ name: "accounts", url: process.env.SUBGRAPH_URL }] }),
    buildService: ({ url }) => new ForwardIdentity({ url }),
  });
}
