/**
 * SIGTERM during a burst (issue 4, docs/design/decisions.md "Clean lifecycle"): intake stops, every change received
 * before the signal is written to Redis, the cursor is flushed, the process exits 0; the next replicator resumes by
 * replay (no full reload) and ends with zero differences and the SDK reading the new values. Also with Redis stuck: the
 * drain is bounded by SHUTDOWN_TIMEOUT, the exit is still 0, and the changes that could not be written are replayed
 * later. And during a synchronous load, whose held changes can only be applied after it: the process stops at once
 * instead of waiting out SHUTDOWN_TIMEOUT (Kubernetes' grace period at the defaults) for them.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  type BulkChange,
  background,
  company,
  logsMatching,
  markerChange,
  type Stack,
  sdkSeesMarker,
  sleep,
  startStack,
  templates,
} from "./helpers/faults.js";
import { waitFor } from "./helpers/redis.js";

/** `n` creations of distinct companies `${tag}-0` … in order: what is in Redis must be a prefix of them. */
function creations(tag: string, n: number): BulkChange[] {
  const tpl = templates().company;
  return Array.from({ length: n }, (_, i) => ({
    method: "PUT",
    path: `/companies/${tag}-${i}`,
    body: company(tpl, `${tag}-${i}`, i % 2 ? "eu" : "us"),
  }));
}

async function presentPrefix(s: Stack, tag: string, n: number): Promise<{ count: number; contiguous: boolean }> {
  const keys = Array.from({ length: n }, (_, i) => `schematic:company:4b54a537:${tag}-${i}`);
  const values = await s.client.mget(keys);
  const count = values.filter((v) => v !== null).length;
  const firstMissing = values.indexOf(null);
  return { count, contiguous: firstMissing === -1 || values.slice(firstMissing).every((v) => v === null) };
}

describe("faults: SIGTERM during a burst", () => {
  let s: Stack;
  before(async () => {
    s = await startStack({
      env: { NUM_WORKERS: "2", BATCH_SIZE: "5", REDIS_READ_TIMEOUT: "500ms", REDIS_WRITE_TIMEOUT: "500ms" },
    });
    await s.rep.waitReady();
  });
  after(async () => s?.close());

  test("every change received before the signal is in Redis, the cursor is flushed, exit 0, resume by replay", async () => {
    const N = 4000;
    const receivedBefore = await s.debugNumber("messages.received");
    const sending = background(s, creations("term", N), 500, 0);
    await waitFor(async () => (await s.debugNumber("messages.received")) - receivedBefore > 1000, {
      what: "the burst to be flowing",
    });
    const old = s.rep;
    const receivedAtSignal = (await s.debugNumber("messages.received")) - receivedBefore;
    const code = await old.stop("SIGTERM");
    assert.equal(code, 0, old.logs.slice(-10).join("\n"));
    await sending;

    // What the process received before the signal is all in Redis, in stream order (a prefix, no gap).
    const present = await presentPrefix(s, "term", N);
    assert.ok(present.contiguous, "the companies in Redis are a prefix of the stream");
    assert.ok(
      present.count >= receivedAtSignal,
      `${present.count} applied >= ${receivedAtSignal} received at the signal`,
    );
    // The cursor was flushed at exit: Redis holds exactly what the last log line says.
    const stopped = logsMatching(old, /replicator stopped/).at(-1);
    assert.ok(stopped?.cursor, "the final cursor is logged");
    assert.equal(await s.client.get("schematic:datastream:replay_cursor"), stopped.cursor);
    assert.ok(!logsMatching(old, /shutdown timeout reached/).length, "the drain finished in time");
    const counts = stopped.messages as Record<string, number>;
    assert.equal(counts.dropped, 0, "the final log line counts messages; none dropped");
    assert.ok((counts.received ?? 0) >= receivedAtSignal && (counts.applied ?? 0) > 0, JSON.stringify(counts));

    const rep = await s.startReplicator();
    await rep.waitReady();
    await markerChange(s);
    await s.waitConsistent();
    await sdkSeesMarker(s);
    const replay = (await rep.debug()).replay as Record<string, number>;
    assert.equal(replay.full_reloads, 0, "no full reload after a clean shutdown");
    assert.equal(replay.replays_engaged, 1);
  });

  test("SIGTERM while Redis is stuck: bounded by SHUTDOWN_TIMEOUT, exit 0, nothing lost after a restart", async () => {
    await s.rep.stop("SIGTERM");
    const rep = await s.startReplicator({ SHUTDOWN_TIMEOUT: "1s" });
    await rep.waitReady();
    const sending = background(s, creations("stuck", 1500), 500, 0);
    await waitFor(async () => (await s.debugNumber("messages.received")) > 300, { what: "the burst to be flowing" });
    const redisPid = s.redis.process.pid!;
    process.kill(redisPid, "SIGSTOP");
    let code: number | null;
    try {
      await sleep(300);
      const started = Date.now();
      code = await rep.stop("SIGTERM");
      assert.ok(Date.now() - started < 20_000, "the shutdown is bounded");
    } finally {
      process.kill(redisPid, "SIGCONT");
    }
    assert.equal(code, 0, rep.logs.slice(-10).join("\n"));
    assert.equal(logsMatching(rep, /shutdown timeout reached/).length, 1, "the drain gave up at SHUTDOWN_TIMEOUT");
    await sending;
    const next = await s.startReplicator();
    await next.waitReady();
    await markerChange(s);
    await s.waitConsistent();
    await sdkSeesMarker(s);
  });

  test("SIGTERM during a synchronous load with held changes: exit 0 at once, lease released, nothing lost", {
    timeout: 180_000,
  }, async () => {
    await s.rep.stop("SIGTERM");
    const rep = await s.startReplicator({
      SHUTDOWN_TIMEOUT: "120s",
      USE_ASYNC_LOADING: "false",
      ASYNC_LOADER_PAGE_SIZE: "10",
    });
    await rep.waitReady();
    // /ready may say 200 before the datastream session is open (the data set is vouched for): a reload sent then
    // would reach no connection.
    await waitFor(async () => (await s.debugNumber("replay.connections")) > 0, { what: "the datastream session" });
    // Every REST page now takes a second: the reload the server asks for runs for many seconds, holding the stream's
    // changes until it completes.
    await s.admin("POST", "/faults", { rest_latency_ms: 1000 });
    await s.admin("POST", "/reload");
    const sending = background(s, creations("held", 300), 10, 50);
    await waitFor(async () => ((await rep.debug()).queues as Record<string, number>).held! > 0, {
      what: "changes held during the load",
    });
    rep.process.kill("SIGTERM");
    let limit: NodeJS.Timeout | undefined;
    const tooLong = new Promise<string>((resolve) => {
      limit = setTimeout(() => resolve("still running after 60 s"), 60_000);
    });
    const code = await Promise.race([rep.exited, tooLong]);
    clearTimeout(limit);
    assert.equal(code, 0, rep.logs.slice(-10).join("\n"));
    assert.equal(await s.client.get("schematic:datastream:writer_lock"), null, "the lease was released");
    await sending;
    await s.admin("POST", "/faults", {});

    const next = await s.startReplicator();
    await next.waitReady();
    await markerChange(s);
    await s.waitConsistent();
    await sdkSeesMarker(s);
  });
});
