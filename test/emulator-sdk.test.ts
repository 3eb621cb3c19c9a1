/**
 * The official TypeScript SDK in DIRECT datastream mode against the emulator, unchanged: it evaluates every flag
 * of examples/fixture.json for the shared table of company/user contexts exactly as the rules say (expected
 * values written by hand from the fixture, not computed by the SDK), and sees changes made through the admin API
 * on its very next check: an admin change answers only once a connected direct-mode SDK has received it (even
 * though the SDK negotiates permessage-deflate, which both sides run asynchronously). A check the datastream can
 * no longer serve (a deleted company or user) falls back to the REST check, which answers at once; a client that
 * stops reading does not hold the admin API up.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { WebSocket } from "ws";
import { loadFixtureFile, type RunningEmulator, startEmulator } from "../src/emulator/index.js";
import type { Company, Fixture, Flag } from "../src/model/wire.js";
import { admin, emulatorDump, emulatorState, recordingLogger, type SdkClient, startDirectSdk } from "./helpers/e2e.js";
import { LocalSdk } from "./helpers/local-sdk.js";
import { allChecks, type Context } from "./helpers/sdk-table.js";

const FIXTURE = fileURLToPath(new URL("../examples/fixture.json", import.meta.url));
const acme = { domain: "acme.example" };
const erin = { email: "erin@initech.example" };
const region = (value: string) => ({
  trait_definition: { id: "trdf_region", comparable_type: "string", entity_type: "company" },
  value,
});

describe("official SDK (direct datastream mode) against the emulator", () => {
  const fixture: Fixture = loadFixtureFile(FIXTURE);
  let emu: RunningEmulator;
  let client: SdkClient;
  const log = recordingLogger();
  const emuAdmin = (method: string, path: string, body?: unknown) => admin(emu.url, method, path, body);
  const restChecks = async () => (await emulatorState(emu.url)).requests.flag_checks;
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
    emu = await startEmulator({ fixture });
    client = await startDirectSdk(emu.url, "legacy-export", { logger: log.logger });
  });

  after(async () => {
    await client?.close();
    await emu?.close();
  });

  test("the SDK connected in direct mode (compressed) and asked for the flags snapshot", async () => {
    const state = await emulatorState(emu.url);
    assert.equal(state.connections, 1);
    assert.deepEqual(state.connections_by_mode, { datastream: 1 });
    assert.equal(state.connections_compressed, 1, "the SDK offers permessage-deflate, the emulator takes it");
  });

  test("every flag for every context of the table evaluates as the rules say, without REST fallbacks", async () => {
    const rest = await restChecks();
    const checks = allChecks();
    assert.ok(checks.length >= 300);
    const mismatches: string[] = [];
    for (const c of checks) {
      const got = await check(c.row.context, c.flag);
      if (got !== c.expected) mismatches.push(`${c.name} = ${got}, expected ${c.expected}`);
    }
    assert.deepEqual(mismatches, []);
    assert.equal(await restChecks(), rest, "no check fell back to POST /flags/{key}/check");
  });

  test("every acknowledged change is in the SDK on its very next check", async () => {
    const dump = await emulatorDump(emu.url);
    const legacy = dump.flags.find((f) => f.key === "legacy-export")!;
    const stale: string[] = [];
    for (let i = 0; i < 12; i++) {
      // A flag rule change (the kill switch on, off), a flag delete and re-create, a company partial.
      const killed = i % 2 === 0;
      await emuAdmin("PUT", "/flags/legacy-export", { ...legacy, rules: killed ? legacy.rules : [] });
      if ((await check({}, "legacy-export")) !== !killed) stale.push(`#${i} legacy-export rule change`);
      await emuAdmin("PATCH", "/companies/comp_acme", { traits: [region(killed ? "eu" : "us")] });
      if ((await check({ company: acme }, "eu-data-residency")) !== killed) stale.push(`#${i} acme's region`);
      await emuAdmin("DELETE", "/flags/legacy-export");
      const gone = await client.checkFlagWithEntitlement({}, "legacy-export");
      if (gone.reason !== "flag default") stale.push(`#${i} legacy-export delete: ${gone.reason}`);
      await emuAdmin("PUT", "/flags/legacy-export", legacy);
    }
    assert.deepEqual(stale, [], "checks made right after the admin API answered");
  });

  test("a company PATCH (pushed as a partial) and a user PATCH are seen on the next checks", async () => {
    await emuAdmin("PATCH", "/companies/comp_acme", {
      traits: [
        { trait_definition: { id: "trdf_seats", comparable_type: "int", entity_type: "company" }, value: "120" },
        region("eu"),
        {
          trait_definition: { id: "trdf_beta_opt_in", comparable_type: "bool", entity_type: "company" },
          value: "true",
        },
      ],
    });
    assert.equal(await check({ company: acme }, "eu-data-residency"), true);
    // 120 seats: past the invite limit and the onboarding threshold.
    assert.equal(await check({ company: acme }, "team-invites"), false);
    assert.equal(await check({ company: acme }, "onboarding-checklist"), false);

    assert.equal(await check({ company: acme, user: erin }, "beta-program"), false);
    await emuAdmin("PATCH", "/users/user_005", {
      traits: [
        { trait_definition: { id: "trdf_role", comparable_type: "string", entity_type: "user" }, value: "admin" },
      ],
    });
    assert.equal(await check({ company: acme, user: erin }, "beta-program"), true, "erin promoted to admin");
  });

  test("a full company PUT (override removed) and a new flag are seen on the next checks", async () => {
    const rest = await restChecks();
    const dump = await emulatorDump(emu.url);
    const globex = dump.companies.find((c) => c.id === "comp_globex")!;
    assert.equal(await check({ company: { slug: "globex" } }, "advanced-reports"), true);
    await emuAdmin("PUT", "/companies/comp_globex", { ...globex, rules: [] });
    assert.equal(await check({ company: { slug: "globex" } }, "advanced-reports"), false);

    const internal = dump.flags.find((f) => f.key === "internal-tools")!;
    const fresh: Flag = {
      ...internal,
      id: "flag_fresh",
      key: "fresh-flag",
      rules: internal.rules.map((r) => ({ ...r, id: `${r.id}_fresh`, flag_id: "flag_fresh" })),
    };
    await emuAdmin("PUT", "/flags/fresh-flag", fresh);
    assert.equal(await check({ company: acme, user: { email: "alice@acme.example" } }, "fresh-flag"), true);
    assert.equal(
      await check({ company: { domain: "hooli.example" }, user: { email: "grace@hooli.example" } }, "fresh-flag"),
      false,
    );
    assert.equal(await restChecks(), rest, "no check fell back to the REST API");
  });

  test("deleted and re-keyed entities: the lookup is answered at once, the REST fallback answers once", async () => {
    const problems = log.problems.length;
    const local = await LocalSdk.start();
    const dump = await emulatorDump(emu.url);
    const initech = structuredClone(dump.companies.find((c) => c.id === "comp_initech")) as Company;
    const ctxs: [Context, string][] = [
      [{ company: { domain: "stark.example" } }, "sso"],
      [{ company: acme, user: { email: "bob@acme.example" } }, "beta-program"],
      [{ company: { slug: "initech" } }, "priority-support"],
    ];
    // The SDK holds each of them before the changes.
    for (const [ctx, flag] of ctxs) await check(ctx, flag);
    await emuAdmin("DELETE", "/companies/comp_stark");
    await emuAdmin("DELETE", "/users/user_002");
    await emuAdmin("PUT", "/companies/comp_initech", {
      ...initech,
      keys: { domain: "initech.example", slug: "initrode" },
    });
    const after = await emulatorDump(emu.url);
    for (const [ctx, flag] of ctxs) {
      const before = await restChecks();
      const got = await client.checkFlagWithEntitlement(ctx, flag);
      assert.deepEqual(
        { value: got.value, reason: got.reason, companyId: got.companyId ?? null, userId: got.userId ?? null },
        await local.check(after, ctx, flag).then((w) => ({
          value: w.value,
          reason: w.reason,
          companyId: w.companyId,
          userId: w.userId,
        })),
        `${flag} for ${JSON.stringify(ctx)}`,
      );
      assert.equal(await restChecks(), before + 1, `${JSON.stringify(ctx)}: one REST check, no retries`);
    }
    assert.ok(
      log.problems.slice(problems).every((p) => /^warn: DataStream error received: (Company|User) not found$/.test(p)),
      log.problems.join("\n"),
    );
  });

  test("clients that stop reading do not hold up the admin API, nor delay the others", async () => {
    /** A compressed connection (as the SDK's) that subscribes to flags, then reads nothing, pings included. */
    const stalled = async (mode: string) => {
      const ws = new WebSocket(emu.wsUrl, {
        headers: { "X-Schematic-Api-Key": "k", "X-Schematic-Datastream-Mode": mode },
      });
      await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
      ws.send(JSON.stringify({ data: { entity_type: "rulesengine.Flags" } }));
      await new Promise((resolve) => ws.once("message", resolve));
      (ws as unknown as { _socket: { pause(): void } })._socket.pause();
      return ws;
    };
    const readers = [await stalled("datastream"), await stalled("replicator")];
    try {
      const legacy = (await emulatorDump(emu.url)).flags.find((f) => f.key === "legacy-export")!;
      // ~10 MB that compresses badly (random rule names), more than the socket buffers hold.
      const noisy = (i: number): Flag => ({
        ...legacy,
        rules: legacy.rules.map((r) => ({ ...r, name: randomBytes(12_000).toString("base64") + i })),
      });
      const changes = Array.from({ length: 500 }, (_, i) => ({
        method: "PUT",
        path: "/flags/legacy-export",
        body: i === 499 ? { ...legacy, rules: [] } : noisy(i),
      }));
      const answer = await emuAdmin("POST", "/bulk", { changes });
      assert.equal(answer.count, 500);
      const backlog = [...emu.server.hub.connections].find((c) => c.mode === "replicator")!.ws.bufferedAmount;
      assert.ok(backlog > 0, "the stalled replicator's socket still holds frames: the answer did not wait for it");
      assert.equal(await check({}, "legacy-export"), true, "the reading SDK has the last change");
    } finally {
      for (const ws of readers) ws.terminate();
    }
  });
});
