/**
 * The official TypeScript SDK in DIRECT datastream mode against the emulator, unchanged: it evaluates every flag
 * of examples/fixture.json for a table of company/user contexts exactly as the rules say (expected values written
 * by hand from the fixture, not computed by the SDK), and sees changes made through the admin API on its next
 * checks. A check that falls back to the REST API (`POST /flags/{key}/check`, answered 500 and counted by the
 * emulator) fails the test.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import sdk from "@schematichq/schematic-typescript-node";
import { loadFixtureFile, type RunningEmulator, startEmulator } from "../src/emulator/index.js";
import type { Flag } from "../src/model/wire.js";
import { waitFor } from "./helpers/redis.js";

const FIXTURE = fileURLToPath(new URL("../examples/fixture.json", import.meta.url));

const FLAGS = [
  "dashboards",
  "advanced-reports",
  "sso",
  "ai-assistant",
  "priority-support",
  "new-navigation",
  "beta-program",
  "eu-data-residency",
  "team-invites",
  "internal-tools",
  "legacy-export",
  "onboarding-checklist",
  "bulk-export",
  "api-access",
] as const;

type Context = { company?: Record<string, string>; user?: Record<string, string> };

const acme = { domain: "acme.example" };
const alice = { email: "alice@acme.example" };
const bob = { email: "bob@acme.example" };
const erin = { email: "erin@initech.example" };

/**
 * One row per context: the expected value of each flag, in FLAGS order (T/F, grouped by 7 for reading).
 * Worked out by hand from examples/fixture.json (scripts/make-fixture.mjs documents each company's plans,
 * products, credits, metrics and traits), following the engine's order: global_override, company_override,
 * plan_entitlement, company_override_usage_exceeded, plan_entitlement_usage_exceeded, standard (by priority),
 * default; company rules count only for the flag whose id they name.
 */
const TABLE: [string, Context, string][] = [
  // Looked up with a differently cased key first: the emulator matches keys case-insensitively.
  ["acme (upper-case key)", { company: { domain: "ACME.EXAMPLE" } }, "TTFTFTF FTTFTFT"],
  ["acme", { company: acme }, "TTFTFTF FTTFTFT"],
  // globex: starter, 250 reports, 12 seats, eu; override advanced-reports on (and nothing else).
  ["globex by slug", { company: { slug: "globex" } }, "TTFFFFF TTFFTFT"],
  // initech: starter + SSO add-on, priority support, starter v2, 60 seats, export override (120 < 500).
  ["initech", { company: { domain: "initech.example" } }, "TFTFTTF FFFFTTT"],
  // umbrella: pro v1, 150 reports (exceeded), 9 credits (< 10), 15000 api calls, 150 seats, export 800 (exceeded).
  ["umbrella", { company: { domain: "umbrella.example" } }, "TFFFFFF FFFFFFF"],
  // hooli: enterprise, 99 reports, 10 credits, priority, eu, 400 seats, override sso off.
  ["hooli", { company: { domain: "hooli.example" } }, "TTFTTFF TFFFFTF"],
  // soylent: free, no products or metrics, 3 seats; its legacy-export override loses to the global override.
  ["soylent", { company: { slug: "soylent" } }, "FFFFFFF FFFFTFF"],
  // stark: no base plan, SSO add-on only, 49 seats, no api metric (0 < 10000, and plan "ne free" holds).
  ["stark", { company: { domain: "stark.example" } }, "FFTFFFF FFFFTFT"],
  // wayne: enterprise + AI add-on, 1000 reports (exceeded), 100000 credits, 99 seats, 100 api calls.
  ["wayne", { company: { domain: "wayne.example" } }, "TFTTFFF FFFFTTT"],
  // cyberdyne: pro v2, priority, exactly 100 reports, 10000 api calls and 50 seats (all at the limit).
  ["cyberdyne", { company: { domain: "cyberdyne.example" } }, "TFFFTTF FFFFTFF"],
  // tyrell: free + AI add-on, AI product, exactly 10 credits, eu.
  ["tyrell", { company: { domain: "tyrell.example" } }, "FFFTFFF TFFFTFF"],
  // beta-program needs the company opted in AND the user an admin or a beta tester; internal-tools: staff users.
  ["acme + alice (admin, staff)", { company: acme, user: alice }, "TTFTFTT FTTFTFT"],
  ["acme + erin (viewer)", { company: acme, user: erin }, "TTFTFTF FTTFTFT"],
  [
    "initech + dave (beta tester)",
    { company: { domain: "initech.example" }, user: { email: "dave@initech.example" } },
    "TFTFTTT FFFFTTT",
  ],
  ["initech + erin", { company: { domain: "initech.example" }, user: erin }, "TFTFTTF FFFFTTT"],
  ["hooli + frank (admin)", { company: { domain: "hooli.example" }, user: { user_id: "u-006" } }, "TTFTTFT TFFFFTF"],
  [
    "hooli + grace (viewer)",
    { company: { domain: "hooli.example" }, user: { email: "grace@hooli.example" } },
    "TTFTTFF TFFFFTF",
  ],
  [
    "stark + heidi (no traits)",
    { company: { domain: "stark.example" }, user: { email: "heidi@stark.example" } },
    "FFTFFFF FFFFTFT",
  ],
  ["tyrell + bob (beta tester, staff)", { company: { domain: "tyrell.example" }, user: bob }, "FFFTFFT TFTFTFF"],
  ["wayne + alice", { company: { domain: "wayne.example" }, user: alice }, "TFTTFFF FFTFTTT"],
  ["bob alone", { user: bob }, "FFFFFFF FFTFTFF"],
  ["carol alone", { user: { email: "carol@globex.example" } }, "FFFFFFF FFFFTFF"],
  ["no context", {}, "FFFFFFF FFFFTFF"],
];

function expected(row: string): boolean[] {
  const v = row.replaceAll(" ", "");
  assert.equal(v.length, FLAGS.length);
  return [...v].map((c) => c === "T");
}

interface DataStreamInternals {
  getFlag(key: string): Promise<unknown>;
}

describe("official SDK (direct datastream mode) against the emulator", () => {
  let emu: RunningEmulator;
  let client: InstanceType<typeof sdk.SchematicClient>;

  const admin = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${emu.url}/_emulator${path}`, {
      method,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    assert.equal(res.status, 200, text);
    return JSON.parse(text);
  };
  const fallbacks = async () => (await admin("GET", "/state")).requests.flag_checks as number;
  const check = async (ctx: Context, key: string) => {
    const r = await client.checkFlagWithEntitlement(ctx, key);
    assert.doesNotMatch(
      r.reason,
      /RULES_ENGINE_(ERROR|UNAVAILABLE)|^flag default$/,
      `${key} for ${JSON.stringify(ctx)}: ${r.reason}`,
    );
    return r.value;
  };

  before(async () => {
    emu = await startEmulator({ fixture: loadFixtureFile(FIXTURE) });
    client = new sdk.SchematicClient({
      apiKey: "emulator-test-key",
      basePath: emu.url,
      useDataStream: true,
      eventCaptureBaseURL: emu.url,
      logLevel: "error",
    });
    // The SDK must hold the flags snapshot before the first check (or it would go to the REST API). Its
    // datastream client is private; reading its flag cache is the only readiness signal it offers.
    const ds = (client as unknown as { datastreamClient?: DataStreamInternals }).datastreamClient;
    assert.ok(ds, "the SDK started its datastream client");
    await waitFor(async () => (await ds.getFlag("legacy-export")) !== null, {
      what: "the SDK to receive the flags snapshot",
    });
  });

  after(async () => {
    await client?.close();
    await emu?.close();
  });

  test("the SDK connected in direct mode and asked for the flags snapshot", async () => {
    const state = await admin("GET", "/state");
    assert.equal(state.connections, 1);
    assert.deepEqual(state.connections_by_mode, { datastream: 1 });
  });

  test(`every flag for ${TABLE.length} contexts evaluates as the rules say, without REST fallbacks`, async () => {
    assert.ok(TABLE.length >= 20);
    const mismatches: string[] = [];
    for (const [name, ctx, row] of TABLE) {
      const want = expected(row);
      for (let i = 0; i < FLAGS.length; i++) {
        const got = await check(ctx, FLAGS[i]!);
        if (got !== want[i]) mismatches.push(`${name}: ${FLAGS[i]} = ${got}, expected ${want[i]}`);
      }
    }
    assert.deepEqual(mismatches, []);
    assert.equal(await fallbacks(), 0, "no check fell back to POST /flags/{key}/check");
  });

  test("a company PATCH (pushed as a partial) is seen on the next checks", async () => {
    assert.equal(await check({ company: acme }, "eu-data-residency"), false);
    await admin("PATCH", "/companies/comp_acme", {
      traits: [
        { trait_definition: { id: "trdf_seats", comparable_type: "int", entity_type: "company" }, value: "120" },
        { trait_definition: { id: "trdf_region", comparable_type: "string", entity_type: "company" }, value: "eu" },
        {
          trait_definition: { id: "trdf_beta_opt_in", comparable_type: "bool", entity_type: "company" },
          value: "true",
        },
      ],
    });
    await waitFor(() => check({ company: acme }, "eu-data-residency"), { what: "acme in the EU" });
    // 120 seats: past the invite limit and the onboarding threshold.
    assert.equal(await check({ company: acme }, "team-invites"), false);
    assert.equal(await check({ company: acme }, "onboarding-checklist"), false);
  });

  test("a user PATCH is seen on the next checks", async () => {
    assert.equal(await check({ company: acme, user: erin }, "beta-program"), false);
    await admin("PATCH", "/users/user_005", {
      traits: [
        { trait_definition: { id: "trdf_role", comparable_type: "string", entity_type: "user" }, value: "admin" },
      ],
    });
    await waitFor(() => check({ company: acme, user: erin }, "beta-program"), { what: "erin promoted to admin" });
  });

  test("a full company PUT (override removed) and a flag PUT (kill switch removed) are seen", async () => {
    const dump = await admin("GET", "/dump");
    const globex = dump.companies.find((c: { id: string }) => c.id === "comp_globex");
    assert.equal(await check({ company: { slug: "globex" } }, "advanced-reports"), true);
    await admin("PUT", "/companies/comp_globex", { ...globex, rules: [] });
    await waitFor(async () => !(await check({ company: { slug: "globex" } }, "advanced-reports")), {
      what: "globex without its override",
    });

    const legacy: Flag = dump.flags.find((f: Flag) => f.key === "legacy-export");
    assert.equal(await check({ company: acme }, "legacy-export"), false);
    await admin("PUT", "/flags/legacy-export", { ...legacy, rules: [] });
    await waitFor(() => check({ company: acme }, "legacy-export"), {
      what: "legacy-export back to its default (true)",
    });
    assert.equal(await check({}, "legacy-export"), true);
  });

  test("a new flag created through the admin API is evaluated from the stream", async () => {
    await admin("PUT", "/flags/fresh-flag", {
      id: "flag_fresh",
      account_id: "acc_acme_analytics",
      environment_id: "env_production",
      key: "fresh-flag",
      rules: [
        {
          id: "rule_fresh",
          flag_id: "flag_fresh",
          account_id: "acc_acme_analytics",
          environment_id: "env_production",
          rule_type: "standard",
          name: "Acme only",
          priority: 1,
          conditions: [
            {
              id: "cond_fresh",
              account_id: "acc_acme_analytics",
              environment_id: "env_production",
              condition_type: "company",
              operator: "eq",
              resource_ids: ["comp_acme"],
              event_subtype: null,
              metric_value: null,
              metric_period: null,
              metric_period_month_reset: null,
              credit_id: null,
              consumption_rate: null,
              trait_definition: null,
              trait_value: "",
              comparison_trait_definition: null,
            },
          ],
          condition_groups: [],
          value: true,
        },
      ],
      default_value: false,
    });
    const ds = (client as unknown as { datastreamClient: DataStreamInternals }).datastreamClient;
    await waitFor(async () => (await ds.getFlag("fresh-flag")) !== null, { what: "the new flag to reach the SDK" });
    assert.equal(await check({ company: acme }, "fresh-flag"), true);
    assert.equal(await check({ company: { domain: "wayne.example" } }, "fresh-flag"), false);
    assert.equal(await fallbacks(), 0, "no check fell back to the REST API");
  });
});
