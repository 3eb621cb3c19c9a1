/**
 * The benchmark feed `POST /_emulator/bulk {"generate": {...}}` (src/emulator/feed.ts): re-tagged updates of
 * existing entities, pushed to subscribers, applied to the state and logged for replay; paced by `rate`; stamped.
 * Nothing here depends on the machine's speed (the paced test only checks a lower bound the pacing guarantees).
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { WebSocket } from "ws";
import { parseStreamId, type RunningEmulator, startEmulator } from "../src/emulator/index.js";
import type { Company, User } from "../src/model/wire.js";
import { company as companyOf, user as userOf } from "./helpers/emulator.js";

const company = (id: string): Company => companyOf(id, { domain: `${id}.example` });
const user = (id: string): User => userOf(id, { email: `${id}@example.com` });

type Frame = { entity_type: string; message_type: string; entity_id: string; stream_id: string; data: Company & User };

/** A subscriber that keeps every change frame. */
async function subscribe(emu: RunningEmulator, entityType: string, replayFrom?: string) {
  const ws = new WebSocket(emu.wsUrl, { headers: { "X-Schematic-Api-Key": "k" }, perMessageDeflate: false });
  const frames: Frame[] = [];
  let wake: (() => void) | undefined;
  ws.on("message", (d) => {
    const m = JSON.parse(d.toString()) as Frame;
    if (m.stream_id) frames.push(m);
    wake?.();
  });
  await new Promise((r) => ws.once("open", r));
  let answered = false;
  ws.on("message", (d) => {
    if (/"subscribed":true/.test(d.toString())) answered = true;
  });
  ws.send(JSON.stringify({ data: { action: "start", entity_type: entityType, replay_from: replayFrom } }));
  const until = async (done: () => boolean) => {
    while (!done()) await new Promise<void>((r) => (wake = r));
  };
  await until(() => answered);
  return { frames, until, close: () => ws.terminate() };
}

async function feed(emu: RunningEmulator, generate: unknown, extra: Record<string, unknown> = {}) {
  const res = await fetch(`${emu.url}/_emulator/bulk`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ generate, ...extra }),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe("emulator benchmark feed (bulk generate)", () => {
  let emu: RunningEmulator;
  before(async () => {
    emu = await startEmulator({
      fixture: {
        flags: [],
        companies: ["comp_3", "comp_1", "comp_2"].map(company),
        users: [user("user_1")],
      },
    });
  });
  after(async () => {
    await emu.close();
  });

  test("pushes re-tagged full companies in id order from the offset, wrapping, and applies them", async () => {
    const sub = await subscribe(emu, "rulesengine.Companies");
    const r = await feed(emu, { count: 4, offset: 1, tag: "run-a" });
    assert.equal(r.status, 200);
    assert.equal(r.body.count, 4);
    await sub.until(() => sub.frames.length >= 4);
    assert.deepEqual(
      sub.frames.map((f) => f.entity_id),
      ["comp_2", "comp_3", "comp_1", "comp_2"],
    );
    for (const f of sub.frames) {
      assert.equal(f.entity_type, "rulesengine.Company");
      assert.equal(f.message_type, "full");
      assert.equal(f.data.environment_id, "run-a");
      assert.equal(f.data.id, f.entity_id);
      assert.deepEqual(f.data.keys, { domain: `${f.entity_id}.example` }, "everything but environment_id is kept");
    }
    const ids = sub.frames.map((f) => parseStreamId(f.stream_id)!);
    for (let i = 1; i < ids.length; i++) {
      assert.ok(ids[i]!.ms > ids[i - 1]!.ms || (ids[i]!.ms === ids[i - 1]!.ms && ids[i]!.seq > ids[i - 1]!.seq));
    }
    assert.equal(r.body.stream_id, sub.frames.at(-1)!.stream_id);
    assert.ok(BigInt(r.body.push_ended_ns as string) >= BigInt(r.body.push_started_ns as string));
    sub.close();

    // The state holds what was pushed: REST and the dump see the tag.
    const rest = (await (
      await fetch(`${emu.url}/companies?limit=10`, { headers: { "X-Schematic-Api-Key": "k" } })
    ).json()) as {
      data: { id: string; environment_id: string }[];
    };
    assert.deepEqual(
      rest.data.map((c) => c.environment_id),
      ["run-a", "run-a", "run-a"],
    );
  });

  test("the pushed changes are logged: a subscriber resuming from before the feed gets them again", async () => {
    const first = await feed(emu, { count: 1, tag: "mark" });
    const r = await feed(emu, { count: 3, tag: "run-b" });
    const sub = await subscribe(emu, "rulesengine.Companies", first.body.stream_id as string);
    await sub.until(() => sub.frames.length >= 3);
    assert.deepEqual(
      sub.frames.map((f) => f.data.environment_id),
      ["run-b", "run-b", "run-b"],
    );
    assert.equal(sub.frames.at(-1)!.stream_id, r.body.stream_id);
    sub.close();
  });

  test("users too; a subscription to companies does not see them", async () => {
    const companies = await subscribe(emu, "rulesengine.Companies");
    const users = await subscribe(emu, "rulesengine.Users");
    const r = await feed(emu, { kind: "user", count: 2, tag: "u" });
    assert.equal(r.status, 200);
    await users.until(() => users.frames.length >= 2);
    assert.deepEqual(
      users.frames.map((f) => [f.entity_type, f.entity_id, f.data.environment_id]),
      [
        ["rulesengine.User", "user_1", "u"],
        ["rulesengine.User", "user_1", "u"],
      ],
    );
    await feed(emu, { count: 1, tag: "c" });
    await companies.until(() => companies.frames.length >= 1);
    assert.deepEqual(
      companies.frames.map((f) => f.entity_type),
      ["rulesengine.Company"],
    );
    companies.close();
    users.close();
  });

  test("rate paces the pushes and stamp carries the push time", async () => {
    const sub = await subscribe(emu, "rulesengine.Companies");
    const before = process.hrtime.bigint();
    const r = await feed(emu, { count: 20, tag: "lat", rate: 400, stamp: true });
    const afterAnswer = process.hrtime.bigint();
    assert.equal(r.status, 200);
    await sub.until(() => sub.frames.length >= 20);
    // The 20th change is due 19/400 s after the first: the feed cannot finish sooner, however fast the machine.
    const started = BigInt(r.body.push_started_ns as string);
    const ended = BigInt(r.body.push_ended_ns as string);
    assert.ok(ended - started >= 47_500_000n, `pushed 20 changes at 400/s in ${ended - started} ns`);
    let previous = 0n;
    for (const f of sub.frames) {
      const m = /^lat@(\d+)$/.exec(f.data.environment_id);
      assert.ok(m, f.data.environment_id);
      const stamp = BigInt(m[1]!);
      assert.ok(stamp >= started && stamp <= ended && stamp >= previous, "stamps are push times, in order");
      assert.ok(stamp >= before && stamp <= afterAnswer, "on the same clock as this process (CLOCK_MONOTONIC)");
      previous = stamp;
    }
    sub.close();
  });

  test("invalid requests answer 400 and push nothing", async () => {
    const sub = await subscribe(emu, "rulesengine.Companies");
    const bad: [unknown, RegExp][] = [
      [{}, /count/],
      [{ count: 0 }, /count/],
      [{ count: 1.5 }, /count/],
      [{ count: 1, kind: "flag" }, /kind/],
      [{ count: 1, offset: -1 }, /offset/],
      [{ count: 1, tag: "" }, /tag/],
      [{ count: 1, rate: 0 }, /rate/],
      [{ count: 1, stamp: "yes" }, /stamp/],
      [{ count: 1, extra: true }, /extra: unknown field/],
      ["nope", /generate/],
    ];
    for (const [generate, message] of bad) {
      const r = await feed(emu, generate);
      assert.equal(r.status, 400, JSON.stringify(generate));
      assert.match(String(r.body.error), message);
    }
    const both = await feed(emu, { count: 1 }, { changes: [] });
    assert.equal(both.status, 400);
    // A marker change after the refused ones: it must be the first frame the subscriber sees.
    await feed(emu, { count: 1, tag: "after-400s" });
    await sub.until(() => sub.frames.length >= 1);
    assert.deepEqual(
      sub.frames.map((f) => f.data.environment_id),
      ["after-400s"],
      "nothing was pushed by the refused requests",
    );
    sub.close();

    const empty = await startEmulator();
    try {
      const r = await feed(empty, { count: 1 });
      assert.equal(r.status, 400);
      assert.match(String(r.body.error), /no company/);
    } finally {
      await empty.close();
    }
  });
});
