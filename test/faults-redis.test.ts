/**
 * Redis faults while changes stream in (issue 4): Redis killed and restarted empty, flushed, paused past the circuit
 * breaker, and slowed down; writes refused by the lease fence; Redis restarted from an older append-only file (it
 * lost its latest writes) while the lease survived. Each case ends with Redis equal to the emulator's state (zero
 * differences from the consistency checker), the official SDK in replicator mode reading the changed values,
 * nothing dropped, and the same replicator process still running (self-healing, no restart).
 */
import assert from "node:assert/strict";
import { cpSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  background,
  bulk,
  churn,
  endsConsistent,
  type Stack,
  sleep,
  startStack,
  watchReady,
} from "./helpers/faults.js";
import { waitFor } from "./helpers/redis.js";

describe("faults: Redis", () => {
  let s: Stack;
  let pid: number | undefined;

  before(async () => {
    s = await startStack({
      redisArgs: ["--enable-debug-command", "yes"],
      env: {
        CIRCUIT_BREAKER_THRESHOLD: "3",
        CIRCUIT_BREAKER_TIMEOUT: "200ms",
        REDIS_READ_TIMEOUT: "500ms",
        REDIS_WRITE_TIMEOUT: "500ms",
        REDIS_DIAL_TIMEOUT: "500ms",
        BATCH_SIZE: "50",
        NUM_WORKERS: "4",
      },
    });
    await s.rep.waitReady();
    pid = s.rep.process.pid;
  });
  after(async () => s?.close());

  const endsHealed = async () => {
    await endsConsistent(s);
    assert.equal(s.rep.process.pid, pid);
    assert.equal(s.rep.process.exitCode, null, "the replicator healed itself without a restart");
  };

  test("Redis killed and restarted empty in the middle of a stream: rebuilt without a restart", async () => {
    const ready = watchReady(s.rep);
    const sending = background(s, churn(3000, { tag: "kill", seed: 11 }), 100, 10);
    await sleep(400);
    await s.redis.kill("SIGKILL");
    await sleep(1000);
    await s.redis.restart();
    await sending;
    await s.rep.waitReady();
    await endsHealed();
    await ready.stop();
    assert.ok(ready.seen.has(503), `/ready reported the gap (saw ${[...ready.seen]})`);
    assert.ok(
      s.rep.logs.some((l) => /readiness marker is gone|lease/.test(l)),
      "the replicator noticed the loss",
    );
  });

  test("FLUSHALL in the middle of a stream: the marker vanishes, /ready is 503 until the keyspace is rebuilt", async () => {
    const reloadsBefore = await s.debugNumber("replay.full_reloads");
    const ready = watchReady(s.rep);
    const sending = background(s, churn(2000, { tag: "flush", seed: 12 }), 100, 10);
    await sleep(300);
    await s.client.flushall();
    await sending;
    await waitFor(async () => (await s.debugNumber("replay.full_reloads")) > reloadsBefore, {
      what: "a full reload after the flush",
    });
    await s.rep.waitReady();
    await endsHealed();
    await ready.stop();
    assert.ok(ready.seen.has(503), `/ready reported the gap (saw ${[...ready.seen]})`);
    assert.ok(ready.seen.has(200));
  });

  test("Redis paused (SIGSTOP) past the breaker threshold during a burst of thousands: nothing lost", async () => {
    const retriedBefore = await s.debugNumber("messages.retried");
    const ready = watchReady(s.rep, 100);
    const changes = churn(6000, { tag: "stop", seed: 13, entities: 1500 });
    const sending = background(s, changes, 500, 0);
    await sleep(200);
    const redisPid = s.redis.process.pid!;
    process.kill(redisPid, "SIGSTOP");
    try {
      await waitFor(async () => ((await s.rep.debug()).breakers as Record<string, string>).redis !== "closed", {
        what: "the Redis breaker to open",
        timeoutMs: 15_000,
      });
      await sleep(2500);
      // /ready goes 503 while Redis cannot be reached.
      await waitFor(async () => (await s.rep.ready()).status === 503, { what: "/ready 503 while Redis is paused" });
    } finally {
      process.kill(redisPid, "SIGCONT");
    }
    await sending;
    await s.rep.waitReady();
    await endsHealed();
    await ready.stop();
    assert.ok((await s.debugNumber("messages.retried")) > retriedBefore, "failed writes were retried");
    assert.ok(
      s.rep.logs.some((l) => /"breaker":"redis"/.test(l) && /"state":"open"/.test(l)),
      "the breaker opened",
    );
  });

  test("Redis slowed down (SIGSTOP/SIGCONT cycles and DEBUG SLEEP) during a stream: nothing lost", async () => {
    const sending = background(s, churn(3000, { tag: "slow", seed: 14, entities: 500 }), 100, 10);
    const redisPid = s.redis.process.pid!;
    let cycling = true;
    const cycles = (async () => {
      while (cycling) {
        process.kill(redisPid, "SIGSTOP");
        await sleep(150);
        process.kill(redisPid, "SIGCONT");
        await sleep(150);
      }
    })();
    await sleep(2000);
    cycling = false;
    await cycles;
    process.kill(redisPid, "SIGCONT");
    // DEBUG SLEEP blocks the server for the given seconds (needs enable-debug-command; skipped when refused).
    const sleeper = s.redis.client();
    const sleeps: Promise<unknown>[] = [];
    for (let i = 0; i < 8; i++) {
      sleeps.push(sleeper.call("DEBUG", "SLEEP", "0.2").catch(() => undefined));
      await sleep(250);
    }
    await Promise.all(sleeps);
    await sending;
    await s.rep.waitReady();
    await endsHealed();
  });
});

const LEASE_KEY = "schematic:datastream:writer_lock";

describe("faults: writes refused by the lease fence", () => {
  /** Long, so that no renewal can fall in a window where the test holds a foreign token (see swapToken). */
  const LEASE_TTL_MS = 60_000;
  let s: Stack;
  before(async () => {
    s = await startStack({ env: { BATCH_SIZE: "50", NUM_WORKERS: "4", WRITER_LOCK_TTL: `${LEASE_TTL_MS}ms` } });
    await s.rep.waitReady();
  });
  after(async () => s?.close());

  /**
   * Replaces the writer's token with a foreign one, only while its last renewal is recent: the next renewal is then
   * at least 10 s away (renewals come every TTL/3 = 20 s), far beyond the moment the test puts the token back. A
   * renewal that found the foreign token would rightly end the tenure, which is not what this test is about.
   */
  async function swapToken(token: string): Promise<void> {
    await waitFor(
      async () =>
        (await s.client.eval(
          `if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('PTTL', KEYS[1]) > tonumber(ARGV[2]) then
             redis.call('SET', KEYS[1], 'intruder', 'KEEPTTL')
             return 1
           end
           return 0`,
          1,
          LEASE_KEY,
          token,
          LEASE_TTL_MS - 10_000,
        )) === 1,
      { timeoutMs: 60_000, intervalMs: 20, what: "a fresh renewal of the lease" },
    );
  }

  test("refused while the lease is still renewed: retried, no stand-down", async () => {
    const retried = await s.debugNumber("messages.retried");
    const sending = background(s, churn(2000, { tag: "fence", seed: 15, entities: 300 }), 100, 0);
    await waitFor(async () => (await s.debugNumber("messages.received")) > 200, { what: "the burst to be flowing" });
    // A foreign token for a moment: the fenced writes in that window are refused.
    for (let i = 0; i < 5; i++) {
      const token = await s.client.get(LEASE_KEY);
      assert.ok(token, "the writer holds the lease");
      await swapToken(token);
      await sleep(40);
      await s.client.eval(
        "if redis.call('GET', KEYS[1]) == 'intruder' then redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL') end",
        1,
        LEASE_KEY,
        token,
      );
      await sleep(150);
    }
    await sending;
    await endsConsistent(s);
    assert.equal((await s.rep.debug()).role, "writer");
    assert.ok((await s.debugNumber("messages.retried")) > retried, "refused writes were retried");
  });
});

describe("faults: Redis restarts from an older append-only file while the lease survives", () => {
  const CURSOR_KEY = "schematic:datastream:replay_cursor";
  let s: Stack;
  before(async () => {
    s = await startStack({
      // Every write is on disk before Redis answers it, so a copy of the file taken between two writes is exact.
      redisArgs: ["--appendonly", "yes", "--appendfsync", "always"],
      // The lease in the older file must still be valid when Redis comes back.
      env: { WRITER_LOCK_TTL: "30s" },
    });
    await s.rep.waitReady();
  });
  after(async () => s?.close());

  /** Waits until the persisted cursor covers every change sent so far. */
  const cursorSaved = async () => {
    const { stream_id: last } = await s.admin<{ stream_id: string }>("GET", "/state");
    await waitFor(async () => (await s.client.get(CURSOR_KEY)) === last, { what: `the cursor saved at ${last}` });
  };

  test("the writes Redis lost are replayed from the cursor it kept", async () => {
    const pid = s.rep.process.pid;
    await bulk(s, churn(300, { tag: "kept", seed: 21, entities: 100 }));
    await s.waitConsistent();
    await cursorSaved();
    const aof = join(s.redis.dir, "appendonlydir");
    const older = join(s.redis.dir, "appendonlydir.older");
    cpSync(aof, older, { recursive: true });

    // Changes Redis applies and the writer persists a cursor for; then Redis loses them.
    await bulk(s, churn(300, { tag: "lost", seed: 22, entities: 100 }));
    await s.waitConsistent();
    await cursorSaved();
    const token = await s.client.get(LEASE_KEY);
    await s.redis.kill("SIGKILL");
    rmSync(aof, { recursive: true });
    cpSync(older, aof, { recursive: true });
    await s.redis.restart();
    assert.equal(await s.client.get(LEASE_KEY), token, "the lease survived");
    assert.ok((await s.differences()).length > 0, "Redis lost the latest changes");

    await endsConsistent(s);
    assert.equal(s.rep.process.pid, pid, "the same process healed it");
  });
});
