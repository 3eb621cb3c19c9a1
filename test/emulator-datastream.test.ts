/**
 * The emulator's /datastream WebSocket: flags snapshot, subscriptions, lookups, change pushes, replay, reload,
 * disconnects, raw frames, pings and API-key checks, over real sockets against an in-process emulator.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { parseStreamId, type RunningEmulator, startEmulator } from "../src/emulator/index.js";
import type { Fixture, Flag } from "../src/model/wire.js";
import { call, company, flag, Probe, subscribe, user } from "./helpers/emulator.js";

// ---------------------------------------------------------------------------------------------------------------
// Test data and helpers

function fixture(): Fixture {
  return {
    flags: [flag("alpha"), flag("beta", true), flag("gamma")],
    companies: [
      company("comp_1", { domain: "One.Example" }),
      company("comp_2", { domain: "two.example", slug: "two" }),
    ],
    users: [user("user_1", { email: "ann@one.example" })],
  };
}

const admin = call;

async function change(emu: RunningEmulator, method: string, path: string, body?: unknown): Promise<string> {
  const r = await admin(emu, method, path, body);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.match(r.body.stream_id, /^\d+-\d+$/);
  return r.body.stream_id;
}

function cmpIds(a: string, b: string): number {
  const x = parseStreamId(a)!;
  const y = parseStreamId(b)!;
  return x.ms !== y.ms ? x.ms - y.ms : x.seq - y.seq;
}

// ---------------------------------------------------------------------------------------------------------------

describe("datastream", () => {
  let emu: RunningEmulator;
  const url = () => emu.wsUrl;
  const probes: Probe[] = [];
  const open = async (key?: string) => {
    const p = await Probe.open(url(), key ?? "k");
    probes.push(p);
    return p;
  };

  before(async () => {
    emu = await startEmulator({ fixture: fixture(), replayLog: 100 });
  });
  after(async () => {
    for (const p of probes) p.close();
    await emu.close();
  });

  test("a Flags request gets one complete snapshot without stream_id, in every request dialect", async () => {
    const p = await open();
    for (const action of [undefined, "", "start"]) {
      p.send({ ...(action === undefined ? {} : { action }), entity_type: "rulesengine.Flags" });
      const msg = await p.next();
      assert.equal(msg.entity_type, "rulesengine.Flags");
      assert.equal(msg.message_type, "full");
      assert.equal(msg.entity_id, null);
      assert.equal("stream_id" in msg, false);
      assert.deepEqual(
        (msg.data as Flag[]).map((f) => f.key),
        ["alpha", "beta", "gamma"],
      );
      assert.deepEqual((msg.data as Flag[])[1], flag("beta", true));
    }
    // replay_from never replays flags: the snapshot again.
    p.send({ action: "start", entity_type: "rulesengine.Flags", replay_from: "1-0" });
    const again = await p.next();
    assert.equal(again.entity_type, "rulesengine.Flags");
    assert.equal(again.message_type, "full");
  });

  test("an opt-in page_size splits the snapshot into pages", async () => {
    const p = await open();
    p.send({ entity_type: "rulesengine.Flags", page_size: 2 });
    const first = await p.next();
    const second = await p.next();
    assert.deepEqual(first.pagination, { has_more: true, page: 1, total: 3 });
    assert.deepEqual(second.pagination, { has_more: false, page: 2, total: 3 });
    assert.equal((first.data as Flag[]).length + (second.data as Flag[]).length, 3);
  });

  test("company and user lookups match keys case-insensitively; misses answer an error echoing the keys", async () => {
    const p = await open();
    p.send({ entity_type: "rulesengine.Company", keys: { DOMAIN: "one.example" } });
    const hit = await p.next();
    assert.equal(hit.entity_type, "rulesengine.Company");
    assert.equal(hit.message_type, "full");
    assert.equal(hit.entity_id, "comp_1");
    assert.equal("stream_id" in hit, false);
    assert.deepEqual(hit.data, fixture().companies[0]);

    p.send({ action: "", entity_type: "rulesengine.Company", keys: { nope: "x", slug: "TWO" } });
    assert.equal((await p.next()).entity_id, "comp_2");

    p.send({ entity_type: "rulesengine.User", keys: { email: "ANN@one.example" } });
    const u = await p.next();
    assert.equal(u.entity_id, "user_1");
    assert.deepEqual(u.data, fixture().users[0]);

    p.send({ entity_type: "rulesengine.Company", keys: { domain: "nobody.example" } });
    const miss = await p.next();
    assert.deepEqual(miss, {
      entity_type: "rulesengine.Company",
      message_type: "error",
      entity_id: null,
      data: { error: "Company not found", keys: { domain: "nobody.example" }, entity_type: "rulesengine.Company" },
    });
    p.send({ entity_type: "rulesengine.User", keys: { email: "nobody@x" } });
    const umiss = await p.next();
    assert.equal(umiss.message_type, "error");
    assert.deepEqual(umiss.data, {
      error: "User not found",
      keys: { email: "nobody@x" },
      entity_type: "rulesengine.User",
    });
    assert.equal("stream_id" in umiss, false);
  });

  test("malformed requests get an error and the connection stays usable", async () => {
    const p = await open();
    p.ws.send("{not json");
    assert.equal((await p.next()).message_type, "error");
    p.ws.send(JSON.stringify({ nodata: true }));
    assert.equal((await p.next()).message_type, "error");
    p.send({ entity_type: "rulesengine.Nonsense" });
    const unknown = await p.next();
    assert.equal(unknown.message_type, "error");
    assert.equal(unknown.entity_type, "rulesengine.Nonsense");
    p.send({ entity_type: "rulesengine.Company" });
    assert.equal((await p.next()).message_type, "error");
    p.send({ action: "jump", entity_type: "rulesengine.Flags" });
    assert.equal((await p.next()).message_type, "error");
    p.send({ entity_type: "rulesengine.Flags" });
    assert.equal((await p.next()).entity_type, "rulesengine.Flags");
  });

  test("changes are pushed with entity_id and increasing stream ids; partials carry only the patched fields; deletes the whole entity", async () => {
    const p = await open();
    await subscribe(p, "rulesengine.Companies");
    await subscribe(p, "rulesengine.Users");
    p.send({ entity_type: "rulesengine.Flags" });
    assert.equal((await p.next()).entity_type, "rulesengine.Flags");

    const c3 = company("comp_3", { domain: "three.example" });
    const id1 = await change(emu, "PUT", "/companies/comp_3", c3);
    const full = await p.next();
    assert.deepEqual(full, {
      entity_type: "rulesengine.Company",
      message_type: "full",
      entity_id: "comp_3",
      stream_id: id1,
      data: c3,
    });

    const id2 = await change(emu, "PATCH", "/companies/comp_3", { plan_ids: ["plan_pro"], keys: { slug: "three" } });
    const partial = await p.next();
    assert.deepEqual(partial, {
      entity_type: "rulesengine.Company",
      message_type: "partial",
      entity_id: "comp_3",
      stream_id: id2,
      data: { keys: { slug: "three" }, plan_ids: ["plan_pro"] },
    });

    const id3 = await change(emu, "DELETE", "/companies/comp_3");
    const del = await p.next();
    assert.equal(del.message_type, "delete");
    assert.equal(del.stream_id, id3);
    assert.deepEqual(del.data, { ...c3, keys: { domain: "three.example", slug: "three" }, plan_ids: ["plan_pro"] });

    const u2 = user("user_2", { email: "bo@two.example" });
    const id4 = await change(emu, "PUT", "/users/user_2", u2);
    assert.deepEqual(await p.next(), {
      entity_type: "rulesengine.User",
      message_type: "full",
      entity_id: "user_2",
      stream_id: id4,
      data: u2,
    });

    const f = { ...flag("delta"), rules: [] };
    const id5 = await change(emu, "PUT", "/flags/delta", f);
    assert.deepEqual(await p.next(), {
      entity_type: "rulesengine.Flag",
      message_type: "full",
      entity_id: null,
      stream_id: id5,
      data: f,
    });
    const id6 = await change(emu, "DELETE", "/flags/delta");
    assert.deepEqual(await p.next(), {
      entity_type: "rulesengine.Flag",
      message_type: "delete",
      entity_id: null,
      stream_id: id6,
      data: f,
    });

    const ids = [id1, id2, id3, id4, id5, id6];
    for (let i = 1; i < ids.length; i++) assert.ok(cmpIds(ids[i - 1]!, ids[i]!) < 0, `${ids[i - 1]} < ${ids[i]}`);
  });

  test("a burst of changes gets strictly increasing <ms>-<seq> ids, pushed in order to every subscriber", async () => {
    const a = await open();
    const b = await open();
    await subscribe(a, "rulesengine.Companies");
    await subscribe(b, "rulesengine.Companies");
    const changes = Array.from({ length: 60 }, (_, i) => ({
      method: "PUT",
      path: `/companies/burst_${i}`,
      body: company(`burst_${i}`, { burst: String(i) }),
    }));
    const r = await admin(emu, "POST", "/bulk", { changes });
    assert.equal(r.status, 200);
    assert.equal(r.body.count, 60);
    for (const p of [a, b]) {
      let prev: string | undefined;
      for (let i = 0; i < 60; i++) {
        const m = await p.next();
        assert.equal(m.entity_id, `burst_${i}`);
        if (prev) assert.ok(cmpIds(prev, m.stream_id!) < 0);
        prev = m.stream_id!;
      }
      assert.equal(prev, r.body.stream_id);
    }
    const cleanup = changes.map((c) => ({ method: "DELETE", path: c.path }));
    assert.equal((await admin(emu, "POST", "/bulk", { changes: cleanup })).status, 200);
    for (const p of [a, b]) for (let i = 0; i < 60; i++) assert.equal((await p.next()).message_type, "delete");
  });

  test("no company/user push reaches a connection before it subscribes or looks up; a stop ends them", async () => {
    const p = await open();
    await change(emu, "PATCH", "/companies/comp_2", { plan_ids: ["plan_a"] });
    await change(emu, "PATCH", "/users/user_1", { traits: [] });
    // The next frame is the answer to this request, so no push was queued before it.
    p.send({ entity_type: "rulesengine.Flags" });
    assert.equal((await p.next()).entity_type, "rulesengine.Flags");

    // A direct-mode lookup switches company pushes on (and only company pushes).
    p.send({ entity_type: "rulesengine.Company", keys: { slug: "two" } });
    assert.deepEqual((await p.next()).data, { ...fixture().companies[1], plan_ids: ["plan_a"] });
    await change(emu, "PATCH", "/users/user_1", { traits: [] });
    const sid = await change(emu, "PATCH", "/companies/comp_2", { plan_ids: ["plan_b"] });
    const pushed = await p.next();
    assert.equal(pushed.stream_id, sid);
    assert.equal(pushed.entity_type, "rulesengine.Company");

    p.send({ action: "stop", entity_type: "rulesengine.Companies" });
    await change(emu, "PATCH", "/companies/comp_2", { plan_ids: ["plan_c"] });
    p.send({ entity_type: "rulesengine.Flags" });
    assert.equal((await p.next()).entity_type, "rulesengine.Flags");
  });

  test("a flag change is pushed only to connections that asked for flags, after their snapshot", async () => {
    const subscribed = await open();
    const other = await open();
    await subscribe(other, "rulesengine.Companies");
    subscribed.send({ entity_type: "rulesengine.Flags" });
    assert.equal((await subscribed.next()).entity_type, "rulesengine.Flags");
    const sid = await change(emu, "PUT", "/flags/epsilon", flag("epsilon"));
    assert.equal((await subscribed.next()).stream_id, sid);
    other.send({ entity_type: "rulesengine.Flags" });
    const snap = await other.next();
    assert.equal(snap.entity_type, "rulesengine.Flags");
    assert.ok(
      (snap.data as Flag[]).some((f) => f.key === "epsilon"),
      "the snapshot includes the new flag",
    );
    await change(emu, "DELETE", "/flags/epsilon");
  });

  test("replay: a reconnect with replay_from gets exactly the later changes of its type, in order, then live ones", async () => {
    const ids: string[] = [];
    ids.push(await change(emu, "PUT", "/companies/r1", company("r1", { r: "1" })));
    ids.push(await change(emu, "PUT", "/users/ru1", user("ru1", { r: "u1" })));
    ids.push(await change(emu, "PATCH", "/companies/r1", { plan_ids: ["p1"] }));
    ids.push(await change(emu, "PUT", "/flags/replayed", flag("replayed")));
    ids.push(await change(emu, "PUT", "/companies/r2", company("r2", { r: "2" })));
    ids.push(await change(emu, "DELETE", "/users/ru1"));

    const p = await open();
    await subscribe(p, "rulesengine.Companies", ids[0]);
    const c1 = await p.next();
    const c2 = await p.next();
    assert.deepEqual(
      [c1, c2].map((m) => [m.stream_id, m.message_type, m.entity_id]),
      [
        [ids[2], "partial", "r1"],
        [ids[4], "full", "r2"],
      ],
    );
    await subscribe(p, "rulesengine.Users", ids[0]);
    const u = await p.next();
    assert.deepEqual([u.stream_id, u.message_type, u.entity_id], [ids[1], "full", "ru1"]);
    const u2 = await p.next();
    assert.deepEqual([u2.stream_id, u2.message_type, u2.entity_id], [ids[5], "delete", "ru1"]);
    p.send({ action: "start", entity_type: "rulesengine.Flags", replay_from: ids[0] });
    const snap = await p.next();
    assert.equal(snap.entity_type, "rulesengine.Flags", "flags are never replayed: the snapshot comes instead");

    // A cursor at the head replays nothing; live changes follow.
    const q = await open();
    await subscribe(q, "rulesengine.Companies", ids[5]);
    const live = await change(emu, "DELETE", "/companies/r2");
    const m = await q.next();
    assert.equal(m.stream_id, live);
    assert.equal(m.message_type, "delete");
    assert.equal((await p.next()).stream_id, live);
    await change(emu, "DELETE", "/companies/r1");
    await change(emu, "DELETE", "/flags/replayed");
  });

  test("replay: malformed or unknown cursors get reload (no stream_id) and the subscription stays live", async () => {
    for (const cursor of ["not-a-cursor", "1-0", "99999999999999-0"]) {
      const p = await open();
      await subscribe(p, "rulesengine.Companies", cursor);
      const reload = await p.next();
      assert.deepEqual(reload, {
        entity_type: "rulesengine.Companies",
        message_type: "reload",
        entity_id: null,
        data: null,
      });
      const sid = await change(emu, "PATCH", "/companies/comp_1", { plan_ids: [cursor] });
      assert.equal((await p.next()).stream_id, sid);
    }
  });

  test("POST /reload sends reload to every connection; /raw sends a frame as given", async () => {
    const a = await open();
    const b = await open();
    assert.equal((await admin(emu, "POST", "/reload")).status, 200);
    for (const p of [a, b]) {
      const m = await p.next();
      assert.equal(m.message_type, "reload");
      assert.equal("stream_id" in m, false);
    }
    const r = await admin(emu, "POST", "/raw", {
      frame: '{"entity_type":"rulesengine.Company","message_type":"full","data":',
    });
    assert.deepEqual(r, { status: 200, body: {} });
    for (const p of [a, b]) {
      await new Promise<void>((resolve) => {
        const poll = () => (p.frames.length >= 2 ? resolve() : setTimeout(poll, 10));
        poll();
      });
      assert.equal(p.frames[1], '{"entity_type":"rulesengine.Company","message_type":"full","data":');
    }
    assert.equal((await admin(emu, "POST", "/raw", { frame: 42 })).status, 400);
    assert.equal((await admin(emu, "POST", "/raw", {})).status, 400);
  });

  test("pings are answered", async () => {
    const p = await open();
    const pong = new Promise<Buffer>((resolve) => p.ws.once("pong", resolve));
    p.ws.ping(Buffer.from("hello"));
    assert.equal((await pong).toString(), "hello");
  });
});

describe("datastream disconnects", () => {
  let emu: RunningEmulator;
  before(async () => {
    emu = await startEmulator({ fixture: fixture() });
  });
  after(() => emu.close());

  test("default close code is 1012; a code can be given; drop cuts TCP (1006); bad codes are refused", async () => {
    const a = await Probe.open(emu.wsUrl);
    const b = await Probe.open(emu.wsUrl);
    assert.deepEqual(await admin(emu, "POST", "/disconnect"), { status: 200, body: {} });
    assert.equal((await a.closed()).code, 1012);
    assert.equal((await b.closed()).code, 1012);

    const c = await Probe.open(emu.wsUrl);
    assert.equal((await admin(emu, "POST", "/disconnect", { code: 1011 })).status, 200);
    assert.equal((await c.closed()).code, 1011);

    const d = await Probe.open(emu.wsUrl);
    assert.equal((await admin(emu, "POST", "/disconnect", { drop: true })).status, 200);
    assert.equal((await d.closed()).code, 1006);

    for (const body of [{ code: 1005 }, { code: 999 }, { code: "1012" }, { drop: "yes" }, { other: 1 }]) {
      assert.equal((await admin(emu, "POST", "/disconnect", body)).status, 400, JSON.stringify(body));
    }
    const state = await admin(emu, "GET", "/state");
    assert.equal(state.body.connections, 0);
  });
});

describe("datastream API keys and refusals", () => {
  test("with --api-key: another key is refused with HTTP 401; the right key connects", async () => {
    const emu = await startEmulator({ fixture: fixture(), apiKey: "secret" });
    try {
      assert.equal(await Probe.refusedStatus(emu.wsUrl, "wrong"), 401);
      assert.equal(await Probe.refusedStatus(emu.wsUrl, undefined), 401);
      const ok = await Probe.open(emu.wsUrl, "secret");
      ok.send({ entity_type: "rulesengine.Flags" });
      assert.equal((await ok.next()).entity_type, "rulesengine.Flags");
      ok.close();
    } finally {
      await emu.close();
    }
  });

  test("auth_failure close4001 accepts the upgrade and closes with 4001; http401 switches back", async () => {
    const emu = await startEmulator({ fixture: fixture(), apiKey: "secret" });
    try {
      assert.equal((await admin(emu, "POST", "/faults", { auth_failure: "close4001" })).status, 200);
      const p = await Probe.open(emu.wsUrl, "wrong");
      assert.equal((await p.closed()).code, 4001);
      const good = await Probe.open(emu.wsUrl, "secret");
      good.send({ entity_type: "rulesengine.Flags" });
      assert.equal((await good.next()).entity_type, "rulesengine.Flags");
      good.close();
      assert.equal((await admin(emu, "POST", "/faults", { auth_failure: "http401" })).status, 200);
      assert.equal(await Probe.refusedStatus(emu.wsUrl, "wrong"), 401);
    } finally {
      await emu.close();
    }
  });

  test("without --api-key any non-empty key is taken, an empty or missing one is refused", async () => {
    const emu = await startEmulator({ fixture: fixture() });
    try {
      const p = await Probe.open(emu.wsUrl, "anything");
      p.close();
      assert.equal(await Probe.refusedStatus(emu.wsUrl, ""), 401);
      assert.equal(await Probe.refusedStatus(emu.wsUrl, undefined), 401);
    } finally {
      await emu.close();
    }
  });

  test("datastream_refuse_status refuses every upgrade with that status until cleared", async () => {
    const emu = await startEmulator({ fixture: fixture() });
    try {
      assert.equal((await admin(emu, "POST", "/faults", { datastream_refuse_status: 503 })).status, 200);
      assert.equal(await Probe.refusedStatus(emu.wsUrl, "k"), 503);
      assert.equal((await admin(emu, "POST", "/faults", {})).status, 200);
      const p = await Probe.open(emu.wsUrl, "k");
      p.close();
    } finally {
      await emu.close();
    }
  });

  test("connections are counted per X-Schematic-Datastream-Mode", async () => {
    const emu = await startEmulator({ fixture: fixture() });
    try {
      const a = await Probe.open(emu.wsUrl, "k", { "X-Schematic-Datastream-Mode": "replicator" });
      const b = await Probe.open(emu.wsUrl, "k", { "X-Schematic-Datastream-Mode": "datastream" });
      const state = await admin(emu, "GET", "/state");
      assert.equal(state.body.connections, 2);
      assert.deepEqual(state.body.connections_by_mode, { replicator: 1, datastream: 1 });
      a.close();
      b.close();
    } finally {
      await emu.close();
    }
  });
});

describe("replay log retention", () => {
  test("a cursor older than the log gets reload; one still in it gets the rest", async () => {
    const emu = await startEmulator({ fixture: fixture(), replayLog: 3 });
    try {
      const ids: string[] = [];
      for (let i = 0; i < 6; i++) ids.push(await change(emu, "PATCH", "/companies/comp_1", { plan_ids: [`p${i}`] }));
      const state = await admin(emu, "GET", "/state");
      assert.deepEqual(state.body.replay_log, { size: 3, oldest: ids[3], capacity: 3 });
      assert.equal(state.body.stream_id, ids[5]);

      const old = await Probe.open(emu.wsUrl);
      await subscribe(old, "rulesengine.Companies", ids[1]);
      assert.equal((await old.next()).message_type, "reload");

      // ids[2] fell out last, but every change after it is still in the log.
      const edge = await Probe.open(emu.wsUrl);
      await subscribe(edge, "rulesengine.Companies", ids[2]);
      assert.deepEqual(
        [await edge.next(), await edge.next(), await edge.next()].map((m) => m.stream_id),
        ids.slice(3),
      );
      old.close();
      edge.close();
    } finally {
      await emu.close();
    }
  });
});
