// One federated subgraph: a query and a mutation. Port from SUBGRAPH_PORT.
import { ApolloServer } from "@apollo/server";
import { startStandaloneServer } from "@apollo/server/standalone";
import { buildSubgraphSchema } from "@apollo/subgraph";
import { parse } from "graphql";

const typeDefs = parse(`
  extend schema @link(url: "https://specs.apollo.dev/federation/v2.3", import: ["@key"])
  type Account @key(fields: "id") { id: ID! name: String! }
  type Query { me: Account! headers: [String!]! }
  type Mutation { rename(name: String!): Account! }
`);

const resolvers = {
  Query: {
    me: () => ({ id: "1", name: "Alice" }),
    headers: (_, __, ctx) => Object.entries(ctx.headers)
      .filter(([k]) => k.startsWith("x-auth-") || k.startsWith("x-forwarded-"))
      .map(([k, v]) => `${k}=${v}`),
  },
  Mutation: { rename: (_, { name }) => ({ id: "1", name }) },
};

const server = new ApolloServer({ schema: buildSubgraphSchema([{ typeDefs, resolvers }]) });
const { url } = await startStandaloneServer(server, {
  listen: { port: Number(process.env.SUBGRAPH_PORT), host: "127.0.0.1" },
  context: async ({ req }) => ({ headers: req.headers }),
});
console.log(`subgraph ready at ${url}`);
