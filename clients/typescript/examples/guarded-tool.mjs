// A tool for an agent framework (the { description, parameters, execute } shape of the Vercel AI
// SDK, LangChain.js and Mastra tools), whose body runs only when Warrant allows the call: the
// arguments go to Warrant as the context, and a denial is returned to the model as text instead
// of running the tool.
//
//   WARRANT_ADDR=127.0.0.1:50051 node clients/typescript/examples/guarded-tool.mjs
//
// with Warrant serving the bundled policies.
import { WarrantClient, describe } from "@warrant/client";

const warrant = new WarrantClient(process.env.WARRANT_ADDR ?? "127.0.0.1:50051", {
  principal: "ApiKey::pipeline-etl",
});

/** `execute` guarded by Warrant: `action` on the resource `resourceOf(args)` names. */
function guardedTool({ description, parameters, action, resourceOf, execute }) {
  return {
    description,
    parameters,
    async execute(args) {
      const decision = await warrant.check({ action, resource: resourceOf(args) });
      if (!decision.allowed) return `not allowed: ${describe(decision)}`;
      return execute(args);
    },
  };
}

const readDataset = guardedTool({
  description: "Read a dataset's rows.",
  parameters: { type: "object", properties: { dataset: { type: "string" } }, required: ["dataset"] },
  action: "read",
  resourceOf: ({ dataset }) => `Dataset::${dataset}`,
  execute: async ({ dataset }) => `rows of ${dataset}`,
});

console.log(await readDataset.execute({ dataset: "sales-2026" }));
console.log(await readDataset.execute({ dataset: "salaries" }));
warrant.close();
