/**
 * High availability, a standby's API key: a standby uses its key only once it takes over, so it checks it
 * (GET /companies/count) at start-up and then every API_KEY_CHECK_INTERVAL while it stands by.
 *
 * - Started with a key the emulator rejects (`--api-key`): it fails early — exit 3 with one clear line — instead
 *   of standing by with a /ready 200 until the failover that needs it.
 * - A key revoked later (the key check answered 401): the standby says so (an error line, /health 503 with the
 *   reason, `components.api_key: "rejected"`), stops contending for the lease, and so does not take over when the
 *   writer stops; once the key is accepted again it contends and takes over.
 * - While standing by, it names the lease holder in its logs and on /health (`lease_holder`).
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { loadFixtureFile, type RunningEmulator, startEmulator } from "../src/emulator/index.js";
import { admin, jsonLogs } from "./helpers/e2e.js";
import { type RedisServer, startRedis, waitFor } from "./helpers/redis.js";
import { type ReplicatorProcess, runToExit, startReplicator, testEnv } from "./helpers/replicator.js";

const FIXTURE_FILE = fileURLToPath(new URL("../examples/fixture.json", import.meta.url));
const API_KEY = "the-right-key";
const LOCK_KEY = "schematic:datastream:writer_lock";

describe("a standby checks its API key", { timeout: 240_000 }, () => {
  let emu: RunningEmulator;
  let redis: RedisServer;
  let writer: ReplicatorProcess;
  let standby: ReplicatorProcess | undefined;
  let env: Record<string, string>;

  before(async () => {
    [emu, redis] = await Promise.all([
      startEmulator({ fixture: loadFixtureFile(FIXTURE_FILE), apiKey: API_KEY }),
      startRedis(),
    ]);
    env = testEnv({
      SCHEMATIC_API_URL: emu.url,
      REDIS_ADDR: redis.addr,
      SCHEMATIC_API_KEY: API_KEY,
      WRITER_LOCK_TTL: "3s",
      API_KEY_CHECK_INTERVAL: "300ms",
    });
    writer = await startReplicator(env);
    await writer.waitReady(90_000);
  });

  after(async () => {
    await Promise.all([writer?.stop(), standby?.stop()]);
    await redis?.stop();
    await emu?.close();
  });

  test("a standby started with a wrong key fails early: exit 3, one clear line", async () => {
    const { code, lines, plain } = await runToExit({ ...env, SCHEMATIC_API_KEY: "a-wrong-key" });
    assert.equal(code, 3, lines.slice(-10).join("\n"));
    assert.equal(plain.length, 1, `one plain line:\n${plain.join("\n")}`);
    assert.match(
      plain[0]!,
      /^schematic-replicator: the Schematic API rejected the API key \(HTTP 401 on GET \/companies\/count\); check SCHEMATIC_API_KEY$/,
    );
    assert.equal((await writer.health()).body.role, "writer", "the writer is unaffected");
  });

  test("a standby names the lease holder", async () => {
    standby = await startReplicator(env);
    const holder = String((await writer.health()).body.lease_holder);
    assert.match(holder, /^.+-\d+$/, "the writer's /health names the holder (hostname-pid)");
    const health = await waitFor(
      async () => {
        const h = await standby!.health();
        return h.body.role === "standby" && h.body.lease_holder === holder ? h : undefined;
      },
      { timeoutMs: 60_000, what: "the standby's /health to name the holder" },
    );
    assert.equal((health.body.components as Record<string, unknown>).api_key, "valid");
    await waitFor(
      () => jsonLogs(standby!.logs).some((l) => l.msg === `standing by: ${holder} holds the writer lease`),
      { what: "the standby to log the holder" },
    );
  });

  test("a key revoked later: reported, no takeover; accepted again: it takes over", async () => {
    const s = standby!;
    // Schematic now refuses the key on the check's endpoint (the writer, loaded, does not call it).
    await admin(emu.url, "POST", "/faults", {
      rest_fail_paths: ["/companies/count"],
      rest_error_rate: 1,
      rest_error_status: 401,
    });
    const health = await waitFor(
      async () => {
        const h = await s.health();
        return h.status === 503 ? h : undefined;
      },
      { timeoutMs: 60_000, what: "the standby's /health to answer 503" },
    );
    assert.equal(health.body.status, "unhealthy");
    assert.match(String(health.body.unhealthy_reason), /rejected the API key \(HTTP 401 on GET \/companies\/count\)/);
    assert.equal((health.body.components as Record<string, unknown>).api_key, "rejected");
    assert.equal((await s.ready()).status, 200, "/ready still tells the truth about the data");
    const logs = jsonLogs(s.logs);
    assert.ok(
      logs.some((l) => l.level === "error" && /the Schematic API rejected the API key/.test(String(l.msg))),
      "an error line says so",
    );

    // The writer leaves (releasing the lease): the standby with the rejected key does not take over.
    assert.equal(await writer.stop("SIGTERM"), 0);
    const db = redis.client();
    await new Promise((r) => setTimeout(r, 4000)); // more than a lease TTL
    assert.equal((await s.health()).body.role, "standby", "it did not take over");
    assert.equal(await db.get(LOCK_KEY), null, "nobody holds the lease");
    assert.equal(s.process.exitCode, null, "still running");

    // The key is accepted again: it contends, takes over and gets ready.
    await admin(emu.url, "POST", "/faults", {});
    await waitFor(async () => (await s.health()).body.role === "writer", {
      timeoutMs: 60_000,
      what: "the standby to take over once its key is accepted",
    });
    await s.waitReady(60_000);
    assert.equal((await s.health()).status, 200);
    assert.ok(jsonLogs(s.logs).some((l) => l.msg === "the Schematic API accepts the API key again"));
  });
});
