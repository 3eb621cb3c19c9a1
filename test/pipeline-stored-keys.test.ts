/**
 * Fulls and deletes without a read (docs/design/lookup-keys.md): with a fenced writer, a batch assumes that an
 * entity's stored keys are those of its first change, and the fence checks it in the write's own round trip. These
 * tests drive a Pipeline against a real Redis with a leased writer: the common case costs one round trip, and every
 * way the stored keys can differ from the assumption (keys changed upstream, written by another writer tenure, an
 * anti-entropy pass or an SDK's stale rewrite, or a body that only looks the same) still removes the lookup keys that
 * must go.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Company } from "../src/model/wire.js";
import { company, templates } from "./helpers/faults.js";
import { entityFrame, keys, type PipelineRig, withPipelineRig } from "./helpers/pipeline.js";

const TEMPLATE = templates().company;
let streamSeq = 0;
const nextId = () => `500-${++streamSeq}`;

/** Redis's count of calls of `command` so far. */
async function calls(rig: PipelineRig, command: string): Promise<number> {
  const info = await rig.client.info("commandstats");
  return Number(new RegExp(`^cmdstat_${command}:calls=(\\d+)`, "m").exec(info)?.[1] ?? 0);
}

/** Sends a full of `c` and waits until it is written. */
async function full(rig: PipelineRig, c: Company): Promise<void> {
  rig.pipeline.handleFrame(entityFrame("company", "full", c.id, c, nextId()));
  await rig.pipeline.whenIdle();
}

/** The lookup keys that point at `id`, and whether its body is stored. */
async function stored(rig: PipelineRig, id: string): Promise<{ lookups: string[]; body: boolean }> {
  const found = await rig.client.keys(`${keys.companyId("")}*:*`);
  const lookups: string[] = [];
  for (const key of found.sort()) if ((await rig.client.get(key)) === JSON.stringify(id)) lookups.push(key);
  return { lookups, body: (await rig.client.exists(keys.companyId(id))) === 1 };
}

const lookupsOf = (c: Company) =>
  Object.entries(c.keys)
    .flatMap(([name, value]) => keys.companyLookups(name, value))
    .sort();

describe("fulls and deletes of entities whose keys did not change: one round trip", () => {
  test("a full (new or known entity) and a delete read nothing; lookups and bodies are right", async () => {
    await withPipelineRig({ lease: true }, async (rig) => {
      const c1 = company(TEMPLATE, "comp_1", "eu");
      const mget = await calls(rig, "mget");
      const exec = await calls(rig, "exec");
      await full(rig, c1); // not stored yet
      await full(rig, { ...c1, traits: [] }); // stored, same keys
      assert.deepEqual(await stored(rig, "comp_1"), { lookups: lookupsOf(c1), body: true });
      assert.deepEqual(JSON.parse((await rig.client.get(keys.companyId("comp_1")))!).traits, []);
      rig.pipeline.handleFrame(entityFrame("company", "delete", "comp_1", c1, nextId()));
      await rig.pipeline.whenIdle();
      assert.deepEqual(await stored(rig, "comp_1"), { lookups: [], body: false });
      assert.equal(await calls(rig, "mget"), mget, "no read");
      assert.equal((await calls(rig, "exec")) - exec, 3, "one transaction per change");
    });
  });
});

describe("stored keys other than assumed are never trusted: the lookups that must go are removed", () => {
  test("keys changed upstream: the old lookup keys go (the write reads the body once)", async () => {
    await withPipelineRig({ lease: true }, async (rig) => {
      const before = company(TEMPLATE, "comp_1", "eu");
      const after = company(TEMPLATE, "comp_1", "eu", "-renamed");
      await full(rig, before);
      const mget = await calls(rig, "mget");
      await full(rig, after);
      assert.deepEqual(await stored(rig, "comp_1"), { lookups: lookupsOf(after), body: true });
      assert.equal((await calls(rig, "mget")) - mget, 1, "the batch fell back to reading the body");
    });
  });

  test("keys written outside the lanes (another writer tenure, anti-entropy, an SDK's stale rewrite)", async () => {
    await withPipelineRig({ lease: true }, async (rig) => {
      const ours = company(TEMPLATE, "comp_1", "eu");
      await full(rig, ours);
      // Someone else writes comp_1 with other keys, lookups included, as a writer of the keyspace does.
      const theirs = company(TEMPLATE, "comp_1", "eu", "-theirs");
      await rig.client.set(keys.companyId("comp_1"), JSON.stringify(theirs));
      for (const key of lookupsOf(theirs)) await rig.client.set(key, JSON.stringify("comp_1"));
      // The next change carries the keys this pipeline wrote last: the stored ones must still be removed.
      await full(rig, { ...ours, traits: [] });
      assert.deepEqual(await stored(rig, "comp_1"), { lookups: lookupsOf(ours), body: true });
      // A delete whose payload names other keys than those stored removes the stored ones too.
      await rig.client.set(keys.companyId("comp_1"), JSON.stringify(theirs));
      for (const key of lookupsOf(theirs)) await rig.client.set(key, JSON.stringify("comp_1"));
      rig.pipeline.handleFrame(entityFrame("company", "delete", "comp_1", ours, nextId()));
      await rig.pipeline.whenIdle();
      assert.deepEqual(await stored(rig, "comp_1"), { lookups: [], body: false });
    });
  });

  test("a stored body that only looks like it has the keys (a duplicate `keys` member) is read", async () => {
    await withPipelineRig({ lease: true }, async (rig) => {
      const ours = company(TEMPLATE, "comp_1", "eu");
      const old = company(TEMPLATE, "comp_1", "eu", "-old");
      // JSON.parse keeps the last `keys`: the old ones, whose lookups point at comp_1.
      const text = JSON.stringify(ours).replace(/\}$/, `,"keys":${JSON.stringify(old.keys)}}`);
      await rig.client.set(keys.companyId("comp_1"), text);
      for (const key of lookupsOf(old)) await rig.client.set(key, JSON.stringify("comp_1"));
      await full(rig, ours);
      assert.deepEqual(await stored(rig, "comp_1"), { lookups: lookupsOf(ours), body: true });
    });
  });

  test("a batch mixing unchanged and changed keys: each entity ends right", async () => {
    await withPipelineRig({ lease: true, pipeline: { batchSize: 50 } }, async (rig) => {
      const first = Array.from({ length: 40 }, (_, i) => company(TEMPLATE, `comp_${i}`, "eu"));
      for (const c of first) rig.pipeline.handleFrame(entityFrame("company", "full", c.id, c, nextId()));
      await rig.pipeline.whenIdle();
      // Every fifth entity gets new keys; all change in one burst (batches of several entities).
      const second = first.map((c, i) => (i % 5 === 0 ? company(TEMPLATE, c.id, "us", "-v2") : { ...c, traits: [] }));
      for (const c of second) rig.pipeline.handleFrame(entityFrame("company", "full", c.id, c, nextId()));
      await rig.pipeline.whenIdle();
      for (const c of second) assert.deepEqual(await stored(rig, c.id), { lookups: lookupsOf(c), body: true }, c.id);
      assert.equal((await rig.client.keys(`${keys.companyId("")}*:*`)).length, 80, "no lookup key left over");
    });
  });
});
