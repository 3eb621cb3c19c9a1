/**
 * The `schematic-replicator` command line as a process: help (every setting with its default and meaning, from
 * the table the README's is generated from: test/ops-readme.test.ts) and version, an unknown command (exit 2 with the usage),
 * and `healthcheck`, the container probe that needs no curl: by default it asks /health — exit 0 while the process
 * is alive and doing its job, even when its data is not ready — and with `--ready` it asks /ready (exit 1 while
 * it answers 503); exit 1 when nothing answers at all.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { SETTING_NAMES } from "../src/config/index.js";
import { loadFixtureFile, type RunningEmulator, startEmulator } from "../src/emulator/index.js";
import { freePort, type RedisServer, startRedis } from "./helpers/redis.js";
import { type ReplicatorProcess, startReplicator, testEnv } from "./helpers/replicator.js";
import { FIXTURE, ROOT, runCli } from "./ops-helpers.js";

const VERSION = (JSON.parse(readFileSync(`${ROOT}/package.json`, "utf8")) as { version: string }).version;

describe("schematic-replicator command line", { timeout: 180_000 }, () => {
  test("--help, -h and help print the usage with every command (exit 0)", async () => {
    const results = await Promise.all([runCli(["--help"]), runCli(["-h"]), runCli(["help"])]);
    for (const r of results) {
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stderr, "");
      assert.match(r.stdout, /^Usage: schematic-replicator \[command\]/);
      for (const command of [
        "healthcheck",
        "verify [--source api|URL|FILE]",
        "snapshot export FILE",
        "snapshot import FILE",
      ]) {
        assert.ok(r.stdout.includes(command), command);
      }
    }
  });

  test("--help lists every setting with its default", async () => {
    const r = await runCli(["--help"]);
    for (const name of SETTING_NAMES) assert.match(r.stdout, new RegExp(`^    (.*, )?${name}\\b`, "m"), name);
    assert.match(r.stdout, /^ {4}WRITER_LOCK_TTL {2}\[default: 15s\]$/m);
    assert.match(r.stdout, /^ {4}SCHEMATIC_API_KEY {2}\[required\]$/m);
    assert.ok(!/README/.test(r.stdout), "it does not send the reader to a README the image lacks");
  });

  test("--version and -v print the package version (exit 0)", async () => {
    const results = await Promise.all([runCli(["--version"]), runCli(["-v"])]);
    for (const r of results) {
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `${VERSION}\n`);
    }
  });

  test("an unknown command exits 2 naming it, with the usage on stderr", async () => {
    const r = await runCli(["frobnicate"], { SCHEMATIC_API_KEY: "k" });
    assert.equal(r.code, 2);
    assert.equal(r.stdout, "");
    assert.match(r.stderr, /^schematic-replicator: unknown command "frobnicate"\n/);
    assert.match(r.stderr, /Usage: schematic-replicator/);
  });

  describe("healthcheck", () => {
    let redis: RedisServer;
    let emulator: RunningEmulator;
    let ready: ReplicatorProcess;
    let loading: ReplicatorProcess;

    before(async () => {
      redis = await startRedis();
      emulator = await startEmulator({ fixture: loadFixtureFile(FIXTURE) });
      ready = await startReplicator(testEnv({ REDIS_ADDR: redis.addr, SCHEMATIC_API_URL: emulator.url }));
      // Another Redis database and an API that does not answer: this one never gets its data, so it is not ready.
      const closed = await freePort();
      loading = await startReplicator(
        testEnv({ REDIS_ADDR: redis.addr, REDIS_DB: "1", SCHEMATIC_API_URL: `http://127.0.0.1:${closed}` }),
      );
      await ready.waitReady();
    });

    after(async () => {
      await ready?.stop();
      await loading?.stop();
      await emulator?.close();
      await redis?.stop();
    });

    test("--ready: exits 0 while /ready answers 200, printing the body; no API key is needed", async () => {
      const r = await runCli(["healthcheck", "--ready"], { HEALTH_PORT: String(ready.port) });
      assert.equal(r.code, 0, r.stderr);
      const body = JSON.parse(r.stdout) as Record<string, unknown>;
      assert.equal(body.ready, true);
      assert.equal(body.cache_version, "4b54a537");
    });

    test("--ready: exits 1 while /ready answers 503", async () => {
      assert.equal((await loading.ready()).status, 503);
      const r = await runCli(["healthcheck", "--ready"], { HEALTH_PORT: String(loading.port) });
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.equal((JSON.parse(r.stdout) as Record<string, unknown>).ready, false);
    });

    test("by default asks /health: exits 0 for an alive replicator whose data is not ready", async () => {
      const r = await runCli(["healthcheck"], { HEALTH_PORT: String(loading.port) });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const body = JSON.parse(r.stdout) as Record<string, unknown>;
      assert.equal(body.ready, false);
      assert.equal(body.status, "not_ready");
      assert.equal((await runCli(["healthcheck"], { HEALTH_PORT: String(ready.port) })).code, 0);
    });

    test("exits 1 with one line when nothing answers on HEALTH_PORT", async () => {
      const port = await freePort();
      for (const [args, path] of [
        [[], "/health"],
        [["--ready"], "/ready"],
      ] as const) {
        const r = await runCli(["healthcheck", ...args], { HEALTH_PORT: String(port) });
        assert.equal(r.code, 1);
        assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
        assert.match(r.stderr, new RegExp(`^healthcheck: ${path} on port ${port} did not answer`));
      }
    });

    test("exits 2 on an unknown argument", async () => {
      const r = await runCli(["healthcheck", "--live"]);
      assert.equal(r.code, 2);
      assert.match(r.stderr, /^healthcheck: unknown argument "--live"/);
    });

    test("exits 2 on invalid settings", async () => {
      const r = await runCli(["healthcheck"], { HEALTH_PORT: "http" });
      assert.equal(r.code, 2);
      assert.match(r.stderr, /invalid settings: HEALTH_PORT="http"/);
    });
  });
});
