import assert from "node:assert/strict";
import { test } from "node:test";
import { assumedKeys, entityOps, foldEntity, keysTexts, storedKeys } from "../src/replication/fold.js";
import type { EntityJob } from "../src/replication/jobs.js";
import { KeyScheme } from "../src/store/keys.js";
import { phases } from "../src/store/writer.js";
import { company } from "./helpers/emulator.js";

const keys = new KeyScheme("schematic:", "v1");

const job = (op: EntityJob["op"], data: unknown): EntityJob => ({
  kind: "company",
  id: "c1",
  op,
  data,
  tracked: [],
  source: "stream",
  order: 1,
});

test("changes fold in arrival order: the last full wins, a delete removes, a partial merges", () => {
  const a = foldEntity("company", null, [
    job("full", company("c1", { id: "a" })),
    job("full", company("c1", { id: "b" })),
  ]);
  assert.deepEqual(a.next?.keys, { id: "b" });
  const b = foldEntity("company", null, [
    job("full", company("c1", { id: "a" })),
    job("delete", company("c1", { id: "a" })),
  ]);
  assert.equal(b.next, null);
  assert.deepEqual(b.deletedKeys, [{ id: "a" }]);
  const c = foldEntity("company", null, [
    job("full", company("c1", { id: "a" })),
    job("partial", { base_plan_id: "plan_x" }),
  ]);
  assert.equal((c.next as { base_plan_id: string }).base_plan_id, "plan_x");
});

test("a partial without a stored base is a no-op, and an invalid change is reported, not applied", () => {
  const orphan = foldEntity("company", null, [job("partial", { base_plan_id: "p" })]);
  assert.equal(orphan.next, null);
  assert.equal(orphan.orphanPartials, 1);
  assert.equal(orphan.touched, false);
  const bad = foldEntity("company", null, [job("full", { id: "c1" })]);
  assert.equal(bad.invalid.length, 1);
  assert.equal(bad.touched, false);
});

test("ops write the body and lookups, and remove only lookups that still point at this entity", () => {
  const previous = foldEntity("company", null, [job("full", company("c1", { id: "old", domain: "x.io" }))]).next;
  const fold = foldEntity("company", previous, [job("full", company("c1", { id: "New", domain: "x.io" }))]);
  const ops = entityOps(keys, "company", "c1", previous, fold);
  assert.deepEqual(
    ops.map((o) => [o.op, o.key]),
    [
      ["set", "schematic:company:v1:c1"],
      ["set", "schematic:company:v1:id:new"],
      ["set", "schematic:company:v1:domain:x.io"],
      ["delIfEquals", "schematic:company:v1:id:old"],
    ],
  );
  const removal = ops.at(-1) as { value: string };
  assert.equal(removal.value, '"c1"', "lookup values are JSON strings");
});

test("a delete removes the body and every lookup the stored body or the payload names", () => {
  const previous = foldEntity("company", null, [job("full", company("c1", { id: "a" }))]).next;
  const fold = foldEntity("company", previous, [job("delete", company("c1", { slug: "s" }))]);
  const ops = entityOps(keys, "company", "c1", previous, fold);
  assert.deepEqual(ops.map((o) => [o.op, o.key]).sort(), [
    ["del", "schematic:company:v1:c1"],
    ["delIfEquals", "schematic:company:v1:id:a"],
    ["delIfEquals", "schematic:company:v1:slug:s"],
  ]);
});

test("a body that drops lookup keys is written after their deletes; one that drops none is not held back", () => {
  const previous = foldEntity("company", null, [job("full", company("c1", { id: "a", domain: "x.io" }))]).next;
  const renamed = entityOps(
    keys,
    "company",
    "c1",
    previous,
    foldEntity("company", previous, [job("full", company("c1", { id: "b", domain: "x.io" }))]),
  );
  const deleted = entityOps(
    keys,
    "company",
    "c1",
    previous,
    foldEntity("company", previous, [job("delete", { id: "c1" })]),
  );
  const same = entityOps(
    keys,
    "company",
    "c1",
    previous,
    foldEntity("company", previous, [job("partial", { base_plan_id: "p" })]),
  );
  const other = { op: "set", key: "schematic:company:v1:c2", value: "{}" } as const;
  const after = { op: "set", key: "schematic:company:v1:c1", value: "{}" } as const;
  for (const ops of [renamed, deleted]) {
    const [first, last] = phases([...ops, other, after]);
    assert.deepEqual(last, [ops[0], after], "the body, and a later op on its key, come last");
    assert.deepEqual(first, [...ops.slice(1), other]);
  }
  assert.deepEqual(phases([...same, other]), [[...same, other], []]);
});

test("an entity without keys is not stored", () => {
  const previous = foldEntity("company", null, [job("full", company("c1", { id: "a" }))]).next;
  const fold = foldEntity("company", previous, [job("partial", { keys: {} })]);
  // keys merge shallowly (never remove), so it still has its key: stored
  assert.ok(entityOps(keys, "company", "c1", previous, fold).some((o) => o.op === "set"));
  const none = foldEntity("company", null, [job("full", company("c1", {}))]);
  assert.deepEqual(entityOps(keys, "company", "c1", null, none), []);
});

test("a full's received text is stored unchanged only when validation changes nothing", () => {
  const exact = company("c1", { id: "a" });
  const text = ` ${JSON.stringify(exact, null, 1)}`;
  const stored = foldEntity("company", null, [{ ...job("full", exact), text }]);
  assert.equal(stored.body, text);
  const set = entityOps(keys, "company", "c1", null, stored).find((o) => o.key === keys.companyId("c1"));
  assert.deepEqual(set, { op: "set", key: keys.companyId("c1"), value: text });

  // An unknown field (at any depth), an absent list, or a null the engine needs as [] forces re-serialising.
  const variants: Record<string, unknown>[] = [
    { ...exact, surprise: 1 },
    { ...exact, traits: [{ value: "v", trait_definition: null, extra: true }] },
    (({ metrics: _, ...rest }) => rest)(exact),
    { ...exact, plan_ids: null },
  ];
  for (const data of variants) {
    const fold = foldEntity("company", null, [{ ...job("full", data), text: JSON.stringify(data) }]);
    assert.equal(fold.body, undefined, JSON.stringify(data));
    const body = entityOps(keys, "company", "c1", null, fold).find((o) => o.key === keys.companyId("c1"));
    assert.ok(body?.op === "set");
    const text = String(body.value);
    assert.ok(!text.includes("surprise") && !text.includes("extra"));
    assert.deepEqual(JSON.parse(text), fold.next);
  }

  // A later partial or delete in the same fold drops the received text.
  const merged = foldEntity("company", null, [{ ...job("full", exact), text }, job("partial", { base_plan_id: "p" })]);
  assert.equal(merged.body, undefined);
  assert.equal((merged.next as { base_plan_id: string }).base_plan_id, "p");
});

test("storedKeys reads only the keys of a stored body, and falls back to a full parse when it must", () => {
  const body = JSON.stringify(company("c1", { id: "a", 'x"}': "b" }));
  assert.deepEqual(storedKeys("company", body), { keys: { id: "a", 'x"}': "b" } });
  assert.equal(storedKeys("company", null), null);
  assert.equal(storedKeys("company", "not json"), null);
  // keys that are not a map of strings: the whole body is judged (invalid → absent)
  assert.equal(storedKeys("company", JSON.stringify(company("c1", { id: 1 as unknown as string }))), null);
});

test("keysTexts spells keys as received and, when they are not sorted, in byte order too", () => {
  assert.deepEqual(keysTexts({ a: "1", b: "2" }), ['{"a":"1","b":"2"}']);
  assert.deepEqual(keysTexts({}), ["{}"]);
  const keys = { id: "c1", domain: 'x"y', b: "\u00e9" };
  const [received, sorted] = keysTexts(keys);
  assert.equal(received, JSON.stringify(keys));
  assert.equal(sorted, JSON.stringify({ b: keys.b, domain: keys.domain, id: keys.id }));
});

test("assumedKeys: the first change's keys, only for fulls and deletes whose keys are strings", () => {
  const full = job("full", company("c1", { id: "a" }));
  assert.deepEqual(assumedKeys([full, job("delete", company("c1", { id: "b" }))]), { id: "a" });
  assert.deepEqual(assumedKeys([job("delete", company("c1", { id: "b" }))]), { id: "b" });
  assert.equal(assumedKeys([full, job("partial", { traits: [] })]), undefined);
  assert.equal(assumedKeys([{ ...full, reconcile: true }]), undefined);
  assert.equal(assumedKeys([job("delete", null)]), undefined);
  assert.equal(assumedKeys([job("full", company("c1", { id: 1 as unknown as string }))]), undefined);
});
