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
  KEYS,
  logsMatching,
  markerChange,
  type RestProxy,
  region,
  type Stack,
  sdkSeesMarker,
  sleep,
  startRestProxy,
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

    const coldStart = (faults: Record<string, unknown>) => coldStartWith(s, faults);
    const endsConsistent = () => clearedAndConsistent(s);

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
      // Deletes during a pass move rows between pages, which are read again; with rows moving all the time the load
      // may end without vouching for completeness (then it evicts nothing), but it always ends.
      const done = logsMatching(rep, /full load complete/);
      assert.ok(done.length > 0, "the load ended");
      if (!done.some((l) => l.complete === true)) {
        assert.ok(logsMatching(rep, /rows moved between pages|paging again/).length > 0);
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

for (const mode of ["sync", "async"] as const) {
  // Offset paging is no snapshot: rows created or deleted upstream during the load move the others between pages
  // (issue 13, defect 4). Exactly 200 companies in pages of 100, so a row pushed along falls past the last page.
  describe(`faults: rows moving between pages during the load (${mode} loading)`, () => {
    let s: Stack;
    before(async () => {
      s = await startStack({
        fixture: bigFixture(150),
        noReplicator: true,
        env: {
          ASYNC_LOADER_PAGE_SIZE: "100",
          NUM_WORKERS: "2",
          // Four held stream changes fill the synchronous load's hold (NUM_WORKERS × channel size): the replicator
          // then stops reading the socket, so later changes reach the REST API well before their stream messages.
          COMPANY_CHANNEL_SIZE: "2",
          USER_CHANNEL_SIZE: "2",
          USE_ASYNC_LOADING: String(mode === "async"),
        },
      });
    });
    after(async () => s?.close());

    const slowCompanyPages = { rest_latency_ms: 3000, rest_fail_paths: ["/companies"] };

    test("a company created while the pages are in flight: none is skipped", async () => {
      const { rep, ready } = await coldStartWith(s, slowCompanyPages);
      await waitFor(() => logsMatching(rep, /"msg":"loading companies"/).length > 0, { what: "the company count" });
      // Sorts into the last page: every page answered after it shifts the last company past the pages counted.
      await s.admin("PUT", "/companies/comp_c049a", company(templates().company, "comp_c049a", "eu"));
      await rep.waitReady();
      await clearedAndConsistent(s, 20_000);
      await ready.stop();
      await s.admin("DELETE", "/companies/comp_c049a");
    });

    test("companies deleted and created upstream before their stream messages arrive: none is skipped", async () => {
      const { rep, ready } = await coldStartWith(
        s,
        slowCompanyPages,
        // One page at a time, so the changes fall between two pages in this mode too.
        mode === "async" ? { ASYNC_LOADER_MAX_CONCURRENT_REQUESTS: "1" } : {},
      );
      await waitFor(() => logsMatching(rep, /"msg":"loaded \d+\/\d+ companies"/).length > 0, {
        what: "the first company page",
      });
      for (let i = 0; i < 4; i++) await s.admin("PATCH", "/companies/comp_acme", { traits: [region(`held-${i}`)] });
      // Ten rows leave the first page and ten arrive at the end: the count is unchanged, and every later page starts
      // ten rows further on.
      const early = Array.from({ length: 10 }, (_, i) => `big-co-${String(i).padStart(4, "0")}`);
      const late = Array.from({ length: 10 }, (_, i) => `zzz-late-${i}`);
      await bulk(s, [...early.map(deleteCompany), ...late.map(putCompany)]);
      await rep.waitReady();
      await clearedAndConsistent(s, 20_000);
      await ready.stop();
      assert.ok(logsMatching(rep, /rows moved between pages/).length > 0, "the moved page boundary was fetched again");
      await bulk(s, [...early.map(putCompany), ...late.map(deleteCompany)]);
    });
  });
}

// A load whose passes never agree with the count (issue 11): while the datastream is down, companies created upstream
// are announced by no stream message, so the rows seen fall short of the count in every pass.
describe("faults: a load whose passes do not converge (sync loading)", () => {
  let s: Stack;
  let proxy: RestProxy;
  const slowPages = { rest_latency_ms: 300, rest_fail_paths: ["/companies"] };
  let created = 0;
  /** Before every company count: the datastream cut (and refused), and a company created on a page already read. */
  const unannounced = async () => {
    await s.admin("POST", "/faults", { ...slowPages, datastream_refuse_status: 503 });
    await s.admin("POST", "/disconnect", { drop: true });
    const id = `aaa-unannounced-${created++}`;
    await s.admin("PUT", `/companies/${id}`, company(templates().company, id, "eu"));
  };
  const notConverged = (rep: Stack["rep"]) => logsMatching(rep, /the load did not converge/).length;

  before(async () => {
    s = await startStack({ fixture: bigFixture(400), noReplicator: true, replayLog: 20, env: SETTINGS });
    proxy = await startRestProxy(s.emu.url);
  });
  after(async () => {
    await s?.close();
    await proxy?.close();
  });

  test("an initial load stays not ready and keeps paging; ready once a pass converges", async () => {
    const { rep, ready } = await coldStartWith(s, slowPages, { SCHEMATIC_API_URL: proxy.url });
    await waitFor(() => logsMatching(rep, /starting a full load/).length > 0, { what: "the load" });
    proxy.beforeCount = unannounced;
    await waitFor(() => notConverged(rep) > 0, { timeoutMs: 90_000, what: "passes that do not converge" });
    await sleep(2000);
    assert.ok(!ready.seen.has(200), `never ready on a load that did not converge (saw ${[...ready.seen]})`);
    const counts = proxy.counts;
    await waitFor(() => proxy.counts > counts + 2, { timeoutMs: 60_000, what: "the load to keep paging" });
    assert.equal((await rep.ready()).status, 503);
    // The API keeps its word again, and the datastream is back: the next pass converges.
    proxy.beforeCount = undefined;
    await s.admin("POST", "/faults", {});
    await rep.waitReady(90_000);
    await ready.stop();
    await clearedAndConsistent(s);
  });

  test("a reload evicts what the API confirms is gone, and a follow-up pass soon completes it", async () => {
    const rep = s.rep;
    const gone = "big-co-0100";
    assert.ok(await s.client.exists(KEYS.companyId(gone)));
    // While the datastream is down, a company is deleted and more changes are made than the replay log keeps: the
    // replicator's cursor is out of the log when it reconnects, so it gets `reload`.
    await s.admin("POST", "/faults", { datastream_refuse_status: 503 });
    await s.admin("POST", "/disconnect", { drop: true });
    await s.admin("DELETE", `/companies/${gone}`);
    await bulk(
      s,
      churn(40, { tag: "converge", seed: 5, entities: 10 }).filter((c) => c.method !== "DELETE"),
    );
    const reloads = await s.debugNumber("replay.full_reloads");
    proxy.beforeCount = unannounced;
    await s.admin("POST", "/faults", slowPages);
    await waitFor(async () => (await s.debugNumber("replay.full_reloads")) > reloads, { what: "the reload" });
    await waitFor(async () => (await s.client.exists(KEYS.companyId(gone))) === 0, {
      timeoutMs: 90_000,
      what: `${gone}, deleted while the datastream was down, to be evicted by the reload that did not converge`,
    });
    assert.ok(notConverged(rep) > 0, "the reload did not converge");
    proxy.beforeCount = undefined;
    await waitFor(() => logsMatching(rep, /anti-entropy pass complete/).some((l) => l.complete === true), {
      timeoutMs: 90_000,
      what: "a follow-up pass that converges",
    });
    await clearedAndConsistent(s);
  });
});

/** A fresh replicator (settings `env` on top of the suite's) on an empty Redis, with `faults` set before it starts. */
async function coldStartWith(s: Stack, faults: Record<string, unknown>, env: Record<string, string> = {}) {
  if (s.rep) await s.rep.stop("SIGTERM");
  await s.client.flushall();
  await s.admin("POST", "/faults", faults);
  const rep = await s.startReplicator(env);
  return { rep, ready: watchReady(rep, 50) };
}

const putCompany = (id: string) => ({
  method: "PUT",
  path: `/companies/${id}`,
  body: company(templates().company, id, "us"),
});
const deleteCompany = (id: string) => ({ method: "DELETE", path: `/companies/${id}` });

/** Faults cleared, then the marker change, zero differences and the SDK reading it. */
async function clearedAndConsistent(s: Stack, timeoutMs = 40_000): Promise<void> {
  await s.admin("POST", "/faults", {});
  await markerChange(s);
  await s.waitConsistent(timeoutMs);
  await sdkSeesMarker(s);
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
