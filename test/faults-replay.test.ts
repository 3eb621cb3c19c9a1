/**
 * The replay cursor under out-of-order arrival (issue 4). On a resume the server answers each subscription with its
 * own backlog: all company changes after the cursor, then all user changes after it, so user changes older than the
 * newest company change arrive after it. The persisted cursor must never pass a change that is not applied yet —
 * received late, still queued, or not received at all — or a crash right then loses it for good (the Go original
 * has this hole). Unit tests of ReplayCursor, then the whole replicator killed at the worst moment. Also: a cursor
 * the server no longer has (a small replay log) or replay disabled means a full reload, and a datastream outage
 * longer than READY_GRACE_PERIOD turns /ready 503.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { ReplayCursor } from "../src/replication/cursor.js";
import {
  type BulkChange,
  background,
  bulk,
  churn,
  company,
  endsConsistent,
  type Stack,
  sleep,
  startStack,
  templates,
  user,
} from "./helpers/faults.js";
import { waitFor } from "./helpers/redis.js";

describe("replay cursor: a low-water mark in stream order", () => {
  test("a change older than one already tracked holds the cursor back until it is applied", () => {
    const cursor = new ReplayCursor("100-0");
    const c2 = cursor.track("102-0");
    const c4 = cursor.track("104-0");
    cursor.complete(c2);
    cursor.complete(c4);
    assert.equal(cursor.committed, "104-0");
    const c6 = cursor.track("106-0");
    // A user change older than 106, arriving after it (the users backlog follows the companies backlog).
    const u5 = cursor.track("105-0");
    assert.ok(u5, "an older id arriving late is tracked, not ignored");
    cursor.complete(c6);
    assert.equal(cursor.committed, "104-0", "105 is still pending");
    cursor.complete(u5);
    assert.equal(cursor.committed, "106-0");
    assert.equal(cursor.track("105-0"), undefined, "ids at or below the cursor are re-deliveries");
  });

  test("with no cursor yet, an older id arriving late is tracked; duplicates are ignored", () => {
    const cursor = new ReplayCursor();
    const a = cursor.track("200-0");
    assert.equal(cursor.track("200-0"), undefined);
    const b = cursor.track("150-0");
    assert.ok(b);
    cursor.complete(a);
    assert.equal(cursor.committed, undefined, "150 is older and pending");
    cursor.complete(b);
    assert.equal(cursor.committed, "200-0");
  });

  test("while held (a session's backlogs are arriving), completions do not move the cursor", () => {
    const cursor = new ReplayCursor("100-0");
    cursor.hold();
    cursor.complete(cursor.track("110-0"));
    assert.equal(cursor.committed, "100-0", "a later backlog may still bring older changes");
    const late = cursor.track("105-0");
    cursor.release();
    assert.equal(cursor.committed, "100-0");
    cursor.complete(late);
    assert.equal(cursor.committed, "110-0");
  });
});

describe("faults: killed right after a resume whose user backlog is still being applied", () => {
  let s: Stack;
  before(async () => {
    s = await startStack({ env: { NUM_WORKERS: "2" } });
    await s.rep.waitReady();
  });
  after(async () => s?.close());

  test("the persisted cursor never passes an unapplied change: nothing is lost after the kill", async () => {
    // A change, so that the replicator has a cursor to resume from.
    const first = (await s.admin<{ stream_id: string }>("PATCH", "/companies/comp_globex", { traits: [] })).stream_id;
    await waitFor(async () => (await s.client.get("schematic:datastream:replay_cursor")) === first, {
      what: "a persisted cursor",
    });
    assert.equal(await s.rep.stop("SIGTERM"), 0);
    // Company and user changes interleaved in stream order; the last one a company change whose id we know.
    const tpl = templates();
    const changes: BulkChange[] = [];
    for (let i = 0; i < 1200; i++) {
      changes.push({ method: "PUT", path: `/companies/ooo-co-${i}`, body: company(tpl.company, `ooo-co-${i}`, "eu") });
      changes.push({ method: "PUT", path: `/users/ooo-us-${i}`, body: user(tpl.user, `ooo-us-${i}`, "admin") });
    }
    await bulk(s, changes);
    const last = (
      await s.admin<{ stream_id: string }>("PUT", "/companies/ooo-co-last", company(tpl.company, "ooo-co-last", "eu"))
    ).stream_id;

    // A slow replicator: the company backlog is applied long before the user backlog is.
    const slow = await s.startReplicator({
      NUM_WORKERS: "1",
      BATCH_SIZE: "1",
      COMPANY_CHANNEL_SIZE: "4",
      USER_CHANNEL_SIZE: "4",
      REPLAY_FLUSH_INTERVAL: "50ms",
    });
    // Kill it the moment its persisted cursor reaches the last change (or it finished the backlog).
    await waitFor(async () => (await s.client.get("schematic:datastream:replay_cursor")) === last, {
      what: "the persisted cursor to reach the last change",
      intervalMs: 5,
      timeoutMs: 60_000,
    }).catch(async (err) => {
      const cursor = await s.client.get("schematic:datastream:replay_cursor");
      throw new Error(
        `${(err as Error).message}: cursor ${cursor}, last ${last}, ${JSON.stringify(await slow.debug())}\n${slow.logs.slice(-15).join("\n")}`,
      );
    });
    slow.process.kill("SIGKILL");
    await slow.exited;
    // Whatever the cursor covers must be in Redis already (a restart will not replay it).
    const users = await s.client.mget(Array.from({ length: 1200 }, (_, i) => `schematic:user:4b54a537:ooo-us-${i}`));
    const missing = users.filter((u) => u === null).length;
    assert.equal(missing, 0, `${missing} user changes at or below the persisted cursor are not in Redis`);

    const rep = await s.startReplicator();
    await rep.waitReady();
    await endsConsistent(s);
  });
});

describe("faults: cursor the server no longer has, replay disabled", () => {
  let s: Stack;
  before(async () => {
    s = await startStack({ replayLog: 50, env: { NUM_WORKERS: "2" } });
    await s.rep.waitReady();
  });
  after(async () => s?.close());

  test("a reconnect whose cursor fell out of the replay log: full reload", async () => {
    const reloads = await s.debugNumber("replay.full_reloads");
    await bulk(s, churn(200, { tag: "pre", seed: 9 }));
    await s.waitConsistent();
    // Hold the replicator off the stream (refused upgrades) while more than the log's worth of changes happen.
    await s.admin("POST", "/faults", { datastream_refuse_status: 503 });
    await s.admin("POST", "/disconnect", { code: 1012 });
    await bulk(s, churn(500, { tag: "gap", seed: 10 }));
    await s.admin("POST", "/faults", {});
    await waitFor(async () => (await s.debugNumber("replay.full_reloads")) > reloads, {
      what: "a full reload after the server answered reload",
    });
    await endsConsistent(s);
    assert.ok(s.rep.logs.some((l) => /the server asked for a full reload/.test(l)));
  });

  test("a restart whose persisted cursor fell out of the replay log: full reload", async () => {
    await s.rep.stop("SIGTERM");
    await bulk(s, churn(500, { tag: "gap2", seed: 11 }));
    const rep = await s.startReplicator();
    await rep.waitReady();
    await endsConsistent(s);
    const replay = (await rep.debug()).replay as Record<string, number>;
    assert.ok((replay.full_reloads ?? 0) >= 1, "a full reload");
  });

  test("killed during the reload a lost cursor forced: the restart reloads again, it does not resume", async () => {
    await s.rep.stop("SIGTERM");
    const rep = await s.startReplicator({
      USE_ASYNC_LOADING: "true",
      ASYNC_LOADER_PAGE_SIZE: "10",
      ASYNC_LOADER_MAX_CONCURRENT_REQUESTS: "1",
    });
    await rep.waitReady();
    const first = (await s.admin<{ stream_id: string }>("PATCH", "/companies/comp_globex", { traits: [] })).stream_id;
    await waitFor(async () => (await s.client.get("schematic:datastream:replay_cursor")) === first, {
      what: "a persisted cursor",
    });
    // Off the stream while more than the replay log's worth of changes happen: the reconnect gets `reload`.
    await s.admin("POST", "/faults", { datastream_refuse_status: 503 });
    await s.admin("POST", "/disconnect", { code: 1012 });
    await bulk(s, churn(300, { tag: "w4", seed: 14 }));
    await s.admin("POST", "/faults", { rest_latency_ms: 150 });
    await waitFor(() => rep.logs.some((l) => /the server asked for a full reload/.test(l)), { what: "the reload" });
    // Stream changes applied during the (slow) reload move the in-memory cursor.
    await bulk(s, churn(100, { tag: "w4live", seed: 15 }));
    await waitFor(async () => ((await rep.debug()).replay as Record<string, string>).cursor !== "", {
      what: "the cursor to move during the reload",
    });
    await sleep(600);
    assert.equal(((await rep.debug()) as Record<string, unknown>).loading, true, "still loading");
    rep.process.kill("SIGKILL");
    await rep.exited;
    // Persisted now, that cursor would make the next replicator resume and never finish the reload.
    assert.equal(await s.client.get("schematic:datastream:replay_cursor"), null, "no cursor persisted mid-reload");
    await s.admin("POST", "/faults", {});
    const next = await s.startReplicator();
    await next.waitReady();
    await endsConsistent(s);
    assert.ok((((await next.debug()).replay as Record<string, number>).full_reloads ?? 0) >= 1);
  });

  test("REPLAY_DISABLED: every reconnect reloads everything, and nothing is lost", async () => {
    await s.rep.stop("SIGTERM");
    const rep = await s.startReplicator({ REPLAY_DISABLED: "true" });
    await rep.waitReady();
    const reloads = await s.debugNumber("replay.full_reloads");
    const sending = background(s, churn(1000, { tag: "norep", seed: 12 }), 100, 5);
    await sleep(200);
    await s.admin("POST", "/disconnect", { drop: true });
    await sending;
    await waitFor(async () => (await s.debugNumber("replay.full_reloads")) > reloads, { what: "a full reload" });
    await endsConsistent(s);
    assert.equal(await s.debugNumber("replay.replays_engaged"), 0);
  });

  test("a datastream outage longer than READY_GRACE_PERIOD: /ready 503 until the stream is back", async () => {
    await s.rep.stop("SIGTERM");
    const rep = await s.startReplicator({ READY_GRACE_PERIOD: "1s" });
    await rep.waitReady();
    await s.admin("POST", "/faults", { datastream_refuse_status: 503 });
    await s.admin("POST", "/disconnect", { code: 1012 });
    const stale = await waitFor(
      async () => {
        const r = await rep.ready();
        return r.status === 503 ? r.body : undefined;
      },
      { what: "/ready 503 once the grace period is over" },
    );
    assert.equal(stale.ready, false);
    assert.equal(typeof stale.stale_since, "string");
    assert.equal((await rep.health()).status, 200, "/health stays 200 (the process is alive)");
    await bulk(s, churn(300, { tag: "grace", seed: 13 }));
    await s.admin("POST", "/faults", {});
    await rep.waitReady();
    await endsConsistent(s);
  });
});
