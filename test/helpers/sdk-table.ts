/**
 * The check table the end-to-end tests run through every SDK: every flag of examples/fixture.json for a set of
 * company/user contexts, with the expected value of each check written by hand from the fixture (the same
 * reasoning as test/emulator-sdk.test.ts: scripts/make-fixture.mjs documents each company's plans, products,
 * credits, metrics and traits; the engine's order is global_override, company_override, plan_entitlement,
 * company_override_usage_exceeded, plan_entitlement_usage_exceeded, standard by priority, default).
 *
 * Between them, the fixture's flags and company overrides use every rule type and every condition type; the
 * tests check that the rules which actually decided the table's results cover them all.
 */
import assert from "node:assert/strict";
import type { Fixture, Rule } from "../../src/model/wire.js";

export const FLAGS = [
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

export const RULE_TYPES = [
  "global_override",
  "company_override",
  "company_override_usage_exceeded",
  "plan_entitlement",
  "plan_entitlement_usage_exceeded",
  "standard",
  "default",
] as const;

export const CONDITION_TYPES = [
  "base_plan",
  "billing_product",
  "company",
  "credit",
  "metric",
  "plan",
  "plan_version",
  "trait",
  "user",
] as const;

export type Context = { company?: Record<string, string>; user?: Record<string, string> };

export interface TableRow {
  name: string;
  context: Context;
  /** Expected value of each flag in FLAGS order (T/F, grouped by 7 for reading), written by hand. */
  expected: string;
}

const acme = { domain: "acme.example" };
const alice = { email: "alice@acme.example" };
const bob = { email: "bob@acme.example" };
const erin = { email: "erin@initech.example" };

export const TABLE: TableRow[] = [
  { name: "acme (upper-case key)", context: { company: { domain: "ACME.EXAMPLE" } }, expected: "TTFTFTF FTTFTFT" },
  { name: "acme", context: { company: acme }, expected: "TTFTFTF FTTFTFT" },
  // globex: starter, 250 reports, 12 seats, eu; override advanced-reports on.
  { name: "globex by slug", context: { company: { slug: "globex" } }, expected: "TTFFFFF TTFFTFT" },
  // initech: starter + SSO add-on, priority support, starter v2, 60 seats, export override (120 < 500).
  { name: "initech", context: { company: { domain: "initech.example" } }, expected: "TFTFTTF FFFFTTT" },
  // umbrella: pro v1, 150 reports (exceeded), 9 credits, 15000 api calls, 150 seats, export 800 (exceeded).
  { name: "umbrella", context: { company: { domain: "umbrella.example" } }, expected: "TFFFFFF FFFFFFF" },
  // hooli: enterprise, 99 reports, 10 credits, priority, eu, 400 seats, override sso off.
  { name: "hooli", context: { company: { domain: "hooli.example" } }, expected: "TTFTTFF TFFFFTF" },
  // soylent: free, 3 seats; its legacy-export override loses to the global override.
  { name: "soylent", context: { company: { slug: "soylent" } }, expected: "FFFFFFF FFFFTFF" },
  // stark: no base plan, SSO add-on only, 49 seats, no api metric.
  { name: "stark", context: { company: { domain: "stark.example" } }, expected: "FFTFFFF FFFFTFT" },
  // wayne: enterprise + AI add-on, 1000 reports (exceeded), 100000 credits, 99 seats, 100 api calls.
  { name: "wayne", context: { company: { domain: "wayne.example" } }, expected: "TFTTFFF FFFFTTT" },
  // cyberdyne: pro v2, priority, exactly 100 reports, 10000 api calls and 50 seats (all at the limit).
  { name: "cyberdyne", context: { company: { domain: "cyberdyne.example" } }, expected: "TFFFTTF FFFFTFF" },
  // tyrell: free + AI add-on, AI product, exactly 10 credits, eu.
  { name: "tyrell", context: { company: { domain: "tyrell.example" } }, expected: "FFFTFFF TFFFTFF" },
  // beta-program: company opted in AND user an admin or a beta tester; internal-tools: staff users.
  { name: "acme + alice (admin, staff)", context: { company: acme, user: alice }, expected: "TTFTFTT FTTFTFT" },
  { name: "acme + erin (viewer)", context: { company: acme, user: erin }, expected: "TTFTFTF FTTFTFT" },
  {
    name: "initech + dave (beta tester)",
    context: { company: { domain: "initech.example" }, user: { email: "dave@initech.example" } },
    expected: "TFTFTTT FFFFTTT",
  },
  {
    name: "initech + erin",
    context: { company: { domain: "initech.example" }, user: erin },
    expected: "TFTFTTF FFFFTTT",
  },
  {
    name: "hooli + frank (admin, by user_id)",
    context: { company: { domain: "hooli.example" }, user: { user_id: "u-006" } },
    expected: "TTFTTFT TFFFFTF",
  },
  {
    name: "hooli + grace (viewer)",
    context: { company: { domain: "hooli.example" }, user: { email: "grace@hooli.example" } },
    expected: "TTFTTFF TFFFFTF",
  },
  {
    name: "stark + heidi (no traits)",
    context: { company: { domain: "stark.example" }, user: { email: "heidi@stark.example" } },
    expected: "FFTFFFF FFFFTFT",
  },
  {
    name: "tyrell + bob (beta tester, staff)",
    context: { company: { domain: "tyrell.example" }, user: bob },
    expected: "FFFTFFT TFTFTFF",
  },
  {
    name: "wayne + alice",
    context: { company: { domain: "wayne.example" }, user: alice },
    expected: "TFTTFFF FFTFTTT",
  },
  { name: "bob alone", context: { user: bob }, expected: "FFFFFFF FFTFTFF" },
  { name: "carol alone", context: { user: { email: "carol@globex.example" } }, expected: "FFFFFFF FFFFTFF" },
  { name: "no context", context: {}, expected: "FFFFFFF FFFFTFF" },
];

export interface Check {
  /** `row name / flag` */
  name: string;
  row: TableRow;
  flag: string;
  expected: boolean;
}

/** Every (row, flag) pair of the table, with its hand-written expectation. */
export function allChecks(): Check[] {
  const out: Check[] = [];
  for (const row of TABLE) {
    const v = row.expected.replaceAll(" ", "");
    assert.equal(v.length, FLAGS.length, `row ${row.name} has one value per flag`);
    FLAGS.forEach((flag, i) => {
      out.push({ name: `${row.name} / ${flag}`, row, flag, expected: v[i] === "T" });
    });
  }
  return out;
}

/** Every rule of the fixture (flag rules and company rules) by id. */
export function rulesById(fixture: Fixture): Map<string, Rule> {
  const out = new Map<string, Rule>();
  for (const f of fixture.flags ?? []) for (const r of f.rules) out.set(r.id, r);
  for (const c of fixture.companies ?? []) for (const r of c.rules) out.set(r.id, r);
  for (const u of fixture.users ?? []) for (const r of u.rules) out.set(r.id, r);
  return out;
}

/** The condition types a rule evaluates (its conditions and its condition groups). */
export function conditionTypes(rule: Rule): string[] {
  return [...rule.conditions, ...rule.condition_groups.flatMap((g) => g.conditions)].map((c) => c.condition_type);
}
