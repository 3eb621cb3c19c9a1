/**
 * REST faults during full loads (issue 4), in both loading modes: 5xx on a share of requests, 429 with Retry-After,
 * and requests slower than API_TIMEOUT. Failed pages are retried with backoff (honouring Retry-After) until the load
 * completes; /ready stays 503 until then; nothing is evicted by a load that has not completed; a change pushed
 * during an asynchronous load is never overwritten by older REST data. Each case ends with zero differences and the
 * official SDK reading the changed values.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  background,
  bigFixture,
  bulk,
  churn,
  company,
  logsMatching,
  markerChange,
  type Stack,
  sdkSeesMarker,
  startStack,
  templates,
  watchReady,
} from "./helpers/faults.js";
import { waitFor } from "./helpers/redis.js";

const SETTINGS = {
  ASYNC_LOADER_PAGE_SIZE: "40",
  API_TIMEOUT: "400ms",
  ASYNC_LOADER_CIRCUIT_BREAKER_THRESHOLD: "4",
  ASYNC_LOADER_CIRCUIT_BREAKER_TIMEOUT: "200ms",
  NUM_WORKERS: "2",
};

for (const mode of ["sync", "async"] as const) {
  describe(`faults: REST during the load (${mode} loading)`, () => {
    let s: Stack;
    before(async () => {
      s = await startStack({
        fixture: bigFixture(400),
        noReplicator: true,
        env: { ...SETTINGS, USE_ASYNC_LOADING: String(mode === "async") },
      });
    });
    after(async () => s?.close());

    /** A fresh replicator on an empty Redis, with `faults` set before it starts. */
    const coldStart = async (faults: Record<string, unknown>) => {
      if (s.rep) await s.rep.stop("SIGTERM");
      await s.client.flushall();
      await s.admin("POST", "/faults", faults);
      const rep = await s.startReplicator();
      return { rep, ready: watchReady(rep, 50) };
    };

    const endsConsistent = async () => {
      await s.admin("POST", "/faults", {});
      await markerChange(s);
      await s.waitConsistent(40_000);
      await sdkSeesMarker(s);
    };

    test("5xx on 30% of REST requests, with changes streaming during the load", async () => {
      const { rep, ready } = await coldStart({ rest_error_rate: 0.3, rest_error_status: 503, seed: 4 });
      const sending = background(s, churn(1500, { tag: `${mode}5xx`, seed: 21, entities: 300 }), 50, 20);
      // Changes to entities the load is paging through right now (PUT, PATCH, DELETE of fixture rows).
      const racing = background(s, racingChanges(s, mode), 10, 30);
      await rep.waitReady();
      await sending;
      await racing;
      await endsConsistent();
      await ready.stop();
      assert.ok(ready.seen.has(503), "not ready while the load was failing");
      const failures = logsMatching(rep, /REST request failed; retrying/);
      assert.ok(failures.length > 0, "pages failed and were retried");
      // Deletes during a pass make it page again (rows may have moved between pages); with racing deletes in every
      // pass the load may end without vouching for completeness (then it evicts nothing), but it always ends.
      const done = logsMatching(rep, /full load complete/);
      assert.ok(done.length > 0, "the load ended");
      if (!done.some((l) => l.complete === true)) {
        assert.ok(logsMatching(rep, /deleted upstream during the pass/).length > 0);
      }
    });

    test("a row pushed to an earlier page by a delete during the load is not skipped", async () => {
      // Pages are slow, so the load is still paging when an early row goes and a late one comes: every page fetched
      // afterwards starts one row later, the row at that boundary is on no page, and the count still matches.
      const { rep, ready } = await coldStart({ rest_latency_ms: 300, rest_fail_paths: ["/companies"] });
      await waitFor(() => logsMatching(rep, /"msg":"loaded \d+\/\d+ companies"/).length > 0, {
        what: "the first company pages to be loaded",
      });
      await bulk(s, [
        { method: "DELETE", path: "/companies/big-co-0001" },
        { method: "PUT", path: "/companies/zzz-late", body: company(templates().company, "zzz-late", "eu") },
      ]);
      await rep.waitReady();
      await s.admin("POST", "/faults", {});
      await endsConsistent();
      await ready.stop();
      assert.ok(logsMatching(rep, /deleted upstream during the pass/).length > 0, "the pass was paged again");
      await bulk(s, [
        { method: "PUT", path: "/companies/big-co-0001", body: company(templates().company, "big-co-0001", "us") },
        { method: "DELETE", path: "/companies/zzz-late" },
      ]);
    });

    test("429 with Retry-After: the retry waits at least that long", async () => {
      const { rep, ready } = await coldStart({ rest_fail_next: 3, rest_error_status: 429, rest_retry_after_s: 1 });
      await rep.waitReady();
      await endsConsistent();
      await ready.stop();
      const failures = logsMatching(rep, /REST request failed; retrying/);
      assert.ok(failures.length >= 1);
      for (const f of failures) {
        assert.match(String(f.err), /429/);
        assert.ok(Number(f.delayMs) >= 1000, `retry after ${f.delayMs} ms honours Retry-After: 1`);
      }
    });

    test("REST slower than API_TIMEOUT for a while: timed-out pages are retried", async () => {
      const { rep, ready } = await coldStart({ rest_latency_ms: 1200, rest_fail_paths: ["/users"] });
      await waitFor(
        () => logsMatching(rep, /REST request failed; retrying/).some((l) => String(l.path).startsWith("/users")),
        {
          what: "a /users page to time out",
        },
      );
      assert.equal((await rep.ready()).status, 503, "not ready while /users pages time out");
      await s.admin("POST", "/faults", {});
      await rep.waitReady();
      await endsConsistent();
      await ready.stop();
    });

    test("a reload whose pages keep failing evicts nothing until it completes", async () => {
      await s.rep.waitReady();
      await s.waitConsistent();
      const reloads = await s.debugNumber("replay.full_reloads");
      await s.admin("POST", "/faults", { rest_error_rate: 1, rest_fail_paths: ["/companies"] });
      await s.admin("POST", "/reload");
      await waitFor(async () => (await s.debugNumber("replay.full_reloads")) > reloads, { what: "the reload" });
      await waitFor(() => logsMatching(s.rep, /REST request failed/).filter((l) => l.path !== undefined).length > 3, {
        what: "company pages failing",
      });
      // The data in Redis is untouched meanwhile: the load that would evict has not completed.
      assert.deepEqual(await s.differences(), []);
      assert.equal((await s.rep.ready()).status, 200, "a server reload keeps the (still valid) data ready");
      await endsConsistent();
    });
  });
}

/**
 * Changes to fixture entities the load is paging through: in async mode a REST row fetched before such a change
 * must not overwrite it; in sync mode the change is held and applied after the rows.
 */
function racingChanges(s: Stack, mode: string) {
  void s;
  const out = [];
  for (let i = 0; i < 400; i += 7) {
    const id = `big-co-${String(i).padStart(4, "0")}`;
    const uid = `big-us-${String(i).padStart(4, "0")}`;
    if (i % 3 === 0) out.push({ method: "DELETE", path: `/companies/${id}` });
    else
      out.push({
        method: "PATCH",
        path: `/companies/${id}`,
        body: {
          traits: [
            {
              trait_definition: { id: "trdf_region", comparable_type: "string", entity_type: "company" },
              value: `${mode}-raced`,
            },
          ],
        },
      });
    out.push({ method: "DELETE", path: `/users/${uid}` });
  }
  return out;
}
