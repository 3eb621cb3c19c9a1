/**
 * The emulator's synthetic data sets (`--generate`, src/emulator/generate.ts) in both row shapes: valid as the
 * fixture validation (as strict as the SDK's stream parser) demands, carried through the REST shapes and back
 * unchanged, of the sizes the load benchmark relies on, and representative: the synthetic flags, evaluated by the
 * SDK's own rules engine, come out both ways over the data.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { generateFixture, parseFixture, parseGenerateSpec } from "../src/emulator/index.js";
import { firstDifference } from "../src/model/equivalence.js";
import { companyToRest, restCompanyToEngine, restUserToEngine, userToRest } from "../src/model/rest.js";
import type { Fixture } from "../src/model/wire.js";
import { LocalSdk } from "./helpers/local-sdk.js";

const SPEC = { companies: 600, users: 600, flags: 24, seed: 3 };
const full = generateFixture({ ...SPEC, rows: "full" });
const lean = generateFixture({ ...SPEC, rows: "lean" });

const meanBytes = (rows: unknown[]) =>
  rows.reduce<number>((n, r) => n + Buffer.byteLength(JSON.stringify(r)), 0) / rows.length;

describe("generated data sets", () => {
  test("rows=full|lean parses; the default is full, the same data as before the option existed", () => {
    assert.equal(parseGenerateSpec("companies=5").rows, "full");
    assert.equal(parseGenerateSpec("rows=lean,companies=5").rows, "lean");
    assert.equal(parseGenerateSpec("companies=5, rows = full").rows, "full");
    assert.throws(() => parseGenerateSpec("rows=tiny"), /bad item "rows=tiny".*rows=full\|lean/);
    assert.deepEqual(generateFixture({ ...SPEC }), full);
  });

  for (const [shape, data] of [
    ["full", full],
    ["lean", lean],
  ] as const) {
    test(`${shape} rows pass the fixture validation unchanged`, () => {
      // parseFixture normalises what it accepts: equal output means nothing was missing, null or out of range.
      assert.deepEqual(parseFixture(JSON.parse(JSON.stringify(data))), data);
    });

    test(`${shape} rows survive the REST shapes: the load's mapping gives back every rules-engine field`, () => {
      for (const c of data.companies) {
        const back = restCompanyToEngine(JSON.parse(JSON.stringify(companyToRest(c))));
        assert.equal(firstDifference(back, c), null, c.id);
      }
      for (const u of data.users) {
        const back = restUserToEngine(JSON.parse(JSON.stringify(userToRest(u))));
        assert.equal(firstDifference(back, u), null, u.id);
      }
    });
  }

  test("REST row sizes: full ~7.4 KB; lean ~3.5 KB per company and ~1.1 KB per user", () => {
    const sizes = (d: Fixture): [number, number] => [
      meanBytes(d.companies.map(companyToRest)) / 1024,
      meanBytes(d.users.map(userToRest)) / 1024,
    ];
    const [fc, fu] = sizes(full);
    const [lc, lu] = sizes(lean);
    assert.ok(fc > 6.5 && fc < 8.5 && fu > 6.5 && fu < 8.5, `full rows: ${fc} / ${fu} KB`);
    assert.ok(lc > 3.1 && lc < 3.9, `lean company rows: ${lc} KB`);
    assert.ok(lu > 0.9 && lu < 1.3, `lean user rows: ${lu} KB`);
  });

  test("lean rows keep what the rules read: keys, plans, metrics, credits, traits the flags test", () => {
    for (const c of lean.companies) {
      assert.deepEqual(Object.keys(c.keys).sort(), ["domain", "id"]);
      assert.ok(c.base_plan_id && c.plan_ids[0] === c.base_plan_id && c.plan_version_ids.length === c.plan_ids.length);
      assert.equal(typeof c.credit_balances.bcrd_ai_tokens, "number");
      assert.deepEqual(
        c.metrics.map((m) => m.event_subtype),
        ["api_call", "ai_query"],
      );
      assert.deepEqual(
        c.traits.map((t) => t.trait_definition?.id),
        ["trdf_company_region", "trdf_company_beta_opt_in"],
      );
      assert.equal(c.subscription !== null, c.billing_product_ids.length > 0);
    }
    for (const u of lean.users) {
      assert.deepEqual(Object.keys(u.keys), ["email"]);
      assert.equal(u.traits.length, 1);
    }
    assert.ok(lean.companies.some((c) => c.billing_product_ids.length > 0));
    assert.ok(
      lean.companies.some((c) => c.rules.length > 0),
      "some companies carry an override",
    );
  });

  test("both shapes are representative: each flag's rules match some companies and not others (SDK engine)", async () => {
    const sdk = await LocalSdk.start();
    for (const [shape, data] of [
      ["full", full],
      ["lean", lean],
    ] as const) {
      const sample = data.companies.slice(0, 200);
      // The first six flags are one of each kind: usage limit, trait + plan group, credit + product, trait or plan
      // version, plan; the sixth kind, a global override, decides alike for everyone.
      const flags = data.flags.slice(0, 6).filter((f) => f.rules[0]?.rule_type !== "global_override");
      assert.equal(flags.length, 5);
      for (const flag of flags) {
        const outcomes = new Set<string>();
        for (const c of sample) {
          const r = await sdk.check(data, { company: c.keys }, flag.key);
          outcomes.add(`${r.value} ${r.ruleId}`);
        }
        assert.ok(outcomes.size > 1, `${shape}: ${flag.key} (${flag.rules[0]?.name}) always ${[...outcomes]}`);
      }
    }
  });
});
