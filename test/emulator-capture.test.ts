/**
 * Event capture (`POST /batch`, the SDK's eventCaptureBaseURL pointed at the emulator), over real HTTP and a
 * real datastream connection: `track` adds usage to the company's metrics (the periods the rules measure, a new
 * period when the last one is over), `identify` creates and updates companies and users; every change is pushed
 * with a stream id and kept for replay; `GET /_emulator/events` lists what arrived; a malformed event is a 400
 * naming it and nothing of its batch applies. Also the metric periods' reset times (pure).
 */
import assert from "node:assert/strict";
import { after, before, beforeEach, describe, test } from "node:test";
import { type RunningEmulator, startEmulator } from "../src/emulator/index.js";
import { periodEnd } from "../src/emulator/usage.js";
import type { Company, CompanyMetric, Condition, Fixture, Flag, User } from "../src/model/wire.js";
import { emulatorDump, emulatorState, startRestSdk } from "./helpers/e2e.js";
import { A, call, company, flag, metric, Probe, subscribe, user } from "./helpers/emulator.js";
import { waitFor } from "./helpers/redis.js";

const SEATS = { id: "trdf_seats", comparable_type: "int", entity_type: "company" } as const;

function metricCondition(event: string, period: Condition["metric_period"], value: number): Condition {
  return {
    id: `cond_${event}_${period}`,
    ...A,
    condition_type: "metric",
    operator: "lt",
    resource_ids: [],
    event_subtype: event,
    metric_value: value,
    metric_period: period,
    metric_period_month_reset: period === "current_month" ? "first_of_month" : null,
    credit_id: null,
    consumption_rate: null,
    trait_definition: null,
    trait_value: "",
    comparison_trait_definition: null,
  };
}

function flagMeasuring(key: string, conditions: Condition[]): Flag {
  return flag(key, false, {
    rules: [
      {
        id: `rule_${key}`,
        flag_id: `flag_${key}`,
        ...A,
        rule_type: "standard",
        name: key,
        priority: 1,
        conditions,
        condition_groups: [],
        value: true,
      },
    ],
  });
}

function fixture(): Fixture {
  return {
    flags: [
      flagMeasuring("reports-this-month", [metricCondition("report_run", "current_month", 10)]),
      flagMeasuring("reports-today", [metricCondition("report_run", "current_day", 5)]),
      flagMeasuring("seats", [
        {
          ...metricCondition("seats", null, 0),
          condition_type: "trait",
          operator: "gte",
          event_subtype: null,
          metric_value: null,
          trait_definition: SEATS,
          trait_value: "10",
        },
      ]),
    ],
    companies: [
      company(
        "comp_1",
        { domain: "one.example" },
        {
          metrics: [metric("comp_1", "report_run", 3), metric("comp_1", "export", 1)],
          entitlements: [
            {
              feature_id: "feat_reports",
              feature_key: "reports-this-month",
              value_type: "numeric",
              event_name: "report_run",
              metric_period: "all_time",
              month_reset: "first_of_month",
              allocation: 100,
              usage: 3,
            },
          ],
        },
      ),
      company(
        "comp_2",
        { domain: "two.example" },
        {
          metrics: [metric("comp_2", "report_run", 7, { period: "current_day", valid_until: "2020-01-02T00:00:00Z" })],
        },
      ),
    ],
    users: [user("user_1", { email: "ann@one.example" }), user("user_2", { email: "bob@two.example", user_id: "u2" })],
  };
}

async function batch(emu: RunningEmulator, events: unknown[] | unknown) {
  const res = await fetch(`${emu.url}/batch`, {
    method: "POST",
    headers: { "content-type": "application/json", "X-Schematic-Api-Key": "k" },
    body: JSON.stringify(Array.isArray(events) ? { events } : events),
  });
  // biome-ignore lint/suspicious/noExplicitAny: parsed JSON answers, read field by field in assertions
  return { status: res.status, body: (await res.json()) as any };
}

const track = (body: Record<string, unknown>) => ({ api_key: "k", type: "track", body });
const identify = (body: Record<string, unknown>) => ({ api_key: "k", type: "identify", body });

describe("event capture", () => {
  let emu: RunningEmulator;
  let probe: Probe;
  const companyNow = async (id: string) => (await emulatorDump(emu.url)).companies.find((c) => c.id === id) as Company;
  // biome-ignore lint/suspicious/noExplicitAny: parsed JSON answers
  const events = async (query = ""): Promise<any> => (await call(emu, "GET", `/events${query}`)).body;

  before(async () => {
    emu = await startEmulator({ fixture: fixture() });
  });
  beforeEach(async () => {
    probe?.close();
    // A replicator's connection: every company and user change is pushed to it.
    probe = await Probe.open(emu.wsUrl, "k", { "X-Schematic-Datastream-Mode": "replicator" });
    await subscribe(probe, "rulesengine.Companies");
    await subscribe(probe, "rulesengine.Users");
  });
  after(async () => {
    probe?.close();
    await emu.close();
  });

  test("track adds its quantity to the subtype's metrics, creates the periods rules measure, pushes a partial", async () => {
    // A change first, to have a replay cursor before the event.
    const head = (await call(emu, "PATCH", "/users/user_1", { traits: [] })).body.stream_id;
    assert.equal((await probe.next()).stream_id, head);
    const r = await batch(emu, [track({ company: { domain: "ONE.example" }, event: "report_run", quantity: 2 })]);
    assert.deepEqual([r.status, r.body], [200, { accepted: 1 }]);

    const pushed = await probe.next();
    assert.deepEqual(
      [pushed.entity_type, pushed.message_type, pushed.entity_id],
      ["rulesengine.Company", "partial", "comp_1"],
    );
    assert.match(pushed.stream_id ?? "", /^\d+-\d+$/);
    const metrics = (pushed.data as { metrics: CompanyMetric[] }).metrics;
    const byPeriod = Object.fromEntries(metrics.map((m) => [m.period, m]));
    assert.deepEqual(Object.keys(pushed.data as object), ["metrics"], "a partial of the metrics only");
    assert.deepEqual(Object.keys(byPeriod).sort(), ["all_time", "current_day", "current_month"]);
    assert.equal(byPeriod.all_time!.value, 5, "3 + 2");
    assert.equal(byPeriod.all_time!.valid_until, null);
    assert.equal(byPeriod.current_month!.value, 2, "a new period starts at the event's quantity");
    const now = new Date();
    assert.equal(
      byPeriod.current_month!.valid_until,
      new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1)).toISOString().replace(".000Z", "Z"),
    );
    assert.equal(
      Date.parse(byPeriod.current_day!.valid_until!),
      Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1),
    );

    // The state: export untouched, the entitlement's usage synced as clients sync it from a metrics partial.
    const c = await companyNow("comp_1");
    assert.equal(c.metrics.find((m) => m.event_subtype === "export")?.value, 1);
    assert.equal(c.metrics.length, 4);
    assert.equal(c.entitlements?.[0]?.usage, 5);
    const listed = (await events("?type=track")).events.at(-1);
    assert.deepEqual([listed.company_id, listed.stream_ids], ["comp_1", [pushed.stream_id]]);

    // Kept for replay like an admin change.
    const late = await Probe.open(emu.wsUrl, "k", { "X-Schematic-Datastream-Mode": "replicator" });
    try {
      await subscribe(late, "rulesengine.Companies", head);
      assert.equal((await late.next()).stream_id, pushed.stream_id);
    } finally {
      late.close();
    }

    // No quantity counts once (as the SDK's own metric bump does).
    await batch(emu, [track({ company: { domain: "one.example" }, event: "report_run" })]);
    assert.equal(
      (await companyNow("comp_1")).metrics.find((m) => m.period === "all_time" && m.event_subtype === "report_run")
        ?.value,
      6,
    );
  });

  test("a metric whose period is over starts again at the event's quantity", async () => {
    await batch(emu, [track({ company: { domain: "two.example" }, event: "report_run", quantity: 1 })]);
    const day = (await companyNow("comp_2")).metrics.find((m) => m.period === "current_day")!;
    assert.equal(day.value, 1, "7 were counted in a day long past");
    assert.ok(Date.parse(day.valid_until!) > Date.now(), "valid until the next midnight");
    assert.ok(Date.parse(day.created_at) <= Date.now());
  });

  test("a track for no known company is listed and changes nothing", async () => {
    const head = (await emulatorState(emu.url)).stream_id;
    assert.equal(
      (
        await batch(emu, [
          track({ company: { domain: "nobody.example" }, event: "report_run" }),
          track({ user: { email: "ann@one.example" }, event: "report_run" }),
        ])
      ).status,
      200,
    );
    assert.equal((await emulatorState(emu.url)).stream_id, head);
    const [a, b] = (await events("?type=track")).events.slice(-2);
    assert.match(a.ignored, /no company matches/);
    assert.match(b.ignored, /no company keys/);
    assert.deepEqual([a.stream_ids, b.stream_ids], [[], []]);
  });

  test("identify creates a company and a user, then adds keys and sets traits; names show in REST listings", async () => {
    const created = await batch(emu, [
      identify({
        keys: { email: "neo@three.example" },
        name: "Neo",
        traits: { role: "admin", logins: 3, vip: true },
        company: { keys: { domain: "three.example" }, name: "Three Co", traits: { seats: 5 } },
      }),
    ]);
    assert.equal(created.status, 200);
    const [c, u] = [await probe.next(), await probe.next()];
    assert.deepEqual(
      [c.entity_type, c.message_type, u.entity_type, u.message_type],
      ["rulesengine.Company", "full", "rulesengine.User", "full"],
    );
    const newCompany = c.data as Company;
    const newUser = u.data as User;
    assert.deepEqual(newCompany.keys, { domain: "three.example" });
    assert.deepEqual([newCompany.account_id, newCompany.environment_id], [A.account_id, A.environment_id]);
    assert.deepEqual(newCompany.traits, [{ trait_definition: SEATS, value: "5" }], "seats is the rules' trdf_seats");
    assert.deepEqual(
      newUser.traits.map((t) => [t.trait_definition?.id, t.trait_definition?.comparable_type, t.value]),
      [
        ["role", "string", "admin"],
        ["logins", "int", "3"],
        ["vip", "bool", "true"],
      ],
    );
    const listed = (await events("?type=identify")).events.at(-1);
    assert.deepEqual(
      [listed.company_id, listed.user_id, listed.stream_ids],
      [newCompany.id, newUser.id, [c.stream_id, u.stream_id]],
    );
    const rest = async (path: string, id: string) => {
      const res = await fetch(`${emu.url}${path}?ids=${id}`, { headers: { "X-Schematic-Api-Key": "k" } });
      return ((await res.json()) as { data: { name: string }[] }).data[0]?.name;
    };
    assert.deepEqual([await rest("/companies", newCompany.id), await rest("/users", newUser.id)], ["Three Co", "Neo"]);

    // Found again by a key in other case: the new key is added (a partial), traits set, vip removed.
    await batch(emu, [
      identify({ keys: { email: "NEO@three.example", user_id: "u-neo" }, traits: { role: "viewer", vip: null } }),
    ]);
    const p = await probe.next();
    assert.deepEqual([p.message_type, p.entity_id], ["partial", newUser.id]);
    assert.deepEqual((p.data as User).keys, { user_id: "u-neo" });
    assert.deepEqual(
      (p.data as User).traits.map((t) => [t.trait_definition?.id, t.value]),
      [
        ["role", "viewer"],
        ["logins", "3"],
      ],
    );
    // Nothing new: nothing pushed.
    const head = (await emulatorState(emu.url)).stream_id;
    await batch(emu, [identify({ keys: { user_id: "u-neo" }, traits: { role: "viewer" } })]);
    assert.equal((await emulatorState(emu.url)).stream_id, head);
  });

  test("a malformed event is a 400 naming it, and nothing of its batch applies", async () => {
    const head = (await emulatorState(emu.url)).stream_id;
    const count = (await events()).count;
    const ok = identify({ keys: { email: "never@x.example" } });
    const cases: [unknown, RegExp][] = [
      [{ events: "x" }, /^\$\.events: expected/],
      [{ events: [], extra: 1 }, /^\$\.extra: unknown field/],
      [
        [ok, track({ company: { domain: "one.example" }, event: "e", quantity: -1 })],
        /^\$\.events\[1\]\.body\.quantity: expected a non-negative integer/,
      ],
      [[ok, track({ event: "e", quantity: 1.5 })], /^\$\.events\[1\]\.body\.quantity/],
      [[ok, track({ company: { domain: "one.example" } })], /^\$\.events\[1\]\.body\.event: required/],
      [[ok, { type: "track" }], /^\$\.events\[1\]\.body: expected an object/],
      [
        [ok, { type: "click", body: {} }],
        /^\$\.events\[1\]\.type: expected one of identify, track, flag_check, inference/,
      ],
      [[ok, identify({ keys: {} })], /^\$\.events\[1\]\.body\.keys: needs at least one key/],
      [[ok, identify({ keys: { email: 1 } })], /^\$\.events\[1\]\.body\.keys: expected an object of key names/],
      [
        [ok, identify({ keys: { e: "x" }, traits: { t: { nested: 1 } } })],
        /^\$\.events\[1\]\.body\.traits\.t: expected a string, number, boolean or null/,
      ],
      [
        [ok, identify({ keys: { e: "x" }, company: { name: "no keys" } })],
        /^\$\.events\[1\]\.body\.company\.keys: required/,
      ],
      [[ok, identify({ keys: { e: "x" }, nmae: "typo" })], /^\$\.events\[1\]\.body\.nmae: unknown field/],
      [[ok, { ...ok, sent_at: "yesterday" }], /^\$\.events\[1\]\.sent_at: expected an ISO 8601 time/],
    ];
    for (const [body, message] of cases) {
      const r = await batch(emu, body);
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.match(r.body.error, message, JSON.stringify(body));
    }
    const tooMany = await batch(
      emu,
      Array.from({ length: 101 }, () => ok),
    );
    assert.deepEqual([tooMany.status, tooMany.body], [400, { error: "batch too large", max_size: 100 }]);

    assert.equal((await emulatorState(emu.url)).stream_id, head, "nothing was pushed");
    assert.equal((await events()).count, count, "nothing was recorded");
    assert.ok(!(await emulatorDump(emu.url)).users.some((u) => u.keys.email === "never@x.example"));
  });

  test("an event the data refuses (a key another user holds) is a 400, and the batch's earlier events are undone", async () => {
    const head = (await emulatorState(emu.url)).stream_id;
    const r = await batch(emu, [
      identify({ keys: { email: "first@x.example" } }),
      identify({ keys: { email: "ann@one.example", user_id: "u2" } }), // u2 is bob's
    ]);
    assert.equal(r.status, 400);
    assert.match(r.body.error, /^\$\.events\[1\]: .*already belongs to user "user_2"/);
    assert.equal((await emulatorState(emu.url)).stream_id, head);
    assert.ok(!(await emulatorDump(emu.url)).users.some((u) => u.keys.email === "first@x.example"));
  });

  test("a repeated idempotency key is a duplicate; other event types change nothing; the list filters and clears", async () => {
    const once = {
      ...track({ company: { domain: "one.example" }, event: "export", quantity: 4 }),
      idempotency_key: "k-1",
    };
    const exports = async () => (await companyNow("comp_1")).metrics.find((m) => m.event_subtype === "export")?.value;
    const before = await exports();
    await batch(emu, [once, once]);
    await batch(emu, [once]);
    assert.equal(await exports(), before! + 4, "counted once");
    const dupes = (await events("?type=track")).events
      .slice(-3)
      .map((e: { ignored?: string }) => e.ignored ?? "counted");
    assert.equal(dupes[0], "counted");
    assert.match(dupes[1], /^duplicate/);
    assert.match(dupes[2], /^duplicate/);

    const head = (await emulatorState(emu.url)).stream_id;
    await batch(emu, [
      { type: "flag_check", body: { flag_key: "seats", value: false, reason: "r" } },
      { type: "inference", body: {} },
    ]);
    assert.equal((await emulatorState(emu.url)).stream_id, head);
    const checks = await events("?type=flag_check");
    assert.equal(checks.count, 1);
    assert.match(checks.events[0].ignored, /change nothing/);

    assert.equal((await call(emu, "DELETE", "/events")).status, 200);
    assert.deepEqual(await events(), { events: [], count: 0, dropped: 0 });
  });

  test("the SDK's identify and track arrive through its eventCaptureBaseURL", async () => {
    const client = startRestSdk(emu.url, { eventBufferInterval: 20 });
    try {
      await client.identify({
        keys: { email: "sdk@one.example" },
        company: { keys: { domain: "one.example" }, traits: { seats: 12 } },
      });
      await client.track({ company: { domain: "one.example" }, event: "export", quantity: 2 });
      await waitFor(async () => (await events()).count >= 2, { what: "the SDK's events" });
      const c = await companyNow("comp_1");
      assert.deepEqual(c.traits, [{ trait_definition: SEATS, value: "12" }]);
      assert.ok((await emulatorDump(emu.url)).users.some((u) => u.keys.email === "sdk@one.example"));
      assert.equal(
        (await client.checkFlagWithEntitlement({ company: { domain: "one.example" } }, "seats")).value,
        true,
      );
    } finally {
      await client.close();
    }
  });
});

describe("metric period ends", () => {
  const now = Date.UTC(2026, 11, 4, 15, 30); // Friday 4 December 2026, 15:30 UTC
  const at = (iso: string) => Date.parse(iso);
  const withSubscription = (start: string, end: string) =>
    company("c", { k: "v" }, { subscription: { id: "s", period_start: start, period_end: end } });
  const plain = company("c", { k: "v" });

  test("calendar periods end at UTC midnight, on Sunday, on the 1st; all-time never", () => {
    assert.equal(periodEnd("all_time", "first_of_month", plain, now), null);
    assert.equal(periodEnd("current_day", "first_of_month", plain, now), at("2026-12-05T00:00:00Z"));
    assert.equal(periodEnd("current_week", "first_of_month", plain, now), at("2026-12-06T00:00:00Z"));
    assert.equal(
      periodEnd("current_week", "first_of_month", plain, at("2026-12-06T01:00:00Z")),
      at("2026-12-13T00:00:00Z"),
    );
    assert.equal(periodEnd("current_month", "first_of_month", plain, now), at("2027-01-01T00:00:00Z"));
    assert.equal(
      periodEnd("current_month", "billing_cycle", plain, now),
      at("2027-01-01T00:00:00Z"),
      "no subscription",
    );
  });

  test("a billing-cycle month ends on the subscription's day and time, within the subscription", () => {
    const sub = withSubscription("2026-06-15T10:00:00Z", "2027-06-15T10:00:00Z");
    assert.equal(periodEnd("current_month", "billing_cycle", sub, now), at("2026-12-15T10:00:00Z"));
    assert.equal(
      periodEnd("current_month", "billing_cycle", sub, at("2026-12-20T00:00:00Z")),
      at("2027-01-15T10:00:00Z"),
    );
    const ending = withSubscription("2026-06-15T10:00:00Z", "2026-12-10T00:00:00Z");
    assert.equal(periodEnd("current_month", "billing_cycle", ending, now), at("2026-12-10T00:00:00Z"));
    const future = withSubscription("2027-02-01T00:00:00Z", "2028-02-01T00:00:00Z");
    assert.equal(periodEnd("current_month", "billing_cycle", future, now), at("2027-01-01T00:00:00Z"));
    const soon = withSubscription("2026-12-20T00:00:00Z", "2027-12-20T00:00:00Z");
    assert.equal(periodEnd("current_month", "billing_cycle", soon, now), at("2026-12-20T00:00:00Z"));
  });
});
