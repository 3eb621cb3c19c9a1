/**
 * The emulator as a complete local Schematic, seen through the official TypeScript SDK in its three modes at
 * once: REST (datastream off: every check is `POST /flags/{key}/check`), direct datastream mode, and replicator
 * mode (our replicator, a child process, writing a private Redis). Every mode must give, for every check of the
 * shared table (every rule and condition type), exactly what the SDK's own rules engine gives evaluating the
 * emulator's data locally: value, reason, rule id, rule type, flag, company and user.
 *
 * - before any change, where the values also equal the ones written by hand;
 * - with a preflight (usage, event usage, credit cost);
 * - after a flag delete, rule changes, entity deletes and key changes: REST and direct mode at once after the
 *   admin API answered (a change answers once a connected direct-mode SDK has it), replicator mode once Redis
 *   caught up; lookups of deleted entities fall back to REST checks that answer;
 * - usage: `track` through each mode's SDK until a usage limit is reached, then the flag is off in every mode.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import type { Redis } from "ioredis";
import { loadFixtureFile, type RunningEmulator, startEmulator } from "../src/emulator/index.js";
import type { Company, Fixture, Flag, User } from "../src/model/wire.js";
import {
  admin,
  comparable,
  DEFAULT_CACHE_VERSION,
  emulatorDump,
  emulatorState,
  type ReplicatorModeSdk,
  recordingLogger,
  type SdkClient,
  startDirectSdk,
  startReplicatorModeSdk,
  startRestSdk,
  waitInSync,
} from "./helpers/e2e.js";
import { type Comparable, LocalSdk, type Preflight } from "./helpers/local-sdk.js";
import { type RedisServer, startRedis, waitFor } from "./helpers/redis.js";
import { type ReplicatorProcess, startReplicator, testEnv } from "./helpers/replicator.js";
import {
  CONDITION_TYPES,
  type Context,
  conditionTypes,
  FLAGS,
  RULE_TYPES,
  rulesById,
  TABLE,
  type TableRow,
} from "./helpers/sdk-table.js";

const FIXTURE_FILE = fileURLToPath(new URL("../examples/fixture.json", import.meta.url));

interface Mode {
  name: "REST" | "direct" | "replicator";
  client: SdkClient;
  /** The SDK's warnings and errors. */
  problems: string[];
}

/** What a mode may log after the changes: the 404 of the deleted flag, the datastream's not-found answers. */
const EXPECTED_PROBLEMS = [
  /^error: Error checking flag sso: NotFoundError/,
  /^warn: DataStream error received: (Company|User) not found$/,
];

describe("official SDK in REST, direct and replicator mode against the emulator", { timeout: 240_000 }, () => {
  const fixture: Fixture = loadFixtureFile(FIXTURE_FILE);
  let emu: RunningEmulator;
  let redis: RedisServer;
  let db: Redis;
  let rep: ReplicatorProcess;
  let replicatorSdk: ReplicatorModeSdk;
  let local: LocalSdk;
  const modes: Mode[] = [];
  const mode = (name: Mode["name"]) => modes.find((m) => m.name === name)!;
  const emuAdmin = (method: string, path: string, body?: unknown) => admin(emu.url, method, path, body);

  /** Each mode's result for one check, next to the local reference over the emulator's current data. */
  const compare = async (data: Fixture, ctx: Context, flag: string, names: Mode["name"][], preflight?: Preflight) => {
    const want = await local.check(data, ctx, flag, preflight);
    const got = await Promise.all(
      names.map(async (n) => comparable(await mode(n).client.checkFlagWithEntitlement(ctx, flag, preflight))),
    );
    return { want, got };
  };

  /** Runs every (row, flag) through the named modes; returns the mismatches and the reference results. */
  const runTable = async (rows: TableRow[], names: Mode["name"][]) => {
    const data = await emulatorDump(emu.url);
    const mismatches: string[] = [];
    const results = new Map<string, Comparable>();
    for (const row of rows) {
      for (const flag of FLAGS) {
        const { want, got } = await compare(data, row.context, flag, names);
        results.set(`${row.name} / ${flag}`, want);
        got.forEach((g, i) => {
          if (JSON.stringify(g) !== JSON.stringify(want)) {
            mismatches.push(
              `${names[i]}: ${row.name} / ${flag}: ${JSON.stringify(g)}, locally ${JSON.stringify(want)}`,
            );
          }
        });
      }
    }
    return { mismatches, results };
  };

  /** Polls until the replicator-mode SDK reads what the emulator holds (Redis in sync, SDK caches aside). */
  const replicatorCaughtUp = () => waitInSync(db, emu.url);

  before(async () => {
    emu = await startEmulator({ fixture });
    redis = await startRedis();
    db = redis.client();
    rep = await startReplicator(testEnv({ SCHEMATIC_API_URL: emu.url, REDIS_ADDR: redis.addr, WRITER_LOCK_TTL: "6s" }));
    local = await LocalSdk.start();
    await rep.waitReady(90_000);
    // Events leave the SDKs every 50 ms (default 1 s); the replicator-mode SDK's API is the emulator too, so a
    // flag missing from Redis is answered as the API would.
    const logs = [recordingLogger(), recordingLogger(), recordingLogger()];
    const common = { eventBufferInterval: 50 };
    replicatorSdk = await startReplicatorModeSdk({
      redisUrl: redis.url,
      healthUrl: `${rep.url}/ready`,
      expectVersion: DEFAULT_CACHE_VERSION,
      sdkOptions: { ...common, basePath: emu.url, eventCaptureBaseURL: emu.url, logger: logs[2]!.logger },
    });
    modes.push(
      {
        name: "REST",
        client: startRestSdk(emu.url, { ...common, logger: logs[0]!.logger }),
        problems: logs[0]!.problems,
      },
      {
        name: "direct",
        client: await startDirectSdk(emu.url, "legacy-export", { ...common, logger: logs[1]!.logger }),
        problems: logs[1]!.problems,
      },
      { name: "replicator", client: replicatorSdk.client, problems: logs[2]!.problems },
    );
    await replicatorCaughtUp();
  });

  after(async () => {
    for (const m of modes) if (m.name !== "replicator") await m.client.close();
    await replicatorSdk?.close();
    await rep?.stop();
    db?.disconnect();
    await redis?.stop();
    await emu?.close();
  });

  test("before any change: every mode equals the SDK evaluating locally, and the values written by hand", async () => {
    const checksBefore = (await emulatorState(emu.url)).requests.flag_checks;
    const { mismatches, results } = await runTable(TABLE, ["REST", "direct", "replicator"]);
    assert.deepEqual(mismatches, []);

    const byHand: string[] = [];
    for (const row of TABLE) {
      const want = row.expected.replaceAll(" ", "");
      FLAGS.forEach((flag, i) => {
        if (results.get(`${row.name} / ${flag}`)!.value !== (want[i] === "T")) byHand.push(`${row.name} / ${flag}`);
      });
    }
    assert.deepEqual(byHand, [], "the local evaluation agrees with the values written by hand");

    // The table covers every rule type and condition type (through the rules that decided its checks).
    const rules = rulesById(fixture);
    const ruleTypes = new Set<string>();
    const conditions = new Set<string>();
    for (const r of results.values()) {
      if (r.ruleType) ruleTypes.add(r.ruleType);
      const rule = r.ruleId ? rules.get(r.ruleId) : undefined;
      if (rule) for (const t of conditionTypes(rule)) conditions.add(t);
    }
    assert.deepEqual([...ruleTypes].sort(), [...RULE_TYPES].sort());
    assert.deepEqual([...conditions].sort(), [...CONDITION_TYPES].sort());

    // REST mode made one request per check; direct and replicator mode none.
    const checks = (await emulatorState(emu.url)).requests.flag_checks - checksBefore;
    assert.equal(checks, TABLE.length * FLAGS.length, "REST checks: one per check, no fallback from other modes");
    for (const m of modes) assert.deepEqual(m.problems, [], `${m.name} mode logged no warning or error`);
  });

  test("a preflight (usage, event usage, credit cost) is evaluated alike in every mode", async () => {
    const data = await emulatorDump(emu.url);
    const hooli = { company: { domain: "hooli.example" } };
    const tyrell = { company: { domain: "tyrell.example" } };
    const cases: [Context, string, Preflight, boolean][] = [
      [hooli, "advanced-reports", { usage: 1 }, false], // 99 of 100 reports used: one more reaches the limit
      [hooli, "advanced-reports", { eventUsage: { eventSubtype: "report_run", quantity: 1 } }, false],
      [hooli, "advanced-reports", { eventUsage: { eventSubtype: "api_call", quantity: 5 } }, true], // another event
      [tyrell, "ai-assistant", { creditCost: { bcrd_ai_tokens: 11 } }, false], // 10 credits left
      [tyrell, "ai-assistant", { creditCost: { bcrd_ai_tokens: 10 } }, true],
    ];
    for (const [ctx, flag, preflight, value] of cases) {
      const { want, got } = await compare(data, ctx, flag, ["REST", "direct", "replicator"], preflight);
      assert.equal(want.value, value, `${flag} ${JSON.stringify(preflight)} locally`);
      for (const [i, g] of got.entries()) {
        assert.deepEqual(g, want, `${modes[i]!.name} mode: ${flag} ${JSON.stringify(preflight)}`);
      }
    }
  });

  test("after a flag delete, rule changes, entity deletes and key changes: every mode equals local evaluation", async () => {
    const dump = await emulatorDump(emu.url);
    const flag = (key: string) => structuredClone(dump.flags.find((f) => f.key === key)) as Flag;
    const company = (id: string) => structuredClone(dump.companies.find((c) => c.id === id)) as Company;
    const user = (id: string) => structuredClone(dump.users.find((u) => u.id === id)) as User;
    const eu = flag("eu-data-residency");
    eu.rules[0]!.conditions[0]!.trait_value = "us";

    await emuAdmin("DELETE", "/flags/sso");
    await emuAdmin("PUT", "/flags/legacy-export", { ...flag("legacy-export"), rules: [] }); // kill switch removed
    await emuAdmin("PUT", "/flags/eu-data-residency", eu); // targeting rule: EU → US
    await emuAdmin("DELETE", "/companies/comp_stark");
    await emuAdmin("DELETE", "/users/user_001"); // alice
    await emuAdmin("PUT", "/companies/comp_initech", {
      ...company("comp_initech"),
      keys: { domain: "initech.example", slug: "Initrode" },
    });
    await emuAdmin("PUT", "/users/user_003", {
      ...user("user_003"),
      keys: { email: "Carol@Initrode.example", user_id: "u-003" },
    });
    await emuAdmin("PATCH", "/companies/comp_globex", { rules: [] }); // its override removed, pushed as a partial

    const rows: TableRow[] = [
      ...TABLE,
      { name: "initech by its old slug", context: { company: { slug: "initech" } }, expected: "" },
      { name: "initech by its new slug", context: { company: { slug: "INITRODE" } }, expected: "" },
      { name: "carol by her old email", context: { user: { email: "carol@globex.example" } }, expected: "" },
      {
        name: "globex + carol by her new email",
        context: { company: { slug: "globex" }, user: { email: "carol@initrode.example" } },
        expected: "",
      },
    ];
    // No waiting: the admin API answered once the direct-mode SDK had every change.
    const now = await runTable(rows, ["REST", "direct"]);
    assert.deepEqual(now.mismatches, []);
    await replicatorCaughtUp();
    const later = await runTable(rows, ["replicator"]);
    assert.deepEqual(later.mismatches, []);

    // The changes show: the deleted flag is its default everywhere, the rest as the new data says.
    const r = now.results;
    assert.deepEqual([r.get("wayne / sso")?.value, r.get("wayne / sso")?.reason], [false, "flag default"]);
    // Without the kill switch, soylent's own override (on) decides.
    assert.deepEqual(
      [r.get("soylent / legacy-export")?.value, r.get("soylent / legacy-export")?.ruleType],
      [true, "company_override"],
    );
    assert.equal(r.get("globex by slug / eu-data-residency")?.value, false);
    assert.equal(r.get("stark / dashboards")?.companyId, null);
    assert.equal(r.get("acme + alice (admin, staff) / internal-tools")?.userId, null);
    assert.deepEqual([r.get("initech by its old slug / bulk-export")?.companyId], [null]);
    assert.deepEqual(
      [
        r.get("initech by its new slug / bulk-export")?.companyId,
        r.get("initech by its new slug / bulk-export")?.value,
      ],
      ["comp_initech", true],
    );
    assert.equal(r.get("carol by her old email / legacy-export")?.userId, null);
    assert.equal(r.get("globex + carol by her new email / legacy-export")?.userId, "user_003");
    assert.deepEqual([r.get("globex by slug / advanced-reports")?.value], [false]);

    for (const m of modes) {
      const unexpected = m.problems.filter((p) => !EXPECTED_PROBLEMS.some((re) => re.test(p)));
      assert.deepEqual(unexpected, [], `${m.name} mode: only the deleted flag's 404 and not-found lookups`);
    }
  });

  test("usage: track until a limit through each mode's SDK, then the flag is off in every mode", async () => {
    const tracked = async () => (await emuAdmin("GET", "/events?type=track")).count as number;
    // [mode that tracks, company, event, quantity per track, flag, tracks until the limit]
    const scenarios: [Mode["name"], string, string, number, string, number][] = [
      ["REST", "acme.example", "report_run", 10, "advanced-reports", 6], // 42 of 100 reports: 52 … 92, then 102
      ["direct", "customer017.example", "api_call", 100, "api-access", 2], // 9809 of 10000 calls this month
      ["replicator", "customer035.example", "report_run", 1, "advanced-reports", 5], // 95 of 100 reports
    ];
    for (const [tracker, domain, event, quantity, flag, limit] of scenarios) {
      const ctx = { company: { domain } };
      let tracks = 0;
      for (;;) {
        const seen = await tracked();
        await mode(tracker).client.track({ company: ctx.company, event, quantity });
        tracks++;
        await waitFor(async () => (await tracked()) > seen, { what: `the emulator to receive ${event} #${tracks}` });
        // The tracking mode reads the new usage (replicator mode once Redis has it); it equals the local answer.
        let last: Awaited<ReturnType<typeof compare>> | undefined;
        await waitFor(
          async () => {
            last = await compare(await emulatorDump(emu.url), ctx, flag, [tracker]);
            return JSON.stringify(last.got[0]) === JSON.stringify(last.want);
          },
          { timeoutMs: 60_000, what: `${tracker} mode to see ${domain}'s ${event} #${tracks}` },
        );
        if (!last?.want.value) break;
        assert.ok(tracks < limit, `${flag} still on for ${domain} after ${tracks} tracks`);
      }
      assert.equal(tracks, limit, `${flag} turned off for ${domain} at the limit`);
    }
    await replicatorCaughtUp();
    const data = await emulatorDump(emu.url);
    for (const [, domain, , , flag] of scenarios) {
      const { want, got } = await compare(data, { company: { domain } }, flag, ["REST", "direct", "replicator"]);
      assert.equal(want.value, false);
      assert.match(want.ruleType ?? "", /usage_exceeded$/);
      for (const [i, g] of got.entries()) assert.deepEqual(g, want, `${modes[i]!.name} mode: ${flag} for ${domain}`);
    }
  });
});
