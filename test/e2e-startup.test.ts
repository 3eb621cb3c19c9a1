/**
 * End to end, start-up failures of the real replicator process: each one exits with its documented code and one
 * clear line, never a live process that has silently given up.
 *
 * - Invalid settings: exit 2, exactly one line of output naming the variable and the value.
 * - SCHEMATIC_API_KEY missing: exit 2, the line says how to set it.
 * - A wrong API key: exit 3 with a line saying the key was rejected, for both refusal styles of the emulator
 *   (HTTP 401 at the upgrade, the default; and "accept, then close 4001" through the `auth_failure` fault).
 * - Redis unreachable at start-up (REDIS_MAX_RETRIES=1): exit 1 with a line naming Redis and its address.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { loadFixtureFile, type RunningEmulator, startEmulator } from "../src/emulator/index.js";
import { admin } from "./helpers/e2e.js";
import { freePort, type RedisServer, startRedis } from "./helpers/redis.js";
import { type ReplicatorProcess, startReplicator, testEnv } from "./helpers/replicator.js";

const FIXTURE_FILE = fileURLToPath(new URL("../examples/fixture.json", import.meta.url));
const EXIT_TIMEOUT_MS = 60_000;

/** Runs the replicator to its exit; returns the code and its output lines (JSON log records and plain lines). */
async function runToExit(
  env: Record<string, string>,
): Promise<{ code: number | null; lines: string[]; plain: string[] }> {
  const rep: ReplicatorProcess = await startReplicator(env);
  const timer = setTimeout(() => rep.process.kill("SIGKILL"), EXIT_TIMEOUT_MS);
  try {
    const code = await rep.exited;
    // The exit event may precede the last output chunks.
    await new Promise<void>((resolve) => {
      if (rep.process.stdout?.readableEnded && rep.process.stderr?.readableEnded) resolve();
      else rep.process.once("close", () => resolve());
    });
    return { code, lines: [...rep.logs], plain: rep.logs.filter((l) => !l.startsWith("{")) };
  } finally {
    clearTimeout(timer);
  }
}

describe("end to end: start-up failures exit with their code and one clear line", { concurrency: true }, () => {
  let redis: RedisServer;
  let strict: RunningEmulator;
  let closing: RunningEmulator;

  before(async () => {
    const fixture = loadFixtureFile(FIXTURE_FILE);
    [redis, strict, closing] = await Promise.all([
      startRedis(),
      startEmulator({ fixture, apiKey: "the-right-key" }),
      startEmulator({ fixture, apiKey: "the-right-key" }),
    ]);
    // REST (which answers 401 to a wrong key too) slowed down, so that the close 4001 decides the outcome.
    await admin(closing.url, "POST", "/faults", { auth_failure: "close4001", rest_latency_ms: 2000 });
  });

  after(async () => {
    await redis?.stop();
    await strict?.close();
    await closing?.close();
  });

  const base = () =>
    testEnv({ SCHEMATIC_API_URL: strict.url, REDIS_ADDR: redis.addr, SCHEMATIC_API_KEY: "the-right-key" });

  for (const [name, value, mention] of [
    ["BATCH_SIZE", "abc", /BATCH_SIZE.*abc/],
    ["CACHE_TTL", "-5s", /CACHE_TTL.*-5s/],
  ] as const) {
    test(`${name}=${value}: exit 2 with one line naming the variable`, async () => {
      const { code, lines } = await runToExit({ ...base(), [name]: value });
      assert.equal(code, 2, lines.join("\n"));
      assert.equal(lines.length, 1, `one line of output:\n${lines.join("\n")}`);
      assert.match(lines[0]!, mention);
    });
  }

  test("SCHEMATIC_API_KEY missing: exit 2 with one line saying how to set it", async () => {
    const env = base();
    delete env.SCHEMATIC_API_KEY;
    const { code, lines } = await runToExit(env);
    assert.equal(code, 2, lines.join("\n"));
    assert.equal(lines.length, 1, `one line of output:\n${lines.join("\n")}`);
    assert.match(lines[0]!, /SCHEMATIC_API_KEY is not set/);
    assert.match(lines[0]!, /export SCHEMATIC_API_KEY=/);
  });

  test("a wrong API key refused with HTTP 401: exit 3 with a clear line", async () => {
    const { code, lines, plain } = await runToExit({ ...base(), SCHEMATIC_API_KEY: "a-wrong-key" });
    assert.equal(code, 3, lines.slice(-10).join("\n"));
    assert.equal(plain.length, 1, `one plain line:\n${plain.join("\n")}`);
    assert.match(plain[0]!, /^schematic-replicator: the datastream rejected the API key \(HTTP 401\)/);
    assert.ok(!lines.join("\n").includes("a-wrong-key"), "the key itself is never printed");
  });

  test("a wrong API key refused with close 4001: exit 3 with a clear line", async () => {
    const { code, lines, plain } = await runToExit({
      ...base(),
      SCHEMATIC_API_URL: closing.url,
      SCHEMATIC_API_KEY: "a-wrong-key",
    });
    assert.equal(code, 3, lines.slice(-10).join("\n"));
    assert.equal(plain.length, 1, `one plain line:\n${plain.join("\n")}`);
    assert.match(plain[0]!, /^schematic-replicator: the datastream rejected the API key \(close 4001/);
  });

  test("Redis unreachable at start-up (REDIS_MAX_RETRIES=1): exit 1 with a clear line", async () => {
    const addr = `127.0.0.1:${await freePort()}`;
    const { code, lines, plain } = await runToExit({ ...base(), REDIS_ADDR: addr, REDIS_MAX_RETRIES: "1" });
    assert.equal(code, 1, lines.slice(-10).join("\n"));
    assert.equal(plain.length, 1, `one plain line:\n${plain.join("\n")}`);
    assert.match(plain[0]!, /^schematic-replicator: Redis at .*127\.0\.0\.1:\d+.* is unreachable/);
  });
});
