/**
 * Warrant's client for Node: `WarrantClient` (check, batchCheck, guard, requestApproval,
 * waitForApproval) and the `Decision` it answers with. The MCP guard is `@warrant/client/mcp`.
 */

export { WarrantClient, type ClientOptions, type ApprovalAsk } from "./client.js";
export {
  type ApprovalRequest,
  type ApprovalRequired,
  type Decision,
  Denied,
  Reasons,
  describe,
} from "./decision.js";
export type { CheckInput, Entity, Json } from "./wire.js";
