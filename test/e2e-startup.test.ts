/**
 * End to end, the start-up of the real replicator process: a permanent failure exits with its documented code and
 * one clear line, never a live process that has silently given up; a Redis that is not there yet is waited for,
 * with the probes up and saying why.
 *
 * - Invalid settings: exit 2, exactly one line on stderr naming the variable and the value — a JSON record
 *   (with `variable`) under LOG_FORMAT=json; a variable one typo away from a setting's name is invalid too.
 * - SCHEMATIC_API_KEY missing: exit 2, the line says how to set it.
 * - A wrong API key: exit 3 with a line saying the key was rejected, found by the start-up check of the key; and
 *   the datastream's own refusal ("accept, then close 4001", the `auth_failure` fault) when that check could not
 *   tell (REST failing).
 * - Redis refusing the password: exit 1 with one line, after REDIS_MAX_RETRIES attempts.
 * - Redis started after the replicator: the replicator waits (/health 200 saying it waits for Redis and why, the
 *   failure logged once, not per attempt), then loads once Redis is up and /ready answers 200.
 * - SIGTERM while waiting for Redis: exit 0 at once, also as PID 1 (Node has no default signal handling there:
 *   without handlers installed first, the signal was ignored).
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { loadFixtureFile, type RunningEmulator, startEmulator } from "../src/emulator/index.js";
import { admin, jsonLogs } from "./helpers/e2e.js";
import { freePort, type RedisServer, startRedis, waitFor } from "./helpers/redis.js";
import { type ReplicatorProcess, runToExit, startReplicator, testEnv } from "./helpers/replicator.js";

const FIXTURE_FILE = fileURLToPath(new URL("../examples/fixture.json", import.meta.url));
const canUnshare = spawnSync("unshare", ["-rpf", "--kill-child", "true"]).status === 0;

describe("end to end: start-up", { concurrency: true, timeout: 300_000 }, () => {
  let redis: RedisServer;
  let secured: RedisServer;
  let strict: RunningEmulator;
  let closing: RunningEmulator;

  before(async () => {
    const fixture = loadFixtureFile(FIXTURE_FILE);
    [redis, secured, strict, closing] = await Promise.all([
      startRedis(),
      startRedis({ args: ["--requirepass", "the-redis-password"] }),
      startEmulator({ fixture, apiKey: "the-right-key" }),
      startEmulator({ fixture, apiKey: "the-right-key" }),
    ]);
    // The key check (GET /companies/count) fails with 503, so it cannot tell: the datastream's close 4001 decides.
    await admin(closing.url, "POST", "/faults", {
      auth_failure: "close4001",
      rest_fail_paths: ["/companies/count"],
      rest_error_rate: 1,
      rest_error_status: 503,
    });
  });

  after(async () => {
    await redis?.stop();
    await secured?.stop();
    await strict?.close();
    await closing?.close();
  });

  const base = () =>
    testEnv({ SCHEMATIC_API_URL: strict.url, REDIS_ADDR: redis.addr, SCHEMATIC_API_KEY: "the-right-key" });

  for (const [name, value, mention] of [
    ["BATCH_SIZE", "abc", /BATCH_SIZE.*abc/],
    ["CACHE_TTL", "-5s", /CACHE_TTL.*-5s/],
  ] as const) {
    test(`${name}=${value}: exit 2 with one JSON line on stderr naming the variable`, async () => {
      const { code, lines, stderr } = await runToExit({ ...base(), [name]: value });
      assert.equal(code, 2, lines.join("\n"));
      assert.equal(lines.length, 1, `one line of output:\n${lines.join("\n")}`);
      assert.deepEqual(stderr, lines, "on stderr");
      const record = JSON.parse(lines[0]!) as Record<string, unknown>;
      assert.equal(record.level, "error");
      assert.equal(record.variable, name);
      assert.match(String(record.msg), /^invalid settings: /);
      assert.match(String(record.msg), mention);
    });
  }

  test("LOG_FORMAT=pretty: the same error as one plain line", async () => {
    const { code, lines } = await runToExit({ ...base(), LOG_FORMAT: "pretty", BATCH_SIZE: "abc" });
    assert.equal(code, 2);
    assert.equal(lines.length, 1, lines.join("\n"));
    assert.match(lines[0]!, /^schematic-replicator: invalid settings: BATCH_SIZE="abc" is not an integer/);
  });

  test("a variable one typo away from a setting: exit 2 naming the setting meant", async () => {
    const { code, lines } = await runToExit({ ...base(), REDIS_PASWORD: "secret" });
    assert.equal(code, 2, lines.join("\n"));
    assert.equal(lines.length, 1, lines.join("\n"));
    assert.match(lines[0]!, /REDIS_PASWORD is not a setting \(expected REDIS_PASSWORD/);
    assert.ok(!lines[0]!.includes("secret"), "the value is not shown");
  });

  test("SCHEMATIC_API_KEY missing: exit 2 with one line saying how to set it", async () => {
    const env = base();
    delete env.SCHEMATIC_API_KEY;
    const { code, lines } = await runToExit(env);
    assert.equal(code, 2, lines.join("\n"));
    assert.equal(lines.length, 1, `one line of output:\n${lines.join("\n")}`);
    assert.match(lines[0]!, /SCHEMATIC_API_KEY is not set/);
    assert.match(lines[0]!, /export SCHEMATIC_API_KEY=/);
  });

  test("a wrong API key: exit 3 with a clear line, before contending for the lease", async () => {
    const { code, lines, plain } = await runToExit({ ...base(), SCHEMATIC_API_KEY: "a-wrong-key" });
    assert.equal(code, 3, lines.slice(-10).join("\n"));
    assert.equal(plain.length, 1, `one plain line:\n${plain.join("\n")}`);
    assert.match(
      plain[0]!,
      /^schematic-replicator: the Schematic API rejected the API key \(HTTP 401 on GET \/companies\/count\)/,
    );
    assert.ok(!lines.join("\n").includes("a-wrong-key"), "the key itself is never printed");
    assert.ok(!lines.some((l) => l.includes("waiting for the writer lease")), "it never contended for the lease");
  });

  test("a wrong API key the datastream refuses with close 4001: exit 3 with a clear line", async () => {
    const { code, lines, plain } = await runToExit({
      ...base(),
      SCHEMATIC_API_URL: closing.url,
      SCHEMATIC_API_KEY: "a-wrong-key",
    });
    assert.equal(code, 3, lines.slice(-10).join("\n"));
    assert.equal(plain.length, 1, `one plain line:\n${plain.join("\n")}`);
    assert.match(plain[0]!, /^schematic-replicator: the datastream rejected the API key \(close 4001/);
  });

  test("Redis refuses the password: exit 1 with one line, after REDIS_MAX_RETRIES attempts", async () => {
    const { code, lines, plain } = await runToExit({
      ...base(),
      REDIS_ADDR: secured.addr,
      REDIS_PASSWORD: "not-the-password",
      REDIS_MAX_RETRIES: "2",
    });
    assert.equal(code, 1, lines.slice(-10).join("\n"));
    assert.equal(plain.length, 1, `one plain line:\n${plain.join("\n")}`);
    assert.match(
      plain[0]!,
      /^schematic-replicator: Redis rejected the password \(WRONGPASS .*\) at .* \(after 2 attempts\)$/,
    );
  });

  test("Redis started after the replicator: it waits, saying why on /health, then loads", async () => {
    const port = await freePort();
    const rep = await startReplicator({ ...base(), REDIS_ADDR: `127.0.0.1:${port}` });
    let late: RedisServer | undefined;
    try {
      const health = await waitFor(
        async () => {
          const h = await rep.health();
          return h.status === 200 && h.body.redis_error ? h : undefined;
        },
        { timeoutMs: 90_000, what: "/health to report the Redis failure" },
      );
      assert.equal((health.body.components as Record<string, unknown>).redis, "connecting");
      assert.match(
        String(health.body.redis_error),
        new RegExp(`127\\.0\\.0\\.1:${port} is unreachable: .*ECONNREFUSED`),
      );
      assert.match(String(health.body.reason), /waiting for Redis/);
      assert.equal((await rep.ready()).status, 503);
      // Several attempts (backoff from 200 ms) in the next seconds, logged once: the same reason is repeated at
      // most every 30 s.
      await new Promise((r) => setTimeout(r, 3000));
      assert.equal(rep.process.exitCode, null, "still running");
      const waiting = jsonLogs(rep.logs).filter((l) => String(l.msg).startsWith("Redis not reachable yet"));
      assert.equal(waiting.length, 1, waiting.map((l) => JSON.stringify(l)).join("\n"));
      assert.match(String(waiting[0]!.err), /ECONNREFUSED/);

      late = await startRedis({ port });
      await rep.waitReady();
      const ready = await rep.health();
      assert.equal((ready.body.components as Record<string, unknown>).redis, "connected");
      assert.equal(ready.body.redis_error, undefined);
      assert.equal(await rep.stop(), 0);
    } finally {
      await rep.stop("SIGKILL");
      await late?.stop();
    }
  });

  test("as PID 1 (of its own PID namespace), SIGTERM before Redis answers: exit 0", {
    skip: canUnshare ? false : "unshare cannot create a PID namespace here",
  }, async () => {
    const rep = await startReplicator(
      { ...base(), REDIS_ADDR: `127.0.0.1:${await freePort()}` },
      { wrapper: ["unshare", "-rpf", "--kill-child"] },
    );
    try {
      await waitFor(async () => (await rep.health()).status === 200, { timeoutMs: 90_000, what: "/health to answer" });
      // The replicator is the child of unshare, PID 1 inside: only a signal it handles reaches it.
      const pid = Number(execFileSync("ps", ["-o", "pid=", "--ppid", String(rep.process.pid)], { encoding: "utf8" }));
      process.kill(pid, "SIGTERM");
      assert.equal(await rep.exited, 0, rep.logs.slice(-10).join("\n"));
    } finally {
      await rep.stop("SIGKILL");
    }
  });

  test("SIGTERM before Redis answers: exit 0 at once", async () => {
    const rep: ReplicatorProcess = await startReplicator({ ...base(), REDIS_ADDR: `127.0.0.1:${await freePort()}` });
    try {
      await waitFor(async () => (await rep.health()).status === 200, { timeoutMs: 90_000, what: "/health to answer" });
      assert.equal(await rep.stop("SIGTERM"), 0, rep.logs.slice(-10).join("\n"));
      assert.ok(
        jsonLogs(rep.logs).some((l) => l.msg === "shutting down" && l.reason === "SIGTERM"),
        "it says it is shutting down",
      );
    } finally {
      await rep.stop("SIGKILL");
    }
  });
});
