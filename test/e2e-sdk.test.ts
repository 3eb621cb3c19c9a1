/**
 * End to end, with real processes: the emulator (examples/fixture.json) → the replicator (a child process) → a
 * private redis-server → the official SDKs in replicator mode.
 *
 * - The TypeScript SDK in replicator mode gives, for every flag and a table of contexts, the same results as the
 *   SDK in direct datastream mode against the same emulator and the values written by hand, without one request
 *   to the API (its basePath is a stub that counts and fails every request). The rules that decided the table
 *   cover every rule type and every condition type, and the values are not all alike.
 * - The Go SDK gives the same values (skipped, naming the cause, when the Go module proxy refuses the SDK).
 * - After every kind of admin change (company and user PUT, PATCH, DELETE and key change; flag PUT and DELETE)
 *   the SDK sees the new state and Redis equals the emulator again, the keys the change made obsolete gone.
 * - SIGTERM: exit 0, the writer lease released, the replay cursor and the readiness marker kept.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import type { Redis } from "ioredis";
import { loadFixtureFile, type RunningEmulator, startEmulator } from "../src/emulator/index.js";
import type { Company, Fixture, Flag, User } from "../src/model/wire.js";
import {
  admin,
  checkSdk,
  comparable,
  DEFAULT_CACHE_VERSION,
  defaultKeys,
  emulatorDump,
  emulatorState,
  type ReplicatorModeSdk,
  type SdkClient,
  type SdkResult,
  scanKeys,
  startApiStub,
  startDirectSdk,
  startReplicatorModeSdk,
  waitInSync,
} from "./helpers/e2e.js";
import { buildGoChecker, GoSdkUnavailableError, runGoChecks } from "./helpers/go-sdk.js";
import { type RedisServer, startRedis, waitFor } from "./helpers/redis.js";
import { type ReplicatorProcess, startReplicator, testEnv } from "./helpers/replicator.js";
import {
  allChecks,
  CONDITION_TYPES,
  type Context,
  conditionTypes,
  FLAGS,
  RULE_TYPES,
  rulesById,
  TABLE,
} from "./helpers/sdk-table.js";

const FIXTURE_FILE = fileURLToPath(new URL("../examples/fixture.json", import.meta.url));
const keys = defaultKeys();

describe("end to end: emulator → replicator → Redis → official SDKs in replicator mode", () => {
  const fixture: Fixture = loadFixtureFile(FIXTURE_FILE);
  let emu: RunningEmulator;
  let redis: RedisServer;
  let rep: ReplicatorProcess;
  let sdkR: ReplicatorModeSdk;
  let direct: SdkClient;
  /** The replicator-mode results of the table, by check name (for the Go SDK comparison). */
  const tsResults = new Map<string, SdkResult>();

  let client: Redis;
  const db = () => client;
  const emuAdmin = (method: string, path: string, body?: unknown) => admin(emu.url, method, path, body);
  const check = (ctx: Context, flag: string) => checkSdk(sdkR.client, ctx, flag);
  /** Polls the replicator-mode SDK until `accept` holds for the check's result. */
  const waitCheck = async (ctx: Context, flag: string, accept: (r: SdkResult) => boolean, what: string) =>
    await waitFor(async () => accept(await check(ctx, flag)), { timeoutMs: 60_000, what });
  const apiCalls = () => [...sdkR.stub.calls];
  const current = async <T extends "companies" | "users" | "flags">(kind: T, pick: (e: never) => boolean) => {
    const dump = await emulatorDump(emu.url);
    const found = (dump[kind] as never[]).find(pick);
    assert.ok(found, `${kind} entry in the emulator`);
    return structuredClone(found) as Fixture[T][number];
  };

  before(async () => {
    emu = await startEmulator({ fixture });
    redis = await startRedis();
    client = redis.client();
    // A lease that survives event-loop stalls on a busy machine (testEnv's 1.5 s is tuned for takeover tests).
    rep = await startReplicator(testEnv({ SCHEMATIC_API_URL: emu.url, REDIS_ADDR: redis.addr, WRITER_LOCK_TTL: "6s" }));
    await rep.waitReady(90_000);
    [sdkR, direct] = await Promise.all([
      startReplicatorModeSdk({
        redisUrl: redis.url,
        healthUrl: `${rep.url}/ready`,
        expectVersion: DEFAULT_CACHE_VERSION,
      }),
      startDirectSdk(emu.url, "legacy-export"),
    ]);
  });

  after(async () => {
    await sdkR?.close();
    await direct?.close();
    await rep?.stop();
    await redis?.stop();
    await emu?.close();
  });

  test("after the initial load Redis equals the fixture, under the cache version /ready announces", async () => {
    const ready = await rep.ready();
    assert.equal(ready.status, 200);
    assert.equal(ready.body.cache_version, DEFAULT_CACHE_VERSION);
    assert.equal(sdkR.cacheVersion(), DEFAULT_CACHE_VERSION, "the SDK learned the version from /ready");
    await waitInSync(db(), emu.url);
    // The keyspace the SDK will read is really there (not an empty diff over an empty source).
    assert.equal((await scanKeys(db(), keys.scanPattern("flags"))).length, FLAGS.length);
    assert.ok(await db().get(keys.companyId("comp_acme")));
    assert.equal(await db().get(keys.companyLookups("domain", "acme.example")[0]!), '"comp_acme"');
  });

  test("the TypeScript SDK in replicator mode agrees with direct mode and the hand-written table, never calling the API", async () => {
    const checks = allChecks();
    assert.ok(checks.length >= 30, `${checks.length} checks`);
    const mismatches: string[] = [];
    const ruleTypes = new Set<string>();
    const conditions = new Set<string>();
    const rules = rulesById(fixture);
    for (const c of checks) {
      const viaRedis = await check(c.row.context, c.flag);
      const viaStream = await checkSdk(direct, c.row.context, c.flag);
      tsResults.set(c.name, viaRedis);
      assert.deepEqual(comparable(viaRedis), comparable(viaStream), `${c.name}: replicator mode vs direct mode`);
      if (viaRedis.value !== c.expected)
        mismatches.push(`${c.name} = ${viaRedis.value}, written by hand: ${c.expected}`);
      // A company or user missing from Redis is silently evaluated as absent: every context must resolve.
      if (c.row.context.company) assert.ok(viaRedis.companyId, `${c.name}: the company was found in Redis`);
      if (c.row.context.user) assert.ok(viaRedis.userId, `${c.name}: the user was found in Redis`);
      if (viaRedis.ruleType) ruleTypes.add(viaRedis.ruleType);
      const rule = viaRedis.ruleId ? rules.get(viaRedis.ruleId) : undefined;
      if (rule) for (const t of conditionTypes(rule)) conditions.add(t);
    }
    assert.deepEqual(mismatches, []);
    assert.deepEqual(sdkR.stub.calls, [], "the replicator-mode SDK never called the API");
    assert.equal((await emulatorState(emu.url)).requests.flag_checks, 0, "the direct-mode SDK never fell back");

    // The table proves something: both values occur often, and every rule and condition type decided some check.
    const trues = [...tsResults.values()].filter((r) => r.value).length;
    assert.ok(trues >= 50 && checks.length - trues >= 50, `${trues} true of ${checks.length}`);
    assert.deepEqual([...ruleTypes].sort(), [...RULE_TYPES].sort(), "rule types that decided a check");
    assert.deepEqual([...conditions].sort(), [...CONDITION_TYPES].sort(), "condition types of deciding rules");

    // A few rows spelled out (engine order): the kill switch beats a company override; exceeded usage wins.
    const v = (row: string, flag: string) => tsResults.get(`${row} / ${flag}`);
    assert.deepEqual(
      [v("soylent", "legacy-export")?.value, v("soylent", "legacy-export")?.ruleType],
      [false, "global_override"],
    );
    assert.deepEqual([v("hooli", "sso")?.value, v("hooli", "sso")?.ruleType], [false, "company_override"]);
    assert.deepEqual(
      [v("umbrella", "bulk-export")?.value, v("umbrella", "bulk-export")?.ruleType],
      [false, "company_override_usage_exceeded"],
    );
    assert.deepEqual(
      [v("umbrella", "advanced-reports")?.value, v("umbrella", "advanced-reports")?.ruleType],
      [false, "plan_entitlement_usage_exceeded"],
    );
    assert.deepEqual([v("acme", "dashboards")?.value, v("acme", "dashboards")?.ruleType], [true, "plan_entitlement"]);
    assert.deepEqual([v("wayne", "sso")?.value, v("wayne", "sso")?.ruleType], [true, "standard"]);
    assert.deepEqual(
      [v("acme", "onboarding-checklist")?.value, v("acme", "onboarding-checklist")?.ruleType],
      [true, "default"],
    );
  });

  test("bulk checkFlags (Redis only while the SDK considers the replicator ready) gives the same values", async () => {
    for (const row of TABLE.slice(0, 6)) {
      const bulk = await sdkR.client.checkFlags(row.context, [...FLAGS]);
      const singles = await Promise.all(FLAGS.map(async (f) => (await check(row.context, f)).value));
      assert.deepEqual(
        bulk.map((r) => r.value),
        singles,
        row.name,
      );
    }
    assert.deepEqual(sdkR.stub.calls, [], "no API calls");
  });

  test("the Go SDK in replicator mode gives the same values", async (t) => {
    let bin: string;
    try {
      bin = await buildGoChecker();
    } catch (err) {
      if (err instanceof GoSdkUnavailableError) {
        const cause = err.message.split("\n").find((l) => /403|404|410/.test(l)) ?? err.message.split("\n")[0];
        t.skip(
          `Go SDK unavailable: the Go module proxy refuses github.com/schematichq/schematic-go (${cause?.trim()})`,
        );
        return;
      }
      throw err;
    }
    const stub = await startApiStub();
    try {
      const checks = allChecks();
      const out = await runGoChecks(bin, {
        redis_addr: redis.addr,
        health_url: `${rep.url}/ready`,
        api_url: stub.url,
        wait: "ready",
        checks: checks.map((c) => ({
          name: c.name,
          flag: c.flag,
          company: c.row.context.company ?? null,
          user: c.row.context.user ?? null,
        })),
      });
      assert.equal(out.cache_version, DEFAULT_CACHE_VERSION);
      assert.equal(out.ready, true);
      assert.equal(out.results.length, checks.length);
      const problems: string[] = [];
      out.results.forEach((r, i) => {
        const c = checks[i]!;
        if (r.error || r.api_calls?.length) problems.push(`${c.name}: ${r.error} ${r.api_calls?.join(", ") ?? ""}`);
        if (r.value !== c.expected) problems.push(`${c.name}: Go says ${r.value}, written by hand: ${c.expected}`);
        const ts = tsResults.get(c.name);
        if (ts && ts.value !== r.value) problems.push(`${c.name}: Go says ${r.value}, TypeScript ${ts.value}`);
        if (c.row.context.company && !r.company_id) problems.push(`${c.name}: Go did not find the company`);
      });
      assert.deepEqual(problems, []);
      assert.deepEqual(stub.calls, [], "the Go SDK never called the API");
    } finally {
      await stub.close();
    }
  });

  // ---- admin changes ---------------------------------------------------------------------------------------------

  test("company PATCH (a partial): the SDK sees it, Redis equals the emulator", async () => {
    const acme = { domain: "acme.example" };
    assert.equal((await check({ company: acme }, "eu-data-residency")).value, false);
    const before = await current("companies", (c: Company) => c.id === "comp_acme");
    await emuAdmin("PATCH", "/companies/comp_acme", {
      traits: [
        ...before.traits.filter((t) => t.trait_definition?.id !== "trdf_region"),
        { trait_definition: { id: "trdf_region", comparable_type: "string", entity_type: "company" }, value: "eu" },
      ],
      keys: { crm: "CRM-Acme-1" },
    });
    await waitCheck({ company: acme }, "eu-data-residency", (r) => r.value, "acme in the EU");
    // The partial added a key: the new lookup key resolves, the old ones still do (a partial never removes keys).
    const byCrm = await waitCheck(
      { company: { crm: "crm-acme-1" } },
      "dashboards",
      (r) => r.companyId === "comp_acme",
      "acme by crm",
    );
    assert.ok(byCrm);
    assert.equal(await db().get(keys.companyLookups("crm", "CRM-Acme-1")[0]!), '"comp_acme"');
    await waitInSync(db(), emu.url);
  });

  test("company PUT (override removed): the SDK sees it, Redis equals the emulator", async () => {
    const globex = { slug: "globex" };
    assert.deepEqual(
      [
        (await check({ company: globex }, "advanced-reports")).value,
        (await check({ company: globex }, "advanced-reports")).ruleType,
      ],
      [true, "company_override"],
    );
    const before = await current("companies", (c: Company) => c.id === "comp_globex");
    await emuAdmin("PUT", "/companies/comp_globex", { ...before, rules: [] });
    await waitCheck({ company: globex }, "advanced-reports", (r) => !r.value, "globex without its override");
    await waitInSync(db(), emu.url);
  });

  test("company key change (PUT with other keys): the old lookup key is gone, the new one resolves", async () => {
    const before = await current("companies", (c: Company) => c.id === "comp_initech");
    const oldKey = keys.companyLookups("slug", "initech")[0]!;
    assert.equal(await db().get(oldKey), '"comp_initech"');
    await emuAdmin("PUT", "/companies/comp_initech", {
      ...before,
      keys: { domain: "initech.example", slug: "Initrode" },
    });
    await waitCheck(
      { company: { slug: "initrode" } },
      "priority-support",
      (r) => r.companyId === "comp_initech" && r.value,
      "initech under its new slug",
    );
    await waitInSync(db(), emu.url);
    assert.equal(await db().exists(oldKey), 0, "the old lookup key is gone");
    const r = await check({ company: { slug: "initech" } }, "priority-support");
    assert.deepEqual([r.companyId ?? null, r.value], [null, false], "the old slug finds nothing");
  });

  test("company DELETE: its id and lookup keys are gone, the SDK no longer finds it", async () => {
    const stark = { domain: "stark.example" };
    assert.deepEqual([(await check({ company: stark }, "sso")).value], [true]);
    await emuAdmin("DELETE", "/companies/comp_stark");
    await waitCheck({ company: stark }, "sso", (r) => !r.value && !r.companyId, "stark gone");
    await waitInSync(db(), emu.url);
    for (const k of [
      keys.companyId("comp_stark"),
      ...keys.companyLookups("domain", "stark.example"),
      ...keys.companyLookups("slug", "stark"),
    ]) {
      assert.equal(await db().exists(k), 0, `${k} is gone`);
    }
  });

  test("user PATCH: the SDK sees it, Redis equals the emulator", async () => {
    const ctx = { company: { domain: "acme.example" }, user: { email: "erin@initech.example" } };
    assert.equal((await check(ctx, "beta-program")).value, false);
    await emuAdmin("PATCH", "/users/user_005", {
      traits: [
        { trait_definition: { id: "trdf_role", comparable_type: "string", entity_type: "user" }, value: "admin" },
      ],
    });
    await waitCheck(ctx, "beta-program", (r) => r.value, "erin promoted to admin");
    await waitInSync(db(), emu.url);
  });

  test("user PUT (traits removed): the SDK sees it, Redis equals the emulator", async () => {
    const ctx = { company: { domain: "tyrell.example" }, user: { email: "bob@acme.example" } };
    assert.equal((await check(ctx, "beta-program")).value, true);
    const bob = await current("users", (u: User) => u.id === "user_002");
    await emuAdmin("PUT", "/users/user_002", { ...bob, traits: [] });
    await waitCheck(ctx, "beta-program", (r) => !r.value && r.userId === "user_002", "bob no longer a beta tester");
    await waitInSync(db(), emu.url);
  });

  test("user key change (PUT with another email): the old lookup key is gone, the new one resolves", async () => {
    const carol = await current("users", (u: User) => u.id === "user_003");
    const oldKey = keys.userLookups("email", "carol@globex.example")[0]!;
    assert.equal(await db().get(oldKey), '"user_003"');
    await emuAdmin("PUT", "/users/user_003", { ...carol, keys: { ...carol.keys, email: "Carol@Initrode.example" } });
    await waitCheck(
      { user: { email: "carol@initrode.example" } },
      "legacy-export",
      (r) => r.userId === "user_003",
      "carol under her new email",
    );
    await waitInSync(db(), emu.url);
    assert.equal(await db().exists(oldKey), 0, "the old lookup key is gone");
    assert.equal((await check({ user: { email: "carol@globex.example" } }, "legacy-export")).userId ?? null, null);
  });

  test("user DELETE: its id and lookup keys are gone, the SDK no longer finds it", async () => {
    const ctx = { company: { domain: "acme.example" }, user: { email: "alice@acme.example" } };
    assert.equal((await check(ctx, "beta-program")).value, true);
    await emuAdmin("DELETE", "/users/user_001");
    await waitCheck(ctx, "beta-program", (r) => !r.value && !r.userId, "alice gone");
    await waitInSync(db(), emu.url);
    for (const k of [
      keys.userId("user_001"),
      ...keys.userLookups("email", "alice@acme.example"),
      ...keys.userLookups("user_id", "u-001"),
    ]) {
      assert.equal(await db().exists(k), 0, `${k} is gone`);
    }
  });

  test("flag PUT (kill switch removed, and a new flag): the SDK sees both, Redis equals the emulator", async () => {
    const acme = { domain: "acme.example" };
    assert.equal((await check({ company: acme }, "legacy-export")).value, false);
    const legacy = await current("flags", (f: Flag) => f.key === "legacy-export");
    await emuAdmin("PUT", "/flags/legacy-export", { ...legacy, rules: [] });
    await waitCheck({ company: acme }, "legacy-export", (r) => r.value, "legacy-export back to its default (true)");

    const internal = await current("flags", (f: Flag) => f.key === "internal-tools");
    await emuAdmin("PUT", "/flags/Fresh-Flag", {
      ...internal,
      id: "flag_fresh",
      key: "Fresh-Flag",
      rules: internal.rules.map((r) => ({ ...r, id: `${r.id}_fresh`, flag_id: "flag_fresh" })),
    });
    await waitFor(async () => (await db().get(keys.flag("fresh-flag"))) !== null, {
      timeoutMs: 60_000,
      what: "the new flag in Redis",
    });
    assert.equal((await check({ company: acme }, "Fresh-Flag")).value, true);
    assert.equal((await check({ company: { domain: "wayne.example" } }, "Fresh-Flag")).value, false);
    assert.deepEqual(apiCalls(), [], "no API calls");
    await waitInSync(db(), emu.url);
  });

  test("flag DELETE: the flag key is gone (the SDK then asks the API, as it does for any unknown flag)", async () => {
    assert.ok(await db().get(keys.flag("sso")));
    await emuAdmin("DELETE", "/flags/sso");
    await waitInSync(db(), emu.url);
    assert.equal(await db().exists(keys.flag("sso")), 0, "the flag key is gone");
    const before = apiCalls().length;
    const r = await sdkR.client.checkFlagWithEntitlement({ company: { domain: "wayne.example" } }, "sso");
    assert.equal(r.value, false);
    const calls = apiCalls().slice(before);
    assert.ok(calls.length > 0, "the SDK found no flag in Redis and asked the API");
    assert.deepEqual(new Set(calls), new Set(["POST /flags/sso/check"]), "only for that flag (retries aside)");
    // Every other flag is still read from Redis.
    assert.equal((await check({ company: { domain: "wayne.example" } }, "dashboards")).value, true);
    assert.equal(apiCalls().length, before + calls.length);
  });

  test("SIGTERM: exit 0, the writer lease released, the replay cursor and the readiness marker kept", async () => {
    const last = (await emulatorState(emu.url)).stream_id;
    assert.ok(last, "changes were made");
    assert.equal(await db().exists("schematic:datastream:writer_lock"), 1, "the writer holds the lease");
    const code = await rep.stop("SIGTERM");
    assert.equal(code, 0, rep.logs.slice(-10).join("\n"));
    assert.equal(await db().exists("schematic:datastream:writer_lock"), 0, "the lease is released");
    assert.equal(await db().get("schematic:datastream:replay_cursor"), last, "the cursor is the last change");
    const marker = JSON.parse((await db().get(keys.marker())) ?? "null") as { state?: string } | null;
    assert.equal(marker?.state, "loaded", "the readiness marker is kept");
    await waitInSync(db(), emu.url, { timeoutMs: 5000 });
  });
});
