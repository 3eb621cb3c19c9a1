/**
 * Role changes and marker updates when Redis refuses a marker write for a moment (issue 13, defect 1). Two
 * replicators share one Redis as an ACL user; the test makes the readiness marker read-only for that user (a real
 * Redis refusal, NOPERM; every other key stays writable) exactly while a marker write is due, then writable again:
 *
 * - the writer's datastream reconnects while the marker is read-only: the write that clears `stale_since` fails
 *   once, and must be retried, or every standby's /ready stays 503 for good once READY_GRACE_PERIOD has passed;
 * - the writer is SIGKILLed while the marker is read-only: the standby takes the lease, and its first marker write
 *   fails; it must still connect the datastream and replicate, never hold the lease without writing.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { Redis } from "ioredis";
import { loadFixtureFile, type RunningEmulator, startEmulator } from "../src/emulator/index.js";
import { parseMarker, serializeMarker } from "../src/store/marker.js";
import { admin, defaultKeys, emulatorState, waitInSync } from "./helpers/e2e.js";
import { FIXTURE_PATH, flag } from "./helpers/faults.js";
import { type RedisServer, startRedis, waitFor } from "./helpers/redis.js";
import { type ReplicatorProcess, startReplicator, testEnv } from "./helpers/replicator.js";

const USER = "replicator";
const LEASE_KEY = "schematic:datastream:writer_lock";
const keys = defaultKeys();

describe("HA: marker writes refused by Redis around a datastream reconnect and a takeover", () => {
  let redis: RedisServer;
  let db: Redis;
  let emu: RunningEmulator;
  let writer: ReplicatorProcess;
  let standby: ReplicatorProcess;

  /** Makes the marker read-only for the replicators' user (or writable again); the ACL log shows each refusal. */
  const refuseMarkerWrites = async (refuse: boolean) => {
    const writable = ["datastream:writer_lock", "datastream:replay_cursor", "flags:*", "company:*", "user:*"];
    // A key a command both reads and writes needs one pattern granting both (%RW).
    const access = refuse ? ["%R~*", ...writable.map((k) => `%RW~schematic:${k}`)] : ["~*"];
    await db.call("ACL", "SETUSER", USER, "resetkeys", ...access);
    if (refuse) await db.call("ACL", "LOG", "RESET");
  };
  const refusedMarkerWrites = async () => {
    const entries = (await db.call("ACL", "LOG")) as unknown[][];
    return entries.filter((e) => e.includes(keys.marker())).length;
  };
  const marker = async () => parseMarker(await db.get(keys.marker()));

  before(async () => {
    [redis, emu] = await Promise.all([startRedis(), startEmulator({ fixture: loadFixtureFile(FIXTURE_PATH) })]);
    db = redis.client();
    await db.call("ACL", "SETUSER", USER, "on", ">secret", "~*", "&*", "+@all");
    const env = testEnv({
      SCHEMATIC_API_URL: emu.url,
      REDIS_ADDR: redis.addr,
      REDIS_USERNAME: USER,
      REDIS_PASSWORD: "secret",
      READY_GRACE_PERIOD: "1s",
    });
    const first = await startReplicator(env);
    await first.waitReady();
    const second = await startReplicator(env);
    await second.waitReady();
    // Whichever holds the lease now is the writer of these tests (a stalled machine may have moved it).
    const roles = await Promise.all([first, second].map(async (r) => (await r.health()).body.role));
    assert.deepEqual([...roles].sort(), ["standby", "writer"]);
    [writer, standby] = roles[0] === "writer" ? [first, second] : [second, first];
  });

  after(async () => {
    await Promise.all([writer?.stop("SIGKILL"), standby?.stop("SIGKILL")]);
    await emu?.close();
    await redis?.stop();
  });

  test("the write that clears stale_since fails once: retried, the standby's /ready is 200 again", {
    timeout: 60_000,
  }, async () => {
    // A change, so the writer has a cursor to resume from (a reconnect without one reloads, which rewrites the marker).
    const { stream_id: last } = await admin(emu.url, "PUT", "/flags/before-reconnect", flag("before-reconnect", true));
    await waitFor(async () => (await db.get("schematic:datastream:replay_cursor")) === last, { what: "the cursor" });
    // The datastream drops and stays down: the writer records stale_since.
    await admin(emu.url, "POST", "/faults", { datastream_refuse_status: 503 });
    await admin(emu.url, "POST", "/disconnect", {});
    await waitFor(async () => (await marker())?.stale_since, { what: "stale_since in the marker" });
    // It comes back while the marker is read-only: the write that clears stale_since is refused.
    await refuseMarkerWrites(true);
    await admin(emu.url, "POST", "/faults", {});
    await waitFor(async () => (await refusedMarkerWrites()) > 0, { what: "Redis to refuse the marker write" });
    await waitFor(async () => (await emulatorState(emu.url)).connections === 1, { what: "the datastream back" });
    await refuseMarkerWrites(false);

    await waitFor(async () => (await marker()) && !(await marker())?.stale_since, {
      what: "stale_since cleared in Redis",
    });
    await waitFor(async () => (await standby.ready()).status === 200, { what: "the standby's /ready 200 again" });
    assert.equal((await writer.ready()).status, 200);
    assert.equal((await writer.health()).body.role, "writer", "no takeover healed it");
    assert.equal((await standby.health()).body.role, "standby");
  });

  test("the standby's first marker write after the takeover fails: it still replicates", {
    timeout: 60_000,
  }, async () => {
    // The marker as a connected writer leaves it (whatever the test before left): the new writer must write it.
    const current = await marker();
    assert.ok(current, "the marker is there");
    delete current.stale_since;
    await db.set(keys.marker(), serializeMarker(current));
    const oldToken = await db.get(LEASE_KEY);
    await refuseMarkerWrites(true);
    writer.process.kill("SIGKILL");
    await writer.exited;
    await waitFor(async () => (await db.get(LEASE_KEY)) !== oldToken && (await db.get(LEASE_KEY)) !== null, {
      what: "the standby to take the lease",
    });
    await waitFor(async () => (await refusedMarkerWrites()) > 0, { what: "Redis to refuse the new writer's write" });
    await new Promise((r) => setTimeout(r, 500));
    await refuseMarkerWrites(false);

    await waitFor(async () => (await standby.health()).body.role === "writer", { what: "the standby to be writer" });
    await waitFor(async () => (await emulatorState(emu.url)).connections === 1, {
      timeoutMs: 20_000,
      what: "the new writer's datastream connection",
    });
    await admin(emu.url, "PUT", "/flags/after-takeover", flag("after-takeover", true));
    await admin(emu.url, "PATCH", "/companies/comp_acme", { keys: { crm: "CRM-after-takeover" } });
    await waitInSync(db, emu.url, { what: "the changes made after the takeover to reach Redis" });
    await waitFor(async () => (await standby.ready()).status === 200, { what: "the new writer's /ready 200" });
  });
});
