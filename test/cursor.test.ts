import assert from "node:assert/strict";
import { test } from "node:test";
import { compareStreamIds, parseFrame, subscribeFrames } from "../src/datastream/protocol.js";
import { ReplayCursor } from "../src/replication/cursor.js";

test("the cursor advances only over a contiguous prefix of applied changes", () => {
  const cursor = new ReplayCursor();
  const a = cursor.track("100-0");
  const b = cursor.track("200-0");
  const c = cursor.track("300-0");
  assert.equal(cursor.committed, undefined, "tracking alone commits nothing");
  cursor.complete(c);
  assert.equal(cursor.committed, undefined, "a later change cannot move the cursor past an earlier one");
  cursor.complete(a);
  assert.equal(cursor.committed, "100-0");
  cursor.complete(b);
  assert.equal(cursor.committed, "300-0", "completing the gap jumps over everything applied behind it");
  assert.equal(cursor.pendingCount, 0);
});

test("the cursor ignores re-delivered ids at or below its position", () => {
  const cursor = new ReplayCursor();
  cursor.complete(cursor.track("500-3"));
  assert.equal(cursor.track("500-3"), undefined);
  assert.equal(cursor.track("499-9"), undefined);
  assert.equal(cursor.track(""), undefined);
  assert.equal(cursor.track(undefined), undefined);
  cursor.complete(cursor.track("500-4"));
  assert.equal(cursor.committed, "500-4");
  cursor.reset();
  assert.equal(cursor.committed, undefined);
});

test("stream ids compare numerically, then as text", () => {
  assert.ok(compareStreamIds("90-0", "100-0") < 0);
  assert.ok(compareStreamIds("100-2", "100-10") < 0);
  assert.equal(compareStreamIds("100-1", "100-1"), 0);
  assert.ok(compareStreamIds("b", "a") > 0);
  // Beyond 2^53 (BigInt), against plain numbers, leading zeros, and ids that are not `<digits>-<digits>`.
  assert.ok(compareStreamIds("9007199254740993-0", "9007199254740992-5") > 0);
  assert.equal(compareStreamIds("0000000000000000001-0", "1-0"), 0);
  assert.ok(compareStreamIds("1-99999999999999999999", "2-0") < 0);
  assert.ok(compareStreamIds("1-", "1-0") !== 0);
  assert.ok(compareStreamIds("-1", "1-0") !== 0);
  assert.ok(compareStreamIds("1-2-3", "1-2") > 0);
});

test("subscribe frames carry replay_from only when resuming", () => {
  const fresh = subscribeFrames().map((f) => JSON.parse(f));
  assert.deepEqual(
    fresh.map((f) => f.data.entity_type),
    ["rulesengine.Companies", "rulesengine.Users", "rulesengine.Flags"],
  );
  assert.ok(fresh.every((f) => f.data.action === "start" && !("replay_from" in f.data)));
  const resumed = subscribeFrames("17-3").map((f) => JSON.parse(f));
  assert.ok(resumed.every((f) => f.data.replay_from === "17-3"));
});

test("malformed frames are rejected with a reason", () => {
  assert.throws(() => parseFrame("{"), /not JSON/);
  assert.throws(() => parseFrame("[]"), /not a JSON object/);
  assert.throws(() => parseFrame('{"message_type":"full"}'), /no entity_type/);
  assert.throws(() => parseFrame('{"entity_type":"rulesengine.Company"}'), /no message_type/);
  assert.throws(() => parseFrame('{"entity_type":"x","message_type":"full","stream_id":5}'), /stream_id/);
  const ok = parseFrame('{"entity_type":"rulesengine.Flag","message_type":"full","data":{}}');
  assert.equal(ok.entity_type, "rulesengine.Flag");
});
