/**
 * The load window of an asynchronous load or anti-entropy pass (issue 13, defect 5), driven directly against a real
 * Redis and the emulator's REST API: it keeps only the partials a REST row still to come may predate (and merges
 * those on top of the row), and the eviction at the end of a pass gets through a transient Redis fault.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Company, Fixture } from "../src/model/wire.js";
import { region, templates } from "./helpers/faults.js";
import { entityFrame, keys, withPipelineRig } from "./helpers/pipeline.js";
import { waitFor } from "./helpers/redis.js";

const TEMPLATE = templates().company;

function company(id: string): Company {
  return { ...structuredClone(TEMPLATE), id, keys: { slug: id }, traits: [region("initial")] };
}

/** A source with companies c00 … c{n-1} (several pages of the rig's 10 rows), and nothing else. */
function companies(n: number): { fixture: Fixture } {
  const list = Array.from({ length: n }, (_, i) => company(`c${String(i).padStart(2, "0")}`));
  return { fixture: { flags: [], companies: list, users: [] } };
}

const CLOSED = { open: false, changed: 0, partials: 0 };

const regionPartial = (id: string, i: number) =>
  entityFrame("company", "partial", id, { traits: [region(`partial-${i}`)] }, `300-${i}`);

describe("the load window", () => {
  test("with no REST row to come, partials are not kept: the window stays small however many arrive", async () => {
    await withPipelineRig(companies(3), async (rig) => {
      const generation = rig.pipeline.beginLoad("stream-wins");
      await rig.load(generation);
      await rig.pipeline.whenLoadApplied();
      // The pass's rows are written but the window is still open (endLoad not called): partials keep arriving.
      for (let i = 0; i < 2000; i++) rig.pipeline.handleFrame(regionPartial("c01", i));
      await rig.pipeline.whenIdle();
      const { loadWindow } = rig.pipeline.bookkeeping;
      assert.equal(loadWindow.open, true);
      assert.equal(loadWindow.changed, 1, "c01 is known as changed by the stream (never evicted meanwhile)");
      assert.ok(loadWindow.partials < 300, `${loadWindow.partials} partials kept of 2000`);
      await rig.endLoad();
      assert.deepEqual(rig.pipeline.bookkeeping.loadWindow, CLOSED);
    });
  });

  test("partials that arrive while a REST row is on its way are kept until it is written, and merged onto it", async () => {
    await withPipelineRig(companies(25), async (rig) => {
      const server = rig.emu!.server;
      server.faults.set({ rest_latency_ms: 1500, rest_fail_paths: ["/companies"] });
      const before = server.counters.rest;
      const generation = rig.pipeline.beginLoad("stream-wins");
      const loading = rig.load(generation);
      // Both counts, the (empty) users page and the first company pages have reached the emulator; company pages
      // wait there. Partials of c05 (on the first page) arrive meanwhile; the REST row will not reflect them.
      await waitFor(() => server.counters.rest >= before + 4, { what: "the first company page requests" });
      for (let i = 0; i < 100; i++) rig.pipeline.handleFrame(regionPartial("c05", i));
      assert.equal(rig.pipeline.bookkeeping.loadWindow.partials, 100, "kept while the page is on its way");
      const result = await loading;
      assert.equal(result.complete, true);
      await rig.pipeline.whenLoadApplied();
      assert.equal(rig.pipeline.bookkeeping.loadWindow.partials, 0, "dropped once every row is written");
      const stored = JSON.parse((await rig.client.get(keys.companyId("c05")))!) as Company;
      assert.deepEqual(stored.traits, [region("partial-99")], "the partials were merged onto the older REST row");
      await rig.endLoad();
      assert.deepEqual(rig.pipeline.bookkeeping.loadWindow, CLOSED);
    });
  });

  test("a pass abandoned midway closes its window at once and skips its rows still queued", async () => {
    await withPipelineRig(companies(3), async (rig) => {
      const generation = rig.pipeline.beginLoad("stream-wins");
      rig.pipeline.handleFrame(regionPartial("c01", 1));
      rig.pipeline.handleFrame(entityFrame("company", "full", "c02", company("c02"), "300-2"));
      assert.equal(rig.pipeline.bookkeeping.loadWindow.changed, 2);
      rig.pipeline.abandonLoad(generation + 1); // another load's: ignored
      assert.equal(rig.pipeline.bookkeeping.loadWindow.open, true);
      rig.pipeline.abandonLoad(generation);
      assert.deepEqual(rig.pipeline.bookkeeping.loadWindow, CLOSED);
      // A row of the abandoned pass queued after all (its loader still finishing a page) is not written.
      await rig.pipeline.enqueueLoad({
        kind: "company",
        id: "c09",
        op: "full",
        data: company("c09"),
        tracked: [],
        source: "load",
        generation,
        order: 0.5,
      });
      await rig.pipeline.whenLoadApplied();
      await rig.pipeline.whenIdle();
      assert.equal(await rig.client.exists(keys.companyId("c09")), 0);
    });
  });
});

describe("eviction at the end of a pass", () => {
  test("a transient Redis fault during the eviction is retried: the pass completes and evicts", async () => {
    await withPipelineRig(companies(3), async (rig) => {
      // Redis holds an entity the source does not have, and a lookup key of an entity that is gone.
      const ghost = { ...company("ghost"), keys: { slug: "ghost" } };
      await rig.client.set(keys.companyId("ghost"), JSON.stringify(ghost));
      await rig.client.set(keys.companyLookups("slug", "ghost")[0]!, JSON.stringify("ghost"));
      await rig.client.set(keys.companyLookups("slug", "gone")[0]!, JSON.stringify("gone"));
      // SCAN refused (the eviction's scan) until the test lets it through again.
      await rig.client.call("ACL", "SETUSER", "default", "-scan");
      const generation = rig.pipeline.beginLoad("stream-wins");
      const loading = rig.load(generation);
      // (A pass that gives up on the refused SCAN fails here with its error.)
      await Promise.race([loading, waitFor(() => rig.pipeline.stats.retried > 0, { what: "the SCAN to be retried" })]);
      await rig.client.call("ACL", "SETUSER", "default", "+scan");
      const result = await loading;
      assert.equal(result.complete, true);
      assert.equal(result.evicted, 3, "the entity, its lookup key and the stray one");
      await rig.endLoad();
      assert.equal(await rig.client.exists(keys.companyId("ghost")), 0);
      assert.equal(await rig.client.exists(keys.companyLookups("slug", "ghost")[0]!), 0);
      assert.equal(await rig.client.exists(keys.companyLookups("slug", "gone")[0]!), 0);
      assert.ok(await rig.client.exists(keys.companyId("c02")));
    });
  });
});

describe("stray lookup keys at the end of a pass", () => {
  for (const reconcile of [false, true]) {
    test(`${reconcile ? "an anti-entropy pass" : "a full load"} removes a lookup key whose entity exists but no longer has it; keys in both spellings of the body's stay`, async () => {
      // c01 has a key whose JavaScript and Go lower cases differ (İ): both lookup keys are its own.
      const source = companies(3);
      const c01 = source.fixture.companies[1]!;
      c01.keys = { slug: "c01", city: "İzmir" };
      await withPipelineRig(source, async (rig) => {
        const own = [...keys.companyLookups("slug", "c01"), ...keys.companyLookups("city", "İzmir")];
        assert.equal(own.length, 3, "İ has two spellings");
        // What a batch cut short on a Cluster leaves: lookup keys of c01 whose deletion never landed (one in each
        // spelling of a key c01 gave up), next to its body, which no longer has them.
        const stray = [
          keys.companyLookups("domain", "ghost.example")[0]!,
          ...keys.companyLookups("city", "İstanbul"),
          keys.companyLookups("slug", "c00-old")[0]!,
        ];
        assert.equal(stray.length, 4);
        for (const key of stray) await rig.client.set(key, JSON.stringify(key.includes("c00") ? "c00" : "c01"));
        // A lookup key pointing at another entity than the one whose body has it is not stray: c02's body has it.
        const claimed = keys.companyLookups("slug", "c02")[0]!;
        const generation = rig.pipeline.beginLoad(reconcile ? "stream-wins" : "hold");
        const result = await rig.load(generation, { reconcile });
        assert.equal(result.complete, true);
        await rig.endLoad();
        for (const key of stray) assert.equal(await rig.client.exists(key), 0, `${key} removed`);
        for (const key of own) assert.equal(await rig.client.get(key), JSON.stringify("c01"), `${key} kept`);
        assert.equal(await rig.client.get(claimed), JSON.stringify("c02"));
        assert.equal(result.evicted, stray.length);
      });
    });
  }

  test("a stray lookup key of an entity the stream changes during the pass is left alone", async () => {
    await withPipelineRig(companies(3), async (rig) => {
      const stray = keys.companyLookups("domain", "ghost.example")[0]!;
      await rig.client.set(stray, JSON.stringify("c01"));
      const generation = rig.pipeline.beginLoad("stream-wins");
      // c01 gains that key upstream while the pass runs: the stream's write must not be undone.
      const gained = { ...company("c01"), keys: { slug: "c01", domain: "ghost.example" } };
      rig.pipeline.handleFrame(entityFrame("company", "full", "c01", gained, "300-1"));
      const result = await rig.load(generation);
      assert.equal(result.complete, true);
      await rig.endLoad();
      assert.equal(await rig.client.get(stray), JSON.stringify("c01"));
    });
  });
});

describe("a load whose passes do not converge", () => {
  test("still evicts what the API confirms is gone when its walks read every page, and says it is incomplete", async () => {
    await withPipelineRig(companies(25), async (rig) => {
      const ghost = { ...company("ghost"), keys: { slug: "ghost" } };
      await rig.client.set(keys.companyId("ghost"), JSON.stringify(ghost));
      await rig.client.set(keys.companyLookups("slug", "ghost")[0]!, JSON.stringify("ghost"));
      // Just before every count is read, a company is created upstream on a page already read, and no stream
      // announces it (as while the datastream is down): the rows seen never reach the count.
      const rest = rig.rest!;
      const count = rest.count.bind(rest);
      let created = 0;
      rest.count = async (kind, signal) => {
        if (kind === "companies") {
          const id = `a${String(created++).padStart(3, "0")}`;
          const res = await fetch(`${rig.emu!.url}/_emulator/companies/${id}`, {
            method: "PUT",
            headers: { "content-type": "application/json" },
            body: JSON.stringify(company(id)),
          });
          assert.equal(res.status, 200);
        }
        return await count(kind, signal);
      };
      const generation = rig.pipeline.beginLoad("hold");
      const result = await rig.load(generation, { maxPasses: 2 });
      await rig.endLoad();
      assert.equal(result.complete, false, "not a complete data set");
      assert.equal(created, 4, "two passes, two counts each");
      assert.equal(result.evicted, 2, "the ghost and its lookup key, confirmed gone by id");
      assert.equal(await rig.client.exists(keys.companyId("ghost")), 0);
      assert.equal(await rig.client.exists(keys.companyLookups("slug", "ghost")[0]!), 0);
      assert.ok(await rig.client.exists(keys.companyId("c24")), "what the passes saw is loaded");
    });
  });
});
