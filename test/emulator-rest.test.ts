/**
 * The emulator's REST listing side: listing and count endpoints in the REST API's shapes, paging in id order,
 * API-key checks and the injected REST faults (flag checks: emulator-checks.test.ts; events: emulator-capture).
 */
import assert from "node:assert/strict";
import { after, before, beforeEach, describe, test } from "node:test";
import { generateFixture, type RunningEmulator, startEmulator } from "../src/emulator/index.js";
import { companyToRest, restCompanyToEngine, restUserToEngine, userToRest } from "../src/model/rest.js";
import type { Fixture } from "../src/model/wire.js";

const data: Fixture = generateFixture({ companies: 250, users: 120, flags: 6, seed: 7 });

/** `key` null sends no X-Schematic-Api-Key header. */
async function get(emu: RunningEmulator, path: string, key: string | null = "k") {
  const res = await fetch(`${emu.url}${path}`, { headers: key === null ? {} : { "X-Schematic-Api-Key": key } });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : undefined };
}

async function setFaults(emu: RunningEmulator, faults: Record<string, unknown>): Promise<void> {
  const res = await fetch(`${emu.url}/_emulator/faults`, { method: "POST", body: JSON.stringify(faults) });
  assert.equal(res.status, 200, await res.text());
}

describe("REST listing", () => {
  let emu: RunningEmulator;
  before(async () => {
    emu = await startEmulator({ fixture: data });
  });
  after(() => emu.close());

  test("counts", async () => {
    assert.deepEqual((await get(emu, "/companies/count")).body, { data: { count: 250 }, params: {} });
    assert.deepEqual((await get(emu, "/users/count")).body, { data: { count: 120 }, params: {} });
  });

  test("pages cover every entity once, in id order, in the REST shape", async () => {
    const seen: string[] = [];
    for (let offset = 0; ; offset += 60) {
      const r = await get(emu, `/companies?limit=60&offset=${offset}`);
      assert.equal(r.status, 200);
      assert.equal(r.headers.get("content-type"), "application/json");
      assert.deepEqual(r.body.params, { limit: 60, offset });
      if (r.body.data.length === 0) break;
      assert.ok(r.body.data.length <= 60);
      for (const row of r.body.data) seen.push(row.id);
    }
    const ids = data.companies.map((c) => c.id).sort();
    assert.deepEqual(seen, ids);

    const first = (await get(emu, "/companies?limit=1&offset=0")).body.data[0];
    const wire = data.companies.find((c) => c.id === first.id)!;
    assert.deepEqual(first, JSON.parse(JSON.stringify(companyToRest(wire))));
    assert.ok(Array.isArray(first.keys) && first.keys.some((k: { key: string }) => k.key === "domain"));
    assert.equal(restCompanyToEngine(first).id, wire.id);
    assert.deepEqual(restCompanyToEngine(first).keys, wire.keys);
  });

  test("users page the same way; defaults are limit 100, offset 0; past the end is empty", async () => {
    const r = await get(emu, "/users");
    assert.deepEqual(r.body.params, { limit: 100, offset: 0 });
    assert.equal(r.body.data.length, 100);
    assert.deepEqual(
      r.body.data.map((u: { id: string }) => u.id),
      data.users
        .map((u) => u.id)
        .sort()
        .slice(0, 100),
    );
    const u0 = data.users.find((u) => u.id === r.body.data[0].id)!;
    assert.deepEqual(r.body.data[0], JSON.parse(JSON.stringify(userToRest(u0))));
    assert.deepEqual(restUserToEngine(r.body.data[0]).keys, u0.keys);
    const tail = await get(emu, "/users?offset=100&limit=100");
    assert.equal(tail.body.data.length, 20);
    assert.deepEqual((await get(emu, "/users?offset=5000")).body.data, []);
  });

  test("`ids` (repeated) lists only those entities that exist, in id order", async () => {
    const [a, b] = data.companies.map((c) => c.id).sort();
    const r = await get(emu, `/companies?ids=${b}&ids=no-such-company&ids=${a}&ids=${a}&limit=10`);
    assert.deepEqual(
      r.body.data.map((c: { id: string }) => c.id),
      [a, b],
    );
    const u = data.users[3]!.id;
    assert.deepEqual(
      (await get(emu, `/users?ids=${encodeURIComponent(u)}`)).body.data.map((x: { id: string }) => x.id),
      [u],
    );
  });

  test("bad paging parameters are 400; unknown paths 404; other methods 405", async () => {
    for (const q of ["limit=0", "limit=-1", "limit=abc", "offset=-5", "offset=1.5"]) {
      assert.equal((await get(emu, `/companies?${q}`)).status, 400, q);
    }
    assert.equal((await get(emu, "/plans")).status, 404);
    const res = await fetch(`${emu.url}/companies`, { method: "DELETE", headers: { "X-Schematic-Api-Key": "k" } });
    assert.equal(res.status, 405);
  });
});

describe("REST API keys", () => {
  test("with --api-key only that key is taken", async () => {
    const emu = await startEmulator({ fixture: data, apiKey: "secret" });
    try {
      assert.equal((await get(emu, "/companies/count", null)).status, 401);
      assert.equal((await get(emu, "/companies", "wrong")).status, 401);
      assert.equal((await get(emu, "/users/count", "wrong")).status, 401);
      assert.equal((await get(emu, "/companies/count", "secret")).status, 200);
      assert.equal((await get(emu, "/users?limit=2", "secret")).body.data.length, 2);
      assert.equal((await get(emu, "/_emulator/state", null)).status, 200, "the admin API needs no key");
    } finally {
      await emu.close();
    }
  });

  test("without --api-key any non-empty key is taken", async () => {
    const emu = await startEmulator({ fixture: data });
    try {
      assert.equal((await get(emu, "/companies/count", null)).status, 401);
      assert.equal((await get(emu, "/companies/count", "")).status, 401);
      assert.equal((await get(emu, "/companies/count", "whatever")).status, 200);
    } finally {
      await emu.close();
    }
  });
});

describe("REST faults", () => {
  let emu: RunningEmulator;
  before(async () => {
    emu = await startEmulator({ fixture: data });
  });
  beforeEach(() => setFaults(emu, {}));
  after(() => emu.close());

  test("rest_fail_next fails the next N requests with rest_error_status (default 503), then serves", async () => {
    await setFaults(emu, { rest_fail_next: 2 });
    assert.equal((await get(emu, "/companies/count")).status, 503);
    assert.equal((await get(emu, "/users")).status, 503);
    assert.equal((await get(emu, "/companies/count")).status, 200);
    await setFaults(emu, { rest_fail_next: 1, rest_error_status: 429, rest_retry_after_s: 2 });
    const r = await get(emu, "/companies");
    assert.equal(r.status, 429);
    assert.equal(r.headers.get("retry-after"), "2");
    assert.equal((await get(emu, "/companies")).status, 200);
  });

  test("rest_fail_paths limits faults to those exact paths", async () => {
    await setFaults(emu, { rest_error_rate: 1, rest_fail_paths: ["/users"] });
    assert.equal((await get(emu, "/users?limit=5")).status, 503);
    assert.equal((await get(emu, "/users/count")).status, 200);
    assert.equal((await get(emu, "/companies")).status, 200);
  });

  test("rest_error_rate fails that share of requests, reproducibly for a seed; {} clears it", async () => {
    const pattern = async () => {
      await setFaults(emu, { rest_error_rate: 0.5, seed: 42, rest_error_status: 500 });
      const out: number[] = [];
      for (let i = 0; i < 40; i++) out.push((await get(emu, "/companies/count")).status);
      return out;
    };
    const a = await pattern();
    const b = await pattern();
    assert.deepEqual(a, b);
    const failures = a.filter((s) => s === 500).length;
    assert.ok(failures > 5 && failures < 35, `${failures} of 40 failed`);
    assert.ok(a.every((s) => s === 500 || s === 200));
    await setFaults(emu, { rest_error_rate: 1 });
    assert.equal((await get(emu, "/companies/count")).status, 503);
    await setFaults(emu, {});
    assert.equal((await get(emu, "/companies/count")).status, 200);
  });

  test("rest_latency_ms delays REST answers (never the admin API)", async () => {
    await setFaults(emu, { rest_latency_ms: 150 });
    const t0 = performance.now();
    const r = await get(emu, "/companies/count");
    assert.equal(r.status, 200);
    assert.ok(performance.now() - t0 >= 140, "the answer waited for the configured latency");
    await setFaults(emu, { rest_latency_ms: 0 });
  });
});
