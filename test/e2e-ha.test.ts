/**
 * End to end, high availability: two replicator processes on one Redis, one emulator.
 *
 * - The second instance stands by: /health says `role: standby`, it opens no datastream connection (the emulator
 *   counts one connection), applies nothing while changes flow through the writer, and its /ready tells the truth
 *   (200: the writer is live and the data loaded).
 * - After SIGTERM of the writer (exit 0) the standby takes over (`role: writer`); a change made during the handover
 *   and changes made after it arrive in Redis.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import type { Redis } from "ioredis";
import { loadFixtureFile, type RunningEmulator, startEmulator } from "../src/emulator/index.js";
import { admin, DEFAULT_CACHE_VERSION, defaultKeys, emulatorState, waitInSync } from "./helpers/e2e.js";
import { type RedisServer, startRedis, waitFor } from "./helpers/redis.js";
import { type ReplicatorProcess, startReplicator, testEnv } from "./helpers/replicator.js";

const FIXTURE_FILE = fileURLToPath(new URL("../examples/fixture.json", import.meta.url));
const keys = defaultKeys();

interface DebugView {
  role: string;
  messages: { received: number; applied: number };
  replay: { connections: number; replays_engaged: number; full_reloads: number };
}

describe("end to end: a second instance stands by, then takes over", () => {
  let emu: RunningEmulator;
  let redis: RedisServer;
  let db: Redis;
  let first: ReplicatorProcess;
  let second: ReplicatorProcess;

  before(async () => {
    [emu, redis] = await Promise.all([startEmulator({ fixture: loadFixtureFile(FIXTURE_FILE) }), startRedis()]);
    db = redis.client();
    // 3 s: short enough for a quick takeover (standbys retry every TTL/3), long enough that a busy machine's
    // event-loop stalls do not cost the writer its lease.
    const env = testEnv({ SCHEMATIC_API_URL: emu.url, REDIS_ADDR: redis.addr, WRITER_LOCK_TTL: "3s" });
    first = await startReplicator(env);
    await first.waitReady(90_000);
    second = await startReplicator(env);
  });

  after(async () => {
    await Promise.all([first?.stop(), second?.stop()]);
    await redis?.stop();
    await emu?.close();
  });

  const debugOf = async (r: ReplicatorProcess) => (await r.debug()) as unknown as DebugView;

  test("the second instance stands by: role standby, no datastream, nothing written, a truthful /ready", async () => {
    await waitFor(
      async () => {
        if (second.process.exitCode !== null) throw new Error(`exited: ${second.logs.slice(-5).join("\n")}`);
        return (await second.health()).status === 200;
      },
      { timeoutMs: 90_000, what: "the second instance's /health" },
    );
    const health = await second.health();
    assert.equal(health.body.role, "standby");
    assert.equal(health.body.cache_version, DEFAULT_CACHE_VERSION);
    assert.equal((await first.health()).body.role, "writer");
    // Its /ready reports the shared truth: the writer is live and the data loaded.
    await waitFor(async () => (await second.ready()).status === 200, {
      timeoutMs: 60_000,
      what: "the standby's /ready to say 200",
    });
    assert.equal((await second.ready()).body.role, "standby");

    await admin(emu.url, "PATCH", "/companies/comp_acme", { keys: { crm: "crm-during-standby" } });
    await admin(emu.url, "DELETE", "/users/user_010");
    await waitInSync(db, emu.url);
    const state = await emulatorState(emu.url);
    assert.equal(state.connections, 1, "one datastream connection: the writer's");
    const d = await debugOf(second);
    assert.equal(d.role, "standby");
    assert.equal(d.messages.received, 0, "the standby received nothing");
    assert.equal(d.messages.applied, 0, "the standby applied nothing");
    assert.ok((await debugOf(first)).messages.applied > 0, "the writer applied the changes");
  });

  test("after SIGTERM of the writer the standby takes over and changes keep arriving", async () => {
    assert.equal(await first.stop("SIGTERM"), 0, first.logs.slice(-10).join("\n"));
    // A change during the handover: the new writer must get it (replay from the cursor, or a reload).
    await admin(emu.url, "PATCH", "/companies/comp_globex", { keys: { crm: "crm-during-handover" } });
    await waitFor(async () => (await second.health()).body.role === "writer", {
      timeoutMs: 60_000,
      what: "the standby to become the writer",
    });
    await waitFor(async () => (await second.ready()).status === 200, {
      timeoutMs: 60_000,
      what: "the new writer's /ready to say 200",
    });
    await waitFor(async () => (await emulatorState(emu.url)).connections === 1, {
      timeoutMs: 60_000,
      what: "one datastream connection (the new writer's)",
    });
    await admin(emu.url, "PUT", "/users/user_new", {
      id: "user_new",
      account_id: "acc_acme_analytics",
      environment_id: "env_production",
      keys: { email: "new-after-takeover@example.com" },
      traits: [],
      rules: [],
    });
    await admin(emu.url, "DELETE", "/companies/comp_c012");
    await waitInSync(db, emu.url);
    assert.equal(await db.get(keys.companyLookups("crm", "crm-during-handover")[0]!), '"comp_globex"');
    assert.equal(await db.get(keys.userLookups("email", "new-after-takeover@example.com")[0]!), '"user_new"');
    assert.equal(await db.exists(keys.companyId("comp_c012")), 0);
    const d = await debugOf(second);
    assert.equal(d.role, "writer");
    assert.ok(d.messages.applied > 0, "the new writer applies changes");
    // It resumed from the cursor the old writer left (the data was loaded): no reload was needed.
    assert.ok(d.replay.replays_engaged >= 1, "it resumed from the replay cursor");
    assert.equal(d.replay.full_reloads, 0, "no full reload");
  });
});
