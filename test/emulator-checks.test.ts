/**
 * The emulator's REST flag checks (`POST /flags/{key}/check`, `/flags/check`, `/flags/check-bulk`) in the API's
 * request and response shapes, over real HTTP: values from the SDK's own rules engine over the current state
 * (examples/fixture.json), keys matched as lookups are, preflight, 404 for an unknown flag, 400 naming what is
 * malformed, API keys, and the official SDK's REST client parsing every answer.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { loadFixtureFile, type RunningEmulator, startEmulator } from "../src/emulator/index.js";
import type { Fixture } from "../src/model/wire.js";
import { emulatorState, recordingLogger, startRestSdk } from "./helpers/e2e.js";
import { call } from "./helpers/emulator.js";
import { LocalSdk } from "./helpers/local-sdk.js";
import { FLAGS } from "./helpers/sdk-table.js";

const FIXTURE = fileURLToPath(new URL("../examples/fixture.json", import.meta.url));

async function post(emu: RunningEmulator, path: string, body: unknown, key: string | null = "k") {
  const res = await fetch(`${emu.url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(key === null ? {} : { "X-Schematic-Api-Key": key }) },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await res.text();
  // biome-ignore lint/suspicious/noExplicitAny: parsed JSON answers, read field by field in assertions
  return { status: res.status, body: (text ? JSON.parse(text) : undefined) as any };
}

describe("REST flag checks", () => {
  const fixture: Fixture = loadFixtureFile(FIXTURE);
  let emu: RunningEmulator;
  let local: LocalSdk;

  before(async () => {
    emu = await startEmulator({ fixture });
    local = await LocalSdk.start();
  });
  after(() => emu.close());

  test("one flag: the API's response shape, the company found by any key, ignoring case", async () => {
    const r = await post(emu, "/flags/advanced-reports/check", { company: { domain: "ACME.example" } });
    assert.equal(r.status, 200);
    assert.deepEqual(r.body.params, {});
    const d = r.body.data;
    assert.deepEqual(
      [d.flag, d.flag_id, d.value, d.rule_id, d.rule_type, d.company_id, d.user_id],
      [
        "advanced-reports",
        "flag_advanced_reports",
        true,
        "rule_reports_pro",
        "plan_entitlement",
        "comp_acme",
        undefined,
      ],
    );
    assert.equal(
      d.reason,
      (await local.check(fixture, { company: { domain: "acme.example" } }, "advanced-reports")).reason,
    );
    // The entitlement and the deprecated usage figures, snake_case as the API sends them.
    assert.deepEqual(d.entitlement, {
      feature_id: "feat_advanced_reports",
      feature_key: "advanced-reports",
      value_type: "numeric",
      allocation: 100,
      soft_limit: 80,
      usage: 42,
      event_name: "report_run",
      metric_period: "all_time",
      month_reset: "first_of_month",
    });
    assert.deepEqual(
      [d.feature_allocation, d.feature_usage, d.feature_usage_event, d.feature_usage_period],
      [100, 42, "report_run", "all_time"],
    );

    // A user by its second key; a company no key matches is evaluated as absent; flag keys ignore case.
    const u = await post(emu, "/flags/INTERNAL-TOOLS/check", {
      company: { domain: "nobody.example" },
      user: { user_id: "U-001" },
    });
    assert.deepEqual(
      [u.body.data.flag, u.body.data.user_id, u.body.data.company_id],
      ["internal-tools", "user_001", undefined],
    );
    assert.equal(u.body.data.value, true, "alice is staff");
  });

  test("an unknown flag is a 404; the SDK then answers the flag's default without retrying", async () => {
    const r = await post(emu, "/flags/no-such-flag/check", {});
    assert.equal(r.status, 404);
    assert.match(r.body.error, /no-such-flag/);

    const log = recordingLogger();
    const client = startRestSdk(emu.url, { logger: log.logger });
    try {
      const before = (await emulatorState(emu.url)).requests.flag_checks;
      const got = await client.checkFlagWithEntitlement({}, "no-such-flag");
      assert.deepEqual([got.value, got.reason], [false, "flag default"]);
      assert.equal(
        (await emulatorState(emu.url)).requests.flag_checks,
        before + 1,
        "one request: a 404 is not retried",
      );
      assert.match(log.problems.join("\n"), /NotFoundError/);
    } finally {
      await client.close();
    }
  });

  test("every flag (/flags/check) and several contexts (/flags/check-bulk) give the single checks' answers", async () => {
    const ctx = { company: { domain: "tyrell.example" }, user: { email: "bob@acme.example" } };
    const all = await post(emu, "/flags/check", ctx);
    assert.equal(all.status, 200);
    assert.deepEqual(
      all.body.data.flags.map((f: { flag: string }) => f.flag),
      [...FLAGS].sort(),
      "every flag, in key order",
    );
    for (const f of all.body.data.flags) {
      assert.deepEqual(f, (await post(emu, `/flags/${f.flag}/check`, ctx)).body.data, f.flag);
    }
    assert.deepEqual(all.body.data.credit_balances, { bcrd_ai_tokens: { remaining: 10, reserved: 0, settled: 10 } });
    assert.equal((await post(emu, "/flags/check", {})).body.data.credit_balances, undefined, "no company, no balances");

    const contexts = [ctx, {}, { company: { slug: "globex" } }];
    const bulk = await post(emu, "/flags/check-bulk", { contexts });
    assert.equal(bulk.status, 200);
    assert.equal(bulk.body.data.data.length, 3);
    for (const [i, c] of contexts.entries()) {
      assert.deepEqual(bulk.body.data.data[i], (await post(emu, "/flags/check", c)).body.data, `context ${i}`);
    }

    // The SDK's REST client reads all three.
    const client = startRestSdk(emu.url);
    try {
      const flags = await client.checkFlags(ctx);
      assert.deepEqual(
        flags.map((f) => [f.flag, f.value, f.ruleType ?? null]),
        all.body.data.flags.map((f: { flag: string; value: boolean; rule_type?: string }) => [
          f.flag,
          f.value,
          f.rule_type ?? null,
        ]),
      );
      const viaBulk = await client.features.checkFlagsBulk({ contexts });
      assert.equal(
        viaBulk.data.data[2]!.flags.find((f) => f.flag === "advanced-reports")?.ruleType,
        "company_override",
      );
    } finally {
      await client.close();
    }
  });

  test("a preflight simulates usage, event usage and credit cost on a single-flag check", async () => {
    const hooli = { company: { domain: "hooli.example" } }; // 99 of 100 reports used
    const value = async (preflight: unknown) =>
      (await post(emu, "/flags/advanced-reports/check", { ...hooli, preflight })).body.data.value;
    assert.equal(await value(undefined), true);
    assert.equal(await value({ usage: 1 }), false);
    assert.equal(await value({ usage: 0 }), true, "zero has no effect");
    assert.equal(await value({ event_usage: { event_subtype: "report_run", quantity: 1 } }), false);
    assert.equal(await value({ event_usage: { event_subtype: "api_call", quantity: 1 } }), true);
    const tyrell = { company: { domain: "tyrell.example" } }; // 10 credits, 10 per use
    const ai = async (cost: number) =>
      (
        await post(emu, "/flags/ai-assistant/check", {
          ...tyrell,
          preflight: { credit_cost: { bcrd_ai_tokens: cost } },
        })
      ).body.data.value;
    assert.deepEqual([await ai(10), await ai(11)], [true, false]);
  });

  test("malformed requests are 400s naming the problem", async () => {
    const cases: [string, unknown, RegExp][] = [
      ["/flags/sso/check", "{not json", /invalid JSON/],
      ["/flags/sso/check", [1], /^\$: expected an object/],
      [
        "/flags/sso/check",
        { company: { domain: 1 } },
        /^\$\.company: expected an object of key names to string values/,
      ],
      ["/flags/sso/check", { compnay: {} }, /^\$\.compnay: unknown field/],
      ["/flags/sso/check", { preflight: { usage: -1 } }, /^\$\.preflight\.usage: expected a non-negative integer/],
      ["/flags/sso/check", { preflight: { usage: 1.5 } }, /^\$\.preflight\.usage: expected a non-negative integer/],
      ["/flags/sso/check", { preflight: { event_usage: { quantity: 1 } } }, /^\$\.preflight\.event_usage: expected/],
      ["/flags/sso/check", { preflight: { credit_cost: { c: "1" } } }, /^\$\.preflight\.credit_cost: expected/],
      ["/flags/sso/check", { preflight: { usgae: 1 } }, /^\$\.preflight\.usgae: unknown field/],
      ["/flags/check", { preflight: { usage: 1 } }, /^\$\.preflight: only a single-flag check/],
      ["/flags/check-bulk", {}, /^\$\.contexts: expected/],
      ["/flags/check-bulk", { contexts: [{ user: "bob" }] }, /^\$\.contexts\[0\]\.user: expected an object/],
      ["/flags/check-bulk", { contexts: [{ preflight: { usage: 1 } }] }, /^\$\.contexts\[0\]\.preflight: only/],
    ];
    for (const [path, body, message] of cases) {
      const r = await post(emu, path, body);
      assert.equal(r.status, 400, `${path} ${JSON.stringify(body)}`);
      assert.match(r.body.error, message, `${path} ${JSON.stringify(body)}`);
    }
  });

  test("REST faults leave checks and event capture alone", async () => {
    assert.equal((await call(emu, "POST", "/faults", { rest_error_rate: 1, rest_error_status: 503 })).status, 200);
    try {
      const listing = await fetch(`${emu.url}/companies`, { headers: { "X-Schematic-Api-Key": "k" } });
      assert.equal(listing.status, 503);
      await listing.text();
      assert.equal((await post(emu, "/flags/sso/check", {})).status, 200);
      assert.equal((await post(emu, "/batch", { events: [] })).status, 200);
    } finally {
      await call(emu, "POST", "/faults", {});
    }
  });
});

describe("REST flag checks with --api-key", () => {
  test("another key (or none) is a 401, for checks and for event capture", async () => {
    const emu = await startEmulator({ fixture: { flags: [], companies: [], users: [] }, apiKey: "secret" });
    try {
      for (const [path, body] of [
        ["/flags/check", {}],
        ["/batch", { events: [] }],
      ] as const) {
        assert.equal((await post(emu, path, body, "wrong")).status, 401, path);
        assert.equal((await post(emu, path, body, null)).status, 401, path);
        assert.equal((await post(emu, path, body, "secret")).status, 200, path);
      }
    } finally {
      await emu.close();
    }
  });
});
