/**
 * High availability when the writer is cut off rather than killed, with real processes and a MONITOR connection
 * that attributes every data write Redis executes to the replicator that sent it (see test/ha-handover.test.ts).
 *
 * - The writer process is frozen (SIGSTOP) for longer than its lease during a burst: a standby takes over, nothing
 *   is lost, and the old writer, thawed, finds itself a standby: it writes nothing after its successor started.
 *   While no live writer holds the lease, the standby's /ready says so (503).
 * - The writer's connection to Redis is frozen (a TCP proxy that stops forwarding) for longer than its lease during
 *   a burst: the other instance takes over; when the connection thaws, the commands the old writer had sent reach
 *   Redis late, and the lease token in each batch's script stops them: it writes nothing after its successor started.
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
  type FreezableProxy,
  monitorWrites,
  startFreezableProxy,
  untilWrote,
  type WriteMonitor,
  waitEqual,
  writerRuns,
} from "./helpers/topology.js";

const FIXTURE_FILE = fileURLToPath(new URL("../examples/fixture.json", import.meta.url));
const LEASE_KEY = "schematic:datastream:writer_lock";

interface Rig {
  redis: RedisServer;
  db: Redis;
  emu: RunningEmulator;
  monitor: WriteMonitor;
  reps: ReplicatorProcess[];
  proxy?: FreezableProxy;
}

async function startRig(): Promise<Rig> {
  const [redis, emu] = await Promise.all([startRedis(), startEmulator({ fixture: loadFixtureFile(FIXTURE_FILE) })]);
  const monitor = await monitorWrites(redis.port, LEASE_KEY);
  return { redis, db: redis.client(), emu, monitor, reps: [] };
}

async function stopRig(rig: Rig | undefined): Promise<void> {
  if (!rig) return;
  for (const r of rig.reps)
    if (r.process.signalCode === "SIGSTOP" || r.process.exitCode === null) r.process.kill("SIGCONT");
  await Promise.all(rig.reps.map((r) => r.stop("SIGKILL")));
  await rig.monitor.stop();
  await rig.proxy?.close();
  await rig.emu.close();
  await rig.redis.stop();
}

const roleOf = async (r: ReplicatorProcess) => String((await r.health()).body.role);

describe("the writer frozen (SIGSTOP) for longer than its lease", () => {
  let rig: Rig;
  let a: ReplicatorProcess;
  let b: ReplicatorProcess;

  before(async () => {
    rig = await startRig();
    const env = testEnv({ SCHEMATIC_API_URL: rig.emu.url, REDIS_ADDR: rig.redis.addr, WRITER_LOCK_TTL: "1500ms" });
    a = await startReplicator(env);
    rig.reps.push(a);
    await a.waitReady();
    // The standby retries the lease every 2 s (TTL/3 of its own 6 s): a gap in which no live writer holds it.
    b = await startReplicator({ ...env, WRITER_LOCK_TTL: "6s" });
    rig.reps.push(b);
    await b.waitReady();
  });

  after(async () => {
    await stopRig(rig);
  });

  test("a standby takes over, nothing is lost, the thawed writer stands by and never writes again", {
    timeout: 90_000,
  }, async (t) => {
    assert.equal(await roleOf(a), "writer");
    assert.equal(await roleOf(b), "standby");
    const before = rig.monitor.writes.length;
    const sending = burst(rig.emu.url, churn(600, { tag: "stop", seed: 21, entities: 120 }), 25, 30);
    const aName = connectionName(rig.monitor, a);
    await untilWrote(rig.monitor, aName, before);
    a.process.kill("SIGSTOP");

    // Watch the standby's /ready while the lease lapses: whenever the lease key is absent both just before and just
    // after a probe, no live writer held it during the probe, and /ready must say so.
    let gapSamples = 0;
    const lies: string[] = [];
    await waitFor(
      async () => {
        const before = await rig.db.pttl(LEASE_KEY);
        const ready = await b.ready();
        const after = await rig.db.pttl(LEASE_KEY);
        if (before < 0 && after < 0) {
          gapSamples++;
          if (ready.status === 200) lies.push(JSON.stringify(ready.body));
        }
        return ready.body.role === "writer";
      },
      { timeoutMs: 30_000, intervalMs: 20, what: "the standby to take over" },
    );
    t.diagnostic(`${gapSamples} /ready probes while no writer held the lease`);
    assert.deepEqual(lies, [], "the standby's /ready said 200 while no live writer held the lease");
    await sending;

    a.process.kill("SIGCONT");
    await waitFor(async () => (await roleOf(a)) === "standby", { what: "the thawed writer to stand by" });
    await burst(rig.emu.url, churn(200, { tag: "after-stop", seed: 22, entities: 60 }));
    await waitEqual(rig.db, rig.emu.url, { logs: () => [...a.logs.slice(-15), ...b.logs.slice(-15)] });
    for (const r of [a, b]) {
      const ready = await r.ready();
      assert.equal(ready.status, 200);
      assert.equal(ready.body.role, r === b ? "writer" : "standby");
    }
    assert.deepEqual(
      writerRuns(rig.monitor.writes.slice(before)),
      [aName, connectionName(rig.monitor, b)],
      "the frozen writer, then only its successor",
    );
  });
});

describe("the writer's connection to Redis frozen for longer than its lease", () => {
  let rig: Rig;
  let c: ReplicatorProcess;
  let d: ReplicatorProcess;

  before(async () => {
    rig = await startRig();
    rig.proxy = await startFreezableProxy(rig.redis.port);
    const env = testEnv({ SCHEMATIC_API_URL: rig.emu.url, WRITER_LOCK_TTL: "1500ms" });
    c = await startReplicator({ ...env, REDIS_ADDR: `127.0.0.1:${rig.proxy.port}` });
    rig.reps.push(c);
    await c.waitReady();
    d = await startReplicator({ ...env, REDIS_ADDR: rig.redis.addr });
    rig.reps.push(d);
    await d.waitReady();
  });

  after(async () => {
    await stopRig(rig);
  });

  test("the other instance takes over; the cut-off writer's late commands write nothing", {
    timeout: 90_000,
  }, async (t) => {
    assert.equal(await roleOf(c), "writer");
    assert.equal(await roleOf(d), "standby");
    const proxy = rig.proxy!;
    const before = rig.monitor.writes.length;
    const commandsBefore = rig.monitor.commands.length;
    const sending = burst(rig.emu.url, churn(600, { tag: "cut", seed: 31, entities: 120 }), 25, 30);
    const cName = connectionName(rig.monitor, c);
    await untilWrote(rig.monitor, cName, before);
    proxy.freeze();
    const frozenAt = Date.now();
    await waitFor(async () => (await roleOf(d)) === "writer", {
      timeoutMs: 30_000,
      what: "the other instance to take over",
    });
    // The cut-off writer cannot reach Redis: its /ready says so rather than vouching for data it cannot see.
    assert.equal((await c.ready()).status, 503);
    // Stay cut off well past the old lease, with the new writer writing, then let the stale commands through.
    await waitFor(() => Date.now() - frozenAt > 4500, { intervalMs: 100 });
    proxy.thaw();
    await sending;
    await waitFor(async () => (await roleOf(c)) === "standby", { what: "the cut-off writer to stand by" });
    await burst(rig.emu.url, churn(200, { tag: "after-cut", seed: 32, entities: 60 }));
    await waitEqual(rig.db, rig.emu.url, { logs: () => [...c.logs.slice(-15), ...d.logs.slice(-15)] });
    await waitFor(async () => (await c.ready()).status === 200, { what: "the old writer's /ready 200 as a standby" });
    assert.equal((await c.ready()).body.role, "standby");

    const dName = connectionName(rig.monitor, d);
    const writes = rig.monitor.writes.slice(before);
    assert.deepEqual(writerRuns(writes), [cName, dName], "the cut-off writer, then only its successor");
    // Did stale batches arrive after the successor's first write (and get refused by the lease token)?
    const firstOfD = writes.find((w) => w.writer === dName)!.seq;
    const late = rig.monitor.commands
      .slice(commandsBefore)
      .filter((c2) => c2.writer === cName && c2.seq > firstOfD && c2.command === "EVALSHA").length;
    t.diagnostic(`${late} EVALSHA from the cut-off writer reached Redis after its successor started; none wrote`);
  });
});
