/**
 * Malformed frames, unknown entity types and invalid entities on the datastream (issue 4): each is logged once with
 * its reason, counted in /debug messages.skipped, and skipped; the connection stays up, the entity an invalid change
 * targeted keeps its last valid state, and later changes are applied (zero differences, SDK reads the new values).
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { bulk, churn, markerChange, type Stack, sdkSeesMarker, startStack } from "./helpers/faults.js";
import { waitFor } from "./helpers/redis.js";

const envelope = (entityType: string, messageType: string, data: unknown, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ entity_type: entityType, message_type: messageType, data, ...extra });

const BAD_FRAMES: [string, string][] = [
  ["not JSON", "{not json"],
  ["a JSON array", "[1,2,3]"],
  ["no entity_type", JSON.stringify({ message_type: "full", data: {} })],
  [
    "stream_id of the wrong type",
    JSON.stringify({ entity_type: "rulesengine.Company", message_type: "full", stream_id: 5 }),
  ],
  ["unknown entity type", envelope("rulesengine.Widget", "full", { id: "w1" })],
  [
    "unknown message type",
    envelope("rulesengine.Company", "upsert", { id: "comp_globex" }, { entity_id: "comp_globex" }),
  ],
  ["company without an id", envelope("rulesengine.Company", "full", { keys: { domain: "x.example" } })],
  [
    "company full whose entity_id differs from data.id",
    envelope("rulesengine.Company", "full", { id: "comp_other" }, { entity_id: "comp_globex" }),
  ],
  [
    "invalid company (traits not a list)",
    envelope(
      "rulesengine.Company",
      "full",
      { id: "comp_globex", account_id: "a", environment_id: "e", keys: { domain: "globex.example" }, traits: "nope" },
      { entity_id: "comp_globex" },
    ),
  ],
  [
    "invalid company partial (traits not a list)",
    envelope("rulesengine.Company", "partial", { id: "comp_acme", traits: "nope" }, { entity_id: "comp_acme" }),
  ],
  [
    "invalid user (keys not an object)",
    envelope(
      "rulesengine.User",
      "full",
      { id: "user_001", account_id: "a", environment_id: "e", keys: 5 },
      { entity_id: "user_001" },
    ),
  ],
  [
    "invalid flag (default_value not a boolean)",
    envelope("rulesengine.Flag", "full", {
      id: "f",
      account_id: "a",
      environment_id: "e",
      key: "dashboards",
      rules: [],
      default_value: "yes",
    }),
  ],
  ["flags snapshot that is not a list", envelope("rulesengine.Flags", "full", { flags: "nope" })],
  ["flag delete without key or id", envelope("rulesengine.Flag", "delete", {})],
];

describe("faults: malformed and invalid datastream input", () => {
  let s: Stack;
  before(async () => {
    s = await startStack({ env: { NUM_WORKERS: "2" } });
    await s.rep.waitReady();
  });
  after(async () => s?.close());

  test(`${BAD_FRAMES.length} bad frames amid changes: each counted, logged once with its reason, skipped`, async () => {
    const skipped = await s.debugNumber("messages.skipped");
    const connections = await s.debugNumber("replay.connections");
    const warnsBefore = s.rep.logs.filter((l) => /skipping/.test(l)).length;
    await bulk(s, churn(300, { tag: "pre", seed: 31 }));
    for (const [, frame] of BAD_FRAMES) {
      await s.admin("POST", "/raw", { frame });
    }
    await bulk(s, churn(300, { tag: "post", seed: 32 }));
    await markerChange(s);
    await s.waitConsistent();
    await waitFor(async () => (await s.debugNumber("messages.skipped")) === skipped + BAD_FRAMES.length, {
      what: `messages.skipped to grow by ${BAD_FRAMES.length}`,
      timeoutMs: 5000,
    }).catch(async (err) => {
      throw new Error(`${(err as Error).message}: ${JSON.stringify((await s.rep.debug()).messages)}`);
    });
    const warns = s.rep.logs.filter((l) => /skipping/.test(l)).slice(warnsBefore);
    assert.equal(warns.length, BAD_FRAMES.length, `one warning per bad frame:\n${warns.join("\n")}`);
    for (const line of warns) {
      const entry = JSON.parse(line) as Record<string, unknown>;
      assert.equal(entry.level, "warn");
      assert.ok(typeof entry.reason === "string" && entry.reason.length > 0, `a reason in ${line}`);
    }
    assert.equal(await s.debugNumber("replay.connections"), connections, "the stream went on: no reconnect");
    assert.equal(await s.debugNumber("messages.dropped"), 0);
    assert.equal((await s.rep.ready()).status, 200);
    await sdkSeesMarker(s);
  });
});
