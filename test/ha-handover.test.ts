/**
 * High availability with real processes: three replicators on one Redis (then two), one emulator, and a MONITOR
 * connection that attributes every data write Redis executes to the replicator that sent it (each names its
 * connection `schematic-replicator:{host}-{pid}`; commands a script runs are attributed to the script's caller).
 *
 * - Exactly one instance writes: the standbys send no data write at all, and /health and /ready carry each one's
 *   role; every instance's /ready says 200 only while the data is loaded and a writer is live.
 * - SIGKILL of the writer during a burst of changes: a standby takes over within a couple of lease periods, resumes
 *   from the replay cursor (no full reload) and nothing is lost; the killed writer wrote nothing after its successor
 *   started. Then the same again with the two instances left.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import type { Redis } from "ioredis";
import { loadFixtureFile, type RunningEmulator, startEmulator } from "../src/emulator/index.js";
import { churn } from "./helpers/faults.js";
import { type RedisServer, startRedis, waitFor } from "./helpers/redis.js";
import { type ReplicatorProcess, startReplicator, testEnv } from "./helpers/replicator.js";
import {
  burst,
  connectionName,
  monitorWrites,
  untilWrote,
  type WriteMonitor,
  waitEqual,
  writerRuns,
} from "./helpers/topology.js";

const FIXTURE_FILE = fileURLToPath(new URL("../examples/fixture.json", import.meta.url));
const LEASE_KEY = "schematic:datastream:writer_lock";
const LEASE_TTL_MS = 1500;

interface DebugView {
  role: string;
  messages: { received: number; applied: number };
  replay: { replays_engaged: number; full_reloads: number };
}

describe("three replicators on one Redis: one writes, a standby takes over when it dies", () => {
  let redis: RedisServer;
  let db: Redis;
  let emu: RunningEmulator;
  let monitor: WriteMonitor;
  const reps: ReplicatorProcess[] = [];
  const logs = () => reps.flatMap((r) => r.logs.slice(-10));
  const nameOf = (r: ReplicatorProcess) => connectionName(monitor, r);
  const roleOf = async (r: ReplicatorProcess) => String((await r.health()).body.role);
  const alive = () => reps.filter((r) => r.process.exitCode === null && r.process.signalCode === null);
  const writerNow = async () => {
    const roles = await Promise.all(alive().map(async (r) => [r, await roleOf(r)] as const));
    const writers = roles.filter(([, role]) => role === "writer").map(([r]) => r);
    return writers.length === 1 ? writers[0] : undefined;
  };

  before(async () => {
    [redis, emu] = await Promise.all([startRedis(), startEmulator({ fixture: loadFixtureFile(FIXTURE_FILE) })]);
    db = redis.client();
    monitor = await monitorWrites(redis.port, LEASE_KEY);
    const env = testEnv({ SCHEMATIC_API_URL: emu.url, REDIS_ADDR: redis.addr, WRITER_LOCK_TTL: `${LEASE_TTL_MS}ms` });
    reps.push(await startReplicator(env));
    await reps[0]!.waitReady();
    reps.push(...(await Promise.all([startReplicator(env), startReplicator(env)])));
    for (const r of reps) await r.waitReady();
  });

  after(async () => {
    await monitor?.stop();
    await Promise.all(reps.map((r) => r.stop("SIGKILL")));
    await emu?.close();
    await redis?.stop();
  });

  test("one writer, two standbys: only the writer writes; every /ready tells the truth and carries its role", {
    timeout: 60_000,
  }, async () => {
    const [first, ...standbys] = reps as [ReplicatorProcess, ...ReplicatorProcess[]];
    assert.equal(await roleOf(first), "writer");
    for (const s of standbys) {
      assert.equal(await roleOf(s), "standby");
      const ready = await s.ready();
      assert.equal(ready.status, 200, "a standby's /ready is 200: the data is loaded and a writer is live");
      assert.equal(ready.body.role, "standby");
      assert.equal(ready.body.ready, true);
    }
    await burst(emu.url, churn(200, { tag: "steady", seed: 1, entities: 60 }));
    await waitEqual(db, emu.url, { logs });
    assert.ok(monitor.writes.length > 0, "MONITOR saw the data writes");
    assert.deepEqual(writerRuns(monitor.writes), [nameOf(first)], "every data write came from the writer");
    for (const s of standbys) {
      const d = (await s.debug()) as unknown as DebugView;
      assert.equal(d.messages.received, 0, "a standby opens no datastream");
    }
  });

  for (const round of [1, 2]) {
    test(`SIGKILL of the writer during a burst (${round === 1 ? "three" : "two"} instances): a standby takes over, nothing is lost`, {
      timeout: 90_000,
    }, async (t) => {
      const writer = await waitFor(writerNow, { what: "exactly one writer" });
      const writerName = nameOf(writer);
      const before = monitor.writes.length;
      const sending = burst(emu.url, churn(700, { tag: `kill${round}`, seed: 10 + round, entities: 120 }), 25, 30);
      await untilWrote(monitor, writerName, before);
      writer.process.kill("SIGKILL");
      const killedAt = Date.now();
      await writer.exited;
      const successor = await waitFor(writerNow, { timeoutMs: 30_000, what: "a standby to take over" });
      const takeoverMs = Date.now() - killedAt;
      await sending;
      await waitEqual(db, emu.url, { logs });
      await waitFor(async () => (await successor.ready()).status === 200, { what: "the new writer's /ready 200" });

      // Exactly one wrote at a time: the killed writer, then its successor, never interleaved; nobody else.
      const runs = writerRuns(monitor.writes.slice(before));
      const successorName = nameOf(successor);
      assert.notEqual(successorName, writerName);
      assert.deepEqual(runs, [writerName, successorName], "the killed writer, then only its successor");
      t.diagnostic(`takeover ${takeoverMs} ms after the SIGKILL (lease TTL ${LEASE_TTL_MS} ms)`);
      const d = (await successor.debug()) as unknown as DebugView;
      assert.ok(d.replay.replays_engaged >= 1, "it resumed from the replay cursor");
      assert.equal(d.replay.full_reloads, 0, "without a full reload");
      for (const r of alive()) {
        const ready = await r.ready();
        assert.equal(ready.status, 200);
        assert.equal(ready.body.role, r === successor ? "writer" : "standby");
      }
    });
  }
});
