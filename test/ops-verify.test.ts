/**
 * `schematic-replicator verify` as a real process (docs/design/decisions.md "verify and snapshots"): after a
 * replicator has loaded examples/fixture.json from the emulator, Redis is in sync with each kind of source (the
 * emulator's dump URL, the fixture file, the API itself: REST + a datastream session); a planted drift (a missing,
 * a stale and an extra key) is reported line by line with exit 1 by every source; and every way of not being able
 * to run (bad usage, unreadable source, rejected API key, unreachable Redis) exits 2 with one line on stderr.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { Redis } from "ioredis";
import { loadFixtureFile, type RunningEmulator, startEmulator } from "../src/emulator/index.js";
import { freePort, type RedisServer, startRedis } from "./helpers/redis.js";
import { type ReplicatorProcess, startReplicator, testEnv } from "./helpers/replicator.js";
import { FIXTURE, quietRedis, runCli, VERSION } from "./ops-helpers.js";

const API_KEY = "ops-verify-key";

describe("verify", { timeout: 240_000 }, () => {
  let redis: RedisServer;
  let emulator: RunningEmulator;
  let replicator: ReplicatorProcess;
  let client: Redis;
  let env: Record<string, string>;
  let dumpUrl: string;

  before(async () => {
    redis = await startRedis();
    emulator = await startEmulator({ fixture: loadFixtureFile(FIXTURE), apiKey: API_KEY });
    replicator = await startReplicator(
      testEnv({ REDIS_ADDR: redis.addr, SCHEMATIC_API_URL: emulator.url, SCHEMATIC_API_KEY: API_KEY }),
    );
    await replicator.waitReady();
    client = quietRedis(redis.port);
    // verify reads the settings as the service does; the API ones only matter for --source api.
    env = { REDIS_ADDR: redis.addr, SCHEMATIC_API_URL: emulator.url, SCHEMATIC_API_KEY: API_KEY };
    dumpUrl = `${emulator.url}/_emulator/dump`;
  });

  after(async () => {
    await replicator?.stop();
    client?.disconnect();
    await emulator?.close();
    await redis?.stop();
  });

  test("a freshly replicated Redis is in sync with the dump URL, the fixture file and the API (exit 0)", async () => {
    const [url, file, api] = await Promise.all([
      runCli(["verify", "--source", dumpUrl], env),
      runCli(["verify", `--source=${FIXTURE}`], env),
      runCli(["verify"], env), // default: --source api
    ]);
    for (const [name, r] of [
      ["url", url],
      ["file", file],
      ["api", api],
    ] as const) {
      assert.equal(r.code, 0, `${name}: ${r.stdout}${r.stderr}`);
      const lines = r.stdout.trim().split("\n");
      assert.equal(lines.length, 1, `${name}: only the summary line: ${r.stdout}`);
      assert.match(lines[0]!, /^in sync: \d+ keys checked against /);
      assert.match(lines[0]!, new RegExp(`cache version ${VERSION}, marker loaded`));
      assert.equal(r.stderr, "", `${name}: nothing on stderr`);
    }
    assert.match(api.stdout, /against api http:\/\/127\.0\.0\.1:/);
    // 14 flags + 50 companies (3 keys each) + 100 users (3 keys each) = 464 keys.
    assert.match(file.stdout, /^in sync: 464 keys checked/);
  });

  test("a planted drift is reported as missing, stale and extra lines with exit 1, by every source", async () => {
    // Nothing may repair the drift while we look at it.
    assert.equal(await replicator.stop(), 0);
    const acmeKey = `schematic:company:${VERSION}:comp_acme`;
    const bobKey = `schematic:user:${VERSION}:user_002`;
    const ghostKey = `schematic:flags:${VERSION}:ghost-flag`;
    const acme = await client.get(acmeKey);
    const bob = await client.get(bobKey);
    assert.ok(acme && bob);
    const changed = JSON.parse(bob) as { traits: { value: string }[] };
    changed.traits[0]!.value = "changed";
    await client.del(acmeKey);
    await client.set(bobKey, JSON.stringify(changed));
    await client.set(ghostKey, JSON.stringify({ id: "flag_ghost", key: "ghost-flag" }));

    const results = await Promise.all([
      runCli(["verify", "--source", dumpUrl], env),
      runCli(["verify", "--source", FIXTURE], env),
      runCli(["verify", "--source", "api"], env),
    ]);
    for (const r of results) {
      assert.equal(r.code, 1, r.stdout + r.stderr);
      const lines = r.stdout.trim().split("\n");
      assert.deepEqual(lines.slice(0, -1), [
        `missing ${acmeKey}`,
        `extra ${ghostKey}`,
        `stale ${bobKey} (value differs at .traits[0].value: "changed" vs "member")`,
      ]);
      assert.match(lines.at(-1)!, /^drift: 3 differences \(1 missing, 1 stale, 1 extra\); \d+ keys checked/);
    }

    // Repaired by hand: in sync again.
    await client.set(acmeKey, acme);
    await client.set(bobKey, bob);
    await client.del(ghostKey);
    const again = await runCli(["verify", "--source", FIXTURE], env);
    assert.equal(again.code, 0, again.stdout + again.stderr);
  });

  test("the key prefix and cache version come from the environment as the service reads them", async () => {
    const [prefix, version] = await Promise.all([
      runCli(["verify", "--source", FIXTURE], { ...env, REDIS_KEY_PREFIX: "elsewhere:" }),
      runCli(["verify", "--source", FIXTURE], { ...env, CACHE_VERSION: "deadbeef" }),
    ]);
    for (const r of [prefix, version]) {
      assert.equal(r.code, 1, r.stdout + r.stderr);
      const lines = r.stdout.trim().split("\n");
      assert.equal(lines.length, 465, "every expected key is missing, plus the summary");
      assert.ok(lines.slice(0, -1).every((l) => l.startsWith("missing ")));
      assert.match(lines.at(-1)!, /^drift: 464 differences \(464 missing, 0 stale, 0 extra\)/);
    }
    assert.match(prefix.stdout, /^missing elsewhere:flags:4b54a537:/m);
    assert.match(version.stdout, /^missing schematic:flags:deadbeef:/m);
  });

  test("when it cannot run it exits 2 with one line on stderr and nothing on stdout", async () => {
    const closed = await freePort();
    const cases: [string, string[], Record<string, string>, RegExp][] = [
      ["unknown argument", ["verify", "--bogus"], env, /unknown argument "--bogus"/],
      ["--source without a value", ["verify", "--source"], env, /--source needs a value/],
      ["missing file", ["verify", "--source", "/nonexistent/fixture.json"], env, /cannot read the file \(ENOENT\)/],
      [
        "unreachable URL",
        ["verify", "--source", `http://127.0.0.1:${closed}/_emulator/dump`],
        env,
        /cannot fetch http:\/\/127\.0\.0\.1:\d+\/_emulator\/dump: ECONNREFUSED/,
      ],
      ["API key rejected", ["verify"], { ...env, SCHEMATIC_API_KEY: "not-the-key" }, /rejected the API key \(HTTP 401/],
      ["no API key for --source api", ["verify"], { REDIS_ADDR: redis.addr }, /SCHEMATIC_API_KEY is not set/],
      [
        "Redis unreachable",
        ["verify", "--source", FIXTURE],
        { REDIS_ADDR: `127.0.0.1:${closed}`, REDIS_MAX_RETRIES: "1", REDIS_DIAL_TIMEOUT: "500ms" },
        /Redis at 127\.0\.0\.1:\d+ is unreachable/,
      ],
      [
        "invalid settings",
        ["verify", "--source", FIXTURE],
        { ...env, CACHE_TTL: "soon" },
        /invalid settings: CACHE_TTL/,
      ],
    ];
    const results = await Promise.all(cases.map(([, args, e]) => runCli(args, e)));
    cases.forEach(([name, , , pattern], i) => {
      const r = results[i]!;
      assert.equal(r.code, 2, `${name}: ${r.stdout}${r.stderr}`);
      assert.equal(r.stdout, "", `${name}: stdout`);
      const lines = r.stderr.trim().split("\n");
      assert.equal(lines.length, 1, `${name}: one line: ${r.stderr}`);
      assert.match(lines[0]!, /^schematic-replicator verify: /, name);
      assert.match(lines[0]!, pattern, name);
    });
  });

  test("--help explains the sources and exit codes", async () => {
    const r = await runCli(["verify", "--help"]);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /Usage: schematic-replicator verify \[--source api\|URL\|FILE\]/);
    assert.match(r.stdout, /Exit status: 0 in sync, 1 differences found, 2 could not run/);
  });
});
