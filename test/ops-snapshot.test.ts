/**
 * `schematic-replicator snapshot export|import` as real processes (docs/design/decisions.md "verify and snapshots"):
 *
 * - export from a replicated Redis writes a fixture that a fresh `schematic-emulator --fixture` loads and that
 *   describes the same data as examples/fixture.json;
 * - import into an empty Redis recreates the replicated keyspace byte for byte (bodies and lookups), removes the
 *   current version's keys the snapshot lacks (never other versions'), clears the stale replay cursor, writes the
 *   marker `loaded` and releases the lease; `verify` then reports it in sync, and the official SDK in replicator
 *   mode reads the right flag values from it;
 * - the lease: import waits for a lapsed lease, but gives up (exit 1, nothing written) while a live replicator
 *   holds it; a bad fixture is refused (exit 2) before Redis is touched;
 * - the purpose: a replicator started on the imported Redis while the API is unreachable is ready at once and
 *   serves the snapshot, then converges on the API's data as soon as it answers.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import type { Redis } from "ioredis";
import { loadFixtureFile, type RunningEmulator, startEmulator } from "../src/emulator/index.js";
import { expectedCompany, expectedUser, sameEntity } from "../src/model/equivalence.js";
import type { Fixture } from "../src/model/wire.js";
import { freePort, type RedisServer, startRedis, waitFor } from "./helpers/redis.js";
import { type ReplicatorProcess, startReplicator, testEnv } from "./helpers/replicator.js";
import { type Check, FIXTURE, quietRedis, runCli, sdkValues, snapshotKeys, stubReady, VERSION } from "./ops-helpers.js";

const API_KEY = "ops-snapshot-key";
const EMULATOR = fileURLToPath(new URL("../src/cli/emulator.ts", import.meta.url));
/** A short lease for the import; a renewal must fit in a third of it, so the Redis timeouts are short too. */
const SHORT_LEASE = { WRITER_LOCK_TTL: "2s", REDIS_READ_TIMEOUT: "500ms", REDIS_WRITE_TIMEOUT: "500ms" };
const CACHE_KEY = new RegExp(`^schematic:(flags|company|user):${VERSION}:`);

/** Checks with their values worked out by hand from examples/fixture.json (see test/emulator-sdk.test.ts). */
const CHECKS: [Check, boolean][] = [
  [{ flag: "dashboards", company: { domain: "acme.example" } }, true], // Pro plan
  [{ flag: "dashboards", company: { slug: "soylent" } }, false], // Free plan
  [{ flag: "advanced-reports", company: { domain: "umbrella.example" } }, false], // 150 of 100 reports
  [{ flag: "advanced-reports", company: { domain: "globex.example" } }, true], // company override on
  [{ flag: "sso", company: { domain: "hooli.example" } }, false], // company override off
  [{ flag: "sso", company: { domain: "initech.example" } }, true], // SSO add-on
  [{ flag: "internal-tools", company: { domain: "globex.example" }, user: { email: "alice@acme.example" } }, true],
  [{ flag: "legacy-export", company: { slug: "soylent" } }, false], // global override beats the company's
];

describe("snapshot export and import", { timeout: 300_000 }, () => {
  let source: RedisServer;
  let target: RedisServer;
  let emulator: RunningEmulator;
  let replicator: ReplicatorProcess;
  let sourceClient: Redis;
  let targetClient: Redis;
  let dir: string;
  let file: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "ops-snapshot-"));
    file = join(dir, "snapshot.json");
    [source, target] = await Promise.all([startRedis(), startRedis()]);
    emulator = await startEmulator({ fixture: loadFixtureFile(FIXTURE), apiKey: API_KEY });
    replicator = await startReplicator(
      testEnv({ REDIS_ADDR: source.addr, SCHEMATIC_API_URL: emulator.url, SCHEMATIC_API_KEY: API_KEY }),
    );
    await replicator.waitReady();
    sourceClient = quietRedis(source.port);
    targetClient = quietRedis(target.port);
  });

  after(async () => {
    await replicator?.stop();
    sourceClient?.disconnect();
    targetClient?.disconnect();
    await emulator?.close();
    await source?.stop();
    await target?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("export writes a fixture of the replicated data that a fresh emulator loads", async () => {
    // No API key is needed: export talks only to Redis.
    const r = await runCli(["snapshot", "export", file], { REDIS_ADDR: source.addr });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(r.stderr, "");
    assert.match(r.stdout, /^exported 14 flags, 50 companies and 100 users \(cache version 4b54a537, marker loaded\)/);

    const exported = loadFixtureFile(file); // the emulator's strict validation
    const original = loadFixtureFile(FIXTURE);
    assert.deepEqual(
      exported.flags,
      [...original.flags].sort((a, b) => (a.key < b.key ? -1 : 1)),
    );
    assert.equal(exported.companies.length, original.companies.length);
    assert.equal(exported.users.length, original.users.length);
    for (const c of original.companies) {
      const e = exported.companies.find((x) => x.id === c.id);
      assert.ok(e && sameEntity(expectedCompany(e), expectedCompany(c)), `company ${c.id}`);
    }
    for (const u of original.users) {
      const e = exported.users.find((x) => x.id === u.id);
      assert.ok(e && sameEntity(expectedUser(e), expectedUser(u)), `user ${u.id}`);
    }

    // "-" writes the document to stdout and the report to stderr.
    const toStdout = await runCli(["snapshot", "export", "-"], { REDIS_ADDR: source.addr });
    assert.equal(toStdout.code, 0, toStdout.stderr);
    assert.deepEqual(JSON.parse(toStdout.stdout), JSON.parse(readFileSync(file, "utf8")));
    assert.match(toStdout.stderr, /^exported 14 flags, 50 companies and 100 users .* to stdout\n$/);

    // A fresh emulator loads it.
    const emu = spawn(process.execPath, ["--import", "tsx", EMULATOR, "--port", "0", "--fixture", file], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    const firstLine = await new Promise<string>((resolve, reject) => {
      let out = "";
      emu.stdout.on("data", (d) => {
        out += d;
        if (out.includes("\n")) resolve(out.split("\n")[0]!);
      });
      emu.once("exit", (code) => reject(new Error(`the emulator exited with ${code}`)));
    });
    assert.match(firstLine, /^schematic-emulator listening on http:\/\/127\.0\.0\.1:\d+$/);
    const url = firstLine.slice("schematic-emulator listening on ".length);
    const state = (await (await fetch(`${url}/_emulator/state`)).json()) as Record<string, number>;
    assert.deepEqual([state.flags, state.companies, state.users], [14, 50, 100]);
    const exit = new Promise((resolve) => emu.once("exit", resolve));
    emu.kill("SIGTERM");
    assert.equal(await exit, 0);
  });

  test("import into an empty Redis recreates the keyspace, the marker, and nothing else", async () => {
    // Left-overs: a current-version key the snapshot lacks, another version's key, an old replay cursor.
    await targetClient.set(`schematic:flags:${VERSION}:retired-flag`, "{}");
    await targetClient.set("schematic:flags:0ldver51:kept", "{}");
    await targetClient.set("schematic:datastream:replay_cursor", "1700000000000-0");

    const r = await runCli(["snapshot", "import", file], { REDIS_ADDR: target.addr, ...SHORT_LEASE });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(
      r.stdout,
      /imported 14 flags, 50 companies and 100 users from .*snapshot\.json \(464 keys written, 1 removed; cache version 4b54a537; marker loaded\)/,
    );

    // Byte for byte what the replicator wrote.
    const isCache = (k: string) => CACHE_KEY.test(k);
    const want = await snapshotKeys(sourceClient, isCache);
    const got = await snapshotKeys(targetClient, isCache);
    assert.equal(got.size, 464);
    assert.deepEqual([...got.keys()], [...want.keys()]);
    for (const [key, value] of want) assert.equal(got.get(key), value, key);

    assert.equal(await targetClient.get("schematic:flags:0ldver51:kept"), "{}", "other versions are left alone");
    assert.equal(await targetClient.exists("schematic:datastream:replay_cursor"), 0, "the old cursor is gone");
    assert.equal(await targetClient.exists("schematic:datastream:writer_lock"), 0, "the lease was released");
    const marker = JSON.parse((await targetClient.get(`schematic:datastream:state:${VERSION}`)) ?? "null");
    assert.equal(marker?.state, "loaded");
    assert.equal(marker?.stale_since, undefined);
    assert.equal(await targetClient.pttl(`schematic:company:${VERSION}:comp_acme`), -1, "no expiry without CACHE_TTL");

    const [fromFile, fromFixture] = await Promise.all([
      runCli(["verify", "--source", file], { REDIS_ADDR: target.addr }),
      runCli(["verify", "--source", FIXTURE], { REDIS_ADDR: target.addr }),
    ]);
    assert.equal(fromFile.code, 0, fromFile.stdout);
    assert.equal(fromFixture.code, 0, fromFixture.stdout);
  });

  test("the official SDK in replicator mode reads the right values from the imported Redis", async () => {
    const stub = await stubReady();
    try {
      const checks = CHECKS.map(([c]) => c);
      const imported = await sdkValues(target.url, stub.url, checks, stub.base);
      const replicated = await sdkValues(source.url, `${replicator.url}/ready`, checks, stub.base);
      assert.deepEqual(replicated.errors, []);
      assert.deepEqual(imported.errors, [], "no fallback to the API");
      assert.deepEqual(
        imported.values,
        CHECKS.map(([, v]) => v),
        imported.reasons.join("\n"),
      );
      assert.deepEqual(imported.values, replicated.values);
      assert.deepEqual(imported.reasons, replicated.reasons);
    } finally {
      await stub.close();
    }
  });

  test("import waits for a lapsed lease, but not for a live replicator's (exit 1, nothing written)", async () => {
    // A writer that crashed: its lease lapses within its TTL, and the import goes ahead.
    await targetClient.set(
      "schematic:datastream:writer_lock",
      "crashed-host-1-0123456789abcdef0123456789abcdef",
      "PX",
      1500,
    );
    const started = Date.now();
    const waited = await runCli(["snapshot", "import", file], { REDIS_ADDR: target.addr, ...SHORT_LEASE });
    assert.equal(waited.code, 0, waited.stdout + waited.stderr);
    assert.ok(Date.now() - started >= 1000, "it waited for the lease to lapse");

    // The live replicator renews its lease: the import gives up after --wait.
    const before = await snapshotKeys(sourceClient, (k) => CACHE_KEY.test(k) || k.includes("datastream:state"));
    const busy = await runCli(["snapshot", "import", file, "--wait", "800ms"], { REDIS_ADDR: source.addr });
    assert.equal(busy.code, 1, busy.stdout + busy.stderr);
    assert.equal(busy.stdout, "");
    const lines = busy.stderr.trim().split("\n");
    assert.equal(lines.length, 1, busy.stderr);
    assert.match(
      lines[0]!,
      /^schematic-replicator snapshot import: the writer lease schematic:datastream:writer_lock is held by \S+ and was not released within 800 ms/,
    );
    assert.doesNotMatch(lines[0]!, /[0-9a-f]{32}/, "the fencing token is not shown");
    const afterwards = await snapshotKeys(sourceClient, (k) => CACHE_KEY.test(k) || k.includes("datastream:state"));
    assert.deepEqual(afterwards, before);
  });

  test("a bad fixture or bad usage is refused with exit 2 before Redis is touched", async () => {
    const bad = join(dir, "bad.json");
    const doc = JSON.parse(readFileSync(FIXTURE, "utf8")) as Fixture;
    (doc.companies[3] as unknown as Record<string, unknown>).keys = {};
    writeFileSync(bad, JSON.stringify(doc));
    const closed = await freePort();
    const cases: [string[], RegExp][] = [
      [["snapshot", "import", bad], /bad fixture .*bad\.json at \$\.companies\[3\]\.keys: /],
      [
        ["snapshot", "import", join(dir, "missing.json")],
        /bad fixture .*missing\.json at \$: cannot read the file \(ENOENT\)/,
      ],
      [["snapshot"], /expected export FILE or import FILE/],
      [["snapshot", "restore", file], /unknown action "restore"/],
      [["snapshot", "export"], /snapshot export needs a FILE/],
      [["snapshot", "import", file, "--wait", "soon"], /--wait "soon" is not a duration/],
    ];
    const results = await Promise.all(cases.map(([args]) => runCli(args, { REDIS_ADDR: `127.0.0.1:${closed}` })));
    cases.forEach(([args, pattern], i) => {
      const r = results[i]!;
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stdout}${r.stderr}`);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
      assert.match(r.stderr, pattern);
    });
    const help = await runCli(["snapshot", "--help"]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /snapshot import FILE \[--wait DURATION\]/);
  });

  test("a replicator on the imported Redis is ready while the API is down, then converges on the API", async () => {
    // A snapshot older than the API's data: one user fewer, one company on another plan.
    const older = JSON.parse(readFileSync(file, "utf8")) as Fixture;
    older.users = older.users.filter((u) => u.id !== "user_100");
    older.companies.find((c) => c.id === "comp_soylent")!.plan_ids = ["plan_pro"];
    const olderFile = join(dir, "older.json");
    writeFileSync(olderFile, JSON.stringify(older));
    const imported = await runCli(["snapshot", "import", olderFile], {
      REDIS_ADDR: target.addr,
      ...SHORT_LEASE,
    });
    assert.equal(imported.code, 0, imported.stdout + imported.stderr);
    assert.match(imported.stdout, /3 removed/, "user_100's id key and two lookup keys");
    const drift = await runCli(["verify", "--source", FIXTURE], { REDIS_ADDR: target.addr });
    assert.equal(drift.code, 1);
    assert.match(drift.stdout, /^drift: 4 differences \(3 missing, 1 stale, 0 extra\)/m);

    // The API is unreachable: nothing listens on its port yet.
    const apiPort = await freePort();
    const standalone = await startReplicator(
      testEnv({
        REDIS_ADDR: target.addr,
        SCHEMATIC_API_URL: `http://127.0.0.1:${apiPort}`,
        SCHEMATIC_API_KEY: API_KEY,
      }),
    );
    let late: RunningEmulator | undefined;
    try {
      await standalone.waitReady(30_000);
      const ready = await standalone.ready();
      assert.equal(ready.body.ready, true);
      assert.equal(ready.body.connected, false);
      assert.equal(typeof ready.body.stale_since, "string");

      // The API comes up: the replicator loads it and Redis converges on it.
      late = await startEmulator({ fixture: loadFixtureFile(FIXTURE), apiKey: API_KEY, port: apiPort });
      await waitFor(
        async () =>
          (await runCli(["verify", "--source", `${late!.url}/_emulator/dump`], { REDIS_ADDR: target.addr })).code === 0,
        { timeoutMs: 60_000, intervalMs: 500, what: "the imported Redis to converge on the API" },
      );
      assert.equal((await standalone.ready()).body.connected, true);
    } finally {
      assert.equal(await standalone.stop(), 0);
      await late?.close();
    }
  });
});
