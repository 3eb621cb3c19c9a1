/**
 * Lookup keys that move between entities on different lanes (issue 13, defect 7). Lanes are sharded by entity id,
 * so B's changes and A's run in parallel; a lookup key k can still move from B to A: B gains k, B is deleted, A gains
 * k. With B's lane behind, "k → B" must not land after "k → A" (B's compare-and-delete would then remove k while A's
 * body has it). Each race is set up exactly, by holding B's lane back at the right moment, against a real Redis.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Company } from "../src/model/wire.js";
import { laneOf } from "../src/replication/pipeline.js";
import { bulk, endsConsistent, fixture, KEYS, region, startStack, templates } from "./helpers/faults.js";
import { entityFrame, keys, type PipelineRig, withPipelineRig } from "./helpers/pipeline.js";
import { waitFor } from "./helpers/redis.js";

/** Two company ids on different lanes (of 2). */
function onDifferentLanes(): [string, string] {
  const a = "comp_a";
  for (let i = 0; ; i++) {
    const b = `comp_b${i}`;
    if (laneOf(b, 2) !== laneOf(a, 2)) return [a, b];
  }
}

const [A, B] = onDifferentLanes();

/** A company id on `of`'s lane (of 2), other than those given. */
function sameLaneAs(of: string, not: string[]): string {
  for (let i = 0; ; i++) {
    const id = `comp_c${i}`;
    if (laneOf(id, 2) === laneOf(of, 2) && !not.includes(id)) return id;
  }
}
const MOVING = "moving.example";
const K = keys.companyLookups("domain", MOVING)[0]!;

const TEMPLATE = templates().company;

/** Company `id` with its own slug and, if `withK`, the moving domain. */
function company(id: string, withK: boolean): Company {
  return {
    ...structuredClone(TEMPLATE),
    id,
    keys: withK ? { slug: id, domain: MOVING } : { slug: id },
  };
}

async function expectKWithA(rig: PipelineRig): Promise<void> {
  await rig.pipeline.whenIdle();
  assert.equal(await rig.client.get(K), JSON.stringify(A), "k points at A, whose body has it");
  assert.equal(await rig.client.exists(keys.companyId(B)), 0, "B is gone");
  assert.ok(await rig.client.exists(keys.companyId(A)), "A is stored");
}

const kWithA = (rig: PipelineRig) =>
  waitFor(async () => (await rig.client.get(K)) === JSON.stringify(A), { what: "A's lane to write k → A" });

describe("lookup keys moving between entities on different lanes", () => {
  test("stream: B gains k, B is deleted, A gains k while B's lane is behind: k stays with A", async () => {
    await withPipelineRig({}, async (rig) => {
      const behind = rig.holdReads("company", B);
      rig.pipeline.handleFrame(entityFrame("company", "full", B, company(B, true), "100-1"));
      await behind.held; // B's first change is taken alone; its batch waits before deciding what to write
      rig.pipeline.handleFrame(entityFrame("company", "delete", B, company(B, true), "100-2"));
      rig.pipeline.handleFrame(entityFrame("company", "full", A, company(A, true), "100-3"));
      await kWithA(rig);
      behind.release();
      await expectKWithA(rig);
      assert.equal(rig.pipeline.cursor.committed, "100-3");
    });
  });

  test("stream: B's write of k fails and is retried after A gained k: the retry leaves k to A", async () => {
    await withPipelineRig({}, async (rig) => {
      const failing = rig.failWrite("company", B);
      rig.pipeline.handleFrame(entityFrame("company", "full", B, company(B, true), "100-1"));
      await failing.held;
      rig.pipeline.handleFrame(entityFrame("company", "delete", B, company(B, true), "100-2"));
      rig.pipeline.handleFrame(entityFrame("company", "full", A, company(A, true), "100-3"));
      await kWithA(rig);
      failing.release();
      await expectKWithA(rig);
      assert.ok(rig.pipeline.stats.retried > 0, "B's batch was retried");
    });
  });

  test("stream, fenced writer: B's batch sent again after another entity's stored keys failed the check leaves k to A", async () => {
    await withPipelineRig({ lease: true }, async (rig) => {
      // C shares B's lane and its stored keys are not those its change carries: the batch of B and C is refused once.
      const C = sameLaneAs(B, [A, B]);
      const oldLookup = keys.companyLookups("slug", `${C}-old`)[0]!;
      await rig.client.set(keys.companyId(C), JSON.stringify({ ...company(C, false), keys: { slug: `${C}-old` } }));
      await rig.client.set(oldLookup, JSON.stringify(C));
      const held = rig.holdWrite("company", B);
      rig.pipeline.handleFrame(entityFrame("company", "full", B, company(B, true), "100-1"));
      rig.pipeline.handleFrame(entityFrame("company", "full", C, company(C, false), "100-2"));
      await held.held; // B and C's batch is about to be written; meanwhile B loses k and A gains it
      rig.pipeline.handleFrame(entityFrame("company", "delete", B, company(B, true), "100-3"));
      rig.pipeline.handleFrame(entityFrame("company", "full", A, company(A, true), "100-4"));
      await kWithA(rig);
      held.release();
      await expectKWithA(rig);
      assert.equal(await rig.client.exists(oldLookup), 0, "C's old lookup key was removed (its body was read)");
      assert.equal(await rig.client.get(keys.companyLookups("slug", C)[0]!), JSON.stringify(C));
    });
  });

  test("load: a REST row of B read before B lost k does not take k back from A", async () => {
    await withPipelineRig({ fixture: { flags: [], companies: [company(B, true)], users: [] } }, async (rig) => {
      const generation = rig.pipeline.beginLoad("stream-wins");
      const behind = rig.holdReads("company", B);
      const loading = rig.load(generation);
      await behind.held; // B's REST row (with k) is taken; its batch waits
      // Upstream, B is deleted and A gains k; the stream says so while B's lane is still behind.
      const admin = async (method: string, path: string, body?: unknown) => {
        const res = await fetch(`${rig.emu!.url}/_emulator${path}`, { method, body: JSON.stringify(body) });
        assert.equal(res.status, 200, await res.clone().text());
        return ((await res.json()) as { stream_id: string }).stream_id;
      };
      const deleted = await admin("DELETE", `/companies/${B}`);
      rig.pipeline.handleFrame(entityFrame("company", "delete", B, company(B, true), deleted));
      const created = await admin("PUT", `/companies/${A}`, company(A, true));
      rig.pipeline.handleFrame(entityFrame("company", "full", A, company(A, true), created));
      await kWithA(rig);
      behind.release();
      assert.equal((await loading).complete, true);
      await rig.endLoad();
      await expectKWithA(rig);
    });
  });
});

test("sync load: changes it held win lookup keys over its rows, whatever the REST API answered", async () => {
  // The API still lists B with k (it lags the stream), while the held stream changes say B lost k and A gained it.
  await withPipelineRig({ fixture: { flags: [], companies: [company(B, true)], users: [] } }, async (rig) => {
    const generation = rig.pipeline.beginLoad("hold");
    rig.pipeline.handleFrame(entityFrame("company", "delete", B, company(B, true), "400-1"));
    rig.pipeline.handleFrame(entityFrame("company", "full", A, company(A, true), "400-2"));
    assert.equal((await rig.load(generation)).complete, true);
    // The load returns once its rows are queued (into an empty Redis it has nothing to evict, so it does not wait
    // for them to be written); the held changes stay held until endLoad.
    await rig.pipeline.whenLoadApplied();
    assert.equal(await rig.client.get(K), JSON.stringify(B), "the load wrote the API's answer first");
    await rig.endLoad();
    await expectKWithA(rig);
  });
});

test("claims are dropped once no older change is pending: they stay few however many keys were written", async () => {
  await withPipelineRig({}, async (rig) => {
    for (let i = 0; i < 5000; i++) {
      rig.pipeline.handleFrame(entityFrame("company", "full", `c${i}`, company(`c${i}`, false), `200-${i}`));
    }
    await rig.pipeline.whenIdle();
    assert.equal(await rig.client.get(keys.companyLookups("slug", "c4999")[0]!), JSON.stringify("c4999"));
    const { lookupClaims } = rig.pipeline.bookkeeping;
    assert.ok(lookupClaims > 0 && lookupClaims <= 2048, `${lookupClaims} lookup claims kept`);
  });
});

describe("lookup keys moving between entities on different lanes, end to end", () => {
  test("k moves from B to A while B's lane works through a backlog: k stays with A", async () => {
    // One job per batch and room for the whole burst, so B's lane is thousands of jobs behind when A gains k.
    const s = await startStack({ env: { NUM_WORKERS: "2", BATCH_SIZE: "1", COMPANY_CHANNEL_SIZE: "10000" } });
    try {
      await s.rep.waitReady();
      const busy = fixture().companies.find((c) => laneOf(c.id, 2) === laneOf(B, 2))!.id;
      const backlog = (n: number) =>
        Array.from({ length: n }, (_, i) => ({
          method: "PATCH",
          path: `/companies/${busy}`,
          body: { traits: [region(`backlog-${i}`)] },
        }));
      // One request, so the datastream delivers it as one burst: B's changes sit behind the backlog on B's lane (and
      // in different batches), A's change has its lane to itself.
      await bulk(
        s,
        [
          ...backlog(3000),
          { method: "PUT", path: `/companies/${B}`, body: company(B, true) },
          ...backlog(200),
          { method: "DELETE", path: `/companies/${B}` },
          { method: "PUT", path: `/companies/${A}`, body: company(A, true) },
        ],
        10_000,
      );
      await endsConsistent(s);
      assert.equal(await s.client.get(KEYS.companyLookups("domain", MOVING)[0]!), JSON.stringify(A));
    } finally {
      await s.close();
    }
  });
});
