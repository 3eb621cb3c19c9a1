/**
 * Bulk load of companies and users over REST into the pipeline (docs/design/decisions.md "Loading modes"). Rows go
 * through the same per-entity lanes as stream changes, so one entity is never written by two paths at once. A load is
 * complete only when a walk through the pages proved that it missed no row and the rows seen agree with the count
 * (docs/design/loading.md); entities missing upstream are evicted after a walk that read every page.
 */
import { restToEngine } from "../model/rest.js";
import type { Company, User } from "../model/wire.js";
import { storedKeys } from "../replication/fold.js";
import type { EntityJob, EntityKind } from "../replication/jobs.js";
import type { LoadRequest, Pipeline } from "../replication/pipeline.js";
import { type RetryContext, withRetry } from "../replication/retry.js";
import type { KeyScheme } from "../store/keys.js";
import type { StoreWriter, WriteOp } from "../store/writer.js";
import { boundHeapGrowth } from "../util/heap-growth.js";
import type { Logger } from "../util/log.js";
import { backoffDelay, sleep } from "../util/time.js";
import { MalformedPageError, type PageBody, PageBudget, type PageRows, pageRows } from "./page-rows.js";
import { LoadCancelledError, type RestClient, type RestKind } from "./rest-client.js";
import { SeenIds } from "./seen-ids.js";

export interface LoaderOptions {
  rest: RestClient;
  pipeline: Pipeline;
  keys: KeyScheme;
  writer: StoreWriter;
  log: Logger;
  pageSize: number;
  /** true: pages fetched concurrently (limits in the RestClient); false: one page at a time. */
  concurrent: boolean;
  /** Every key in Redis matching a pattern, in batches (on every master). */
  scanKeys(pattern: string): AsyncIterable<string[]>;
  maxPasses?: number;
  /** An anti-entropy pass: rows are written only where Redis differs from them. */
  reconcile?: boolean;
  onProgress?(kind: RestKind, loaded: number, total: number): void;
}

export interface LoadResult {
  companies: number;
  users: number;
  complete: boolean;
  evicted: number;
}

const REST_KIND: Record<EntityKind, RestKind> = { company: "companies", user: "users" };

export async function loadEverything(o: LoaderOptions, generation: number, signal: AbortSignal): Promise<LoadResult> {
  // One kind failing ends the other: the load is over, and its rows (or evictions) must not keep coming.
  const failed = new AbortController();
  const either = AbortSignal.any([signal, failed.signal]);
  let failure: { err: unknown } | undefined;
  // Fetched ahead: up to the client's concurrency in all; one page per kind when loading synchronously.
  const pages = new PageBudget(o.concurrent ? o.rest.maxConcurrent : 2);
  const load = (kind: EntityKind) =>
    loadKind(o, kind, generation, pages, either).catch((err: unknown) => {
      failure ??= { err };
      failed.abort();
      throw err;
    });
  const unbound = boundHeapGrowth();
  const [companies, users] = await Promise.allSettled([load("company"), load("user")]).finally(unbound);
  if (companies.status === "rejected" || users.status === "rejected") throw failure!.err;
  return {
    companies: companies.value.seen,
    users: users.value.seen,
    complete: companies.value.complete && users.value.complete,
    evicted: companies.value.evicted + users.value.evicted,
  };
}

async function loadKind(
  o: LoaderOptions,
  kind: EntityKind,
  generation: number,
  pages: PageBudget,
  signal: AbortSignal,
): Promise<{ seen: number; complete: boolean; evicted: number }> {
  const restKind = REST_KIND[kind];
  const maxPasses = o.maxPasses ?? 3;
  // The eviction at the end removes what Redis held before the load and the load did not see. When it held nothing
  // of this kind, there is nothing to evict and nothing to remember; else the ids seen are kept in Redis. Changes
  // queued before the load began are written first: what they write counts as held before.
  await o.pipeline.flushed();
  const retry = o.pipeline.redisRetry(signal);
  const seen = (await holdsAny(o, kind, retry)) ? new SeenIds(o.writer.client, o.keys, kind, retry) : undefined;
  try {
    let distinct = 0;
    let complete = true;
    for (let pass = 1; ; pass++) {
      const fullsBefore = o.pipeline.fullsSeen(kind);
      const expected = await o.rest.count(restKind, signal);
      const progress = new Progress(o.log, restKind, expected, o.onProgress);
      // A row already queued by this pass is not queued again: pages overlap, and rows read again after a page that
      // did not count are on the pages read just before it. (One seen further back is queued twice: harmless.)
      const recent = new RecentIds(RECENT_PAGES);
      distinct = 0;
      const proven = await walkPages(o, restKind, expected, pages, signal, async (rows, order) => {
        recent.nextPage();
        const ids: string[] = [];
        const fresh: string[] = [];
        for (let i = 0; i < rows.count; i++) {
          const entity = rowEntity(o, kind, rows.text(i));
          if (!entity) continue;
          ids.push(entity.id);
          if (!recent.add(entity.id)) continue;
          fresh.push(entity.id);
          const full = enqueue(o, generation, kind, "full", entity.id, entity, order);
          if (full) await full;
        }
        await seen?.add(fresh);
        distinct += fresh.length;
        progress.add(fresh.length);
        return ids;
      });
      // The walk saw every row that existed throughout it. The count, read again, checks the listing itself: fewer
      // rows than it says (beyond those created meanwhile, each announced by a stream `full`) means a page ended
      // early.
      const count = await o.rest.count(restKind, signal);
      const created = o.pipeline.fullsSeen(kind) - fullsBefore;
      if (proven && distinct + created >= count) break;
      const why = proven ? "rows seen fall short of the count" : "rows kept moving between pages";
      const context = { kind: restKind, seen: distinct, count, pass };
      if (pass < maxPasses) {
        o.log.warn(context, `${why}; paging again`);
        continue;
      }
      if (!proven) {
        o.log.warn(context, `the load did not converge (${why}): evicting nothing`);
        return { seen: distinct, complete: false, evicted: 0 };
      }
      // Evictions are confirmed by id against the API, so a walk that read every page may evict although the count
      // disagrees: an entity it missed that still exists is loaded, not deleted.
      o.log.warn(context, `the load did not converge (${why}): evicting only what the API confirms is gone`);
      complete = false;
      break;
    }
    const evicted = seen ? await evictMissing(o, kind, seen, generation, signal) : 0;
    return { seen: distinct, complete, evicted };
  } finally {
    await seen?.clear();
  }
}

/** Whether Redis holds any key of this kind (an entity or a lookup key). */
async function holdsAny(o: LoaderOptions, kind: EntityKind, retry: RetryContext): Promise<boolean> {
  for await (const batch of scanRetrying(o, o.keys.scanPattern(kind), retry)) if (batch.length > 0) return true;
  return false;
}

/** Pages whose ids a pass remembers, to queue a row read again on a later page only once. */
const RECENT_PAGES = 4;

/** The ids of the last few pages taken (bounded: a pass does not remember every id it queued). */
class RecentIds {
  private readonly ids = new Set<string>();
  /** The ids each page added, oldest first. */
  private readonly pages: string[][] = [];
  constructor(private readonly depth: number) {}

  /** The next rows are another page's. */
  nextPage(): void {
    if (this.pages.length >= this.depth) for (const id of this.pages.shift()!) this.ids.delete(id);
    this.pages.push([]);
  }

  /** Adds an id of the current page; false when one of the recent pages already had it. */
  add(id: string): boolean {
    if (this.ids.has(id)) return false;
    this.ids.add(id);
    this.pages.at(-1)!.push(id);
    return true;
  }
}

/** Rows two successive pages share: fewer deletions than this between reading them need no second look. */
const PAGE_OVERLAP = 2;

/**
 * One walk through a REST listing, page by page, that proves it missed no row (docs/design/loading.md). Offset paging
 * is no snapshot: entities created or deleted upstream move later rows between pages, also between pages fetched
 * concurrently. So successive pages overlap, and a page counts only if it holds a row of the page before it: then no
 * row can lie between them, whenever each was read. A page that does not is read again one page earlier (rows were
 * deleted before it), and the walk ends at the first short page that counts. `take` queues a page's rows (of the
 * given order, see Pipeline.loadRequest) and returns their ids. Resolves false when the rows kept moving for longer
 * than the walk may take (it then stopped).
 *
 * Pages up to the one expected to be short are fetched ahead (within the load's page budget, shared with the other
 * kind's walk; one at a time when loading synchronously) as bytes, and taken one at a time, in order, one row at a
 * time: parsing is CPU work on this one thread either way, and a page parsed early would only sit in memory (its
 * object graph is ~10 times its text).
 */
async function walkPages(
  o: LoaderOptions,
  kind: RestKind,
  expected: number,
  pages: PageBudget,
  signal: AbortSignal,
  take: (rows: PageRows, order: number) => Promise<string[]>,
): Promise<boolean> {
  const size = o.pageSize;
  const step = size - Math.min(PAGE_OVERLAP, size - 1);
  const lastOffset = expected < size ? 0 : (Math.floor((expected - size) / step) + 1) * step;
  // Twice the pages expected, and a few: beyond that the listing changes faster than it can be read.
  const budget = 2 * (lastOffset / step + 1) + 4;
  const maxAhead = o.concurrent ? o.rest.maxConcurrent : 1;
  const ahead = new Map<number, Page>();
  let planned = 0;
  const fetch = (offset: number): Page => {
    const request = o.pipeline.loadRequest();
    const into = pages.body();
    const body = o.rest.pageBody(kind, size, offset, signal, into);
    body.catch(() => {}); // awaited in order below; a later page's failure must not go unhandled meanwhile
    return { body, into, request };
  };
  let at = 0;
  let anchors: Set<string> | undefined;
  let moved = 0;
  try {
    for (let fetched = 1; fetched <= budget; fetched++) {
      const page = ahead.get(at) ?? fetch(at);
      if (ahead.delete(at)) pages.releaseAhead();
      for (planned = Math.max(planned, at + step); ahead.size < maxAhead && planned <= lastOffset; ) {
        if (!pages.reserveAhead()) break;
        ahead.set(planned, fetch(planned));
        planned += step;
      }
      let rows: PageRows;
      let ids: string[];
      try {
        try {
          rows = pageRows(`GET /${kind}`, await page.body);
          ids = await take(rows, page.request.order);
        } catch (err) {
          if (!(err instanceof MalformedPageError)) throw err;
          // Fetched again the ordinary way (with retries until every row parses); rows already queued are not
          // queued twice (the page is among the recent ones).
          o.log.warn({ kind, offset: at, err: err.message }, "malformed REST page; fetching it again");
          const texts = await o.rest.page(kind, size, at, signal);
          rows = { count: texts.length, text: (i) => texts[i]! };
          ids = await take(rows, page.request.order);
        }
      } finally {
        page.request.done();
      }
      pages.give(page.into);
      if (anchors && !ids.some((id) => anchors!.has(id))) {
        if (moved++ === 0) {
          o.log.info({ kind, offset: at }, "rows moved between pages (created or deleted upstream); reading back");
        }
        at -= step;
        if (at === 0) anchors = undefined;
        continue;
      }
      if (rows.count < size) return true;
      anchors = new Set(ids);
      at += step;
    }
    return false;
  } finally {
    for (const page of ahead.values()) {
      page.request.done();
      pages.releaseAhead();
    }
  }
}

interface Page {
  body: Promise<PageBody>;
  /** Where the body is received (returned to the pool once the page is taken). */
  into: PageBody;
  request: LoadRequest;
}

/** Ids confirmed per REST call before eviction (the list endpoint's `ids` filter). */
const CONFIRM_CHUNK = 100;

/**
 * Deletes entities (and stray lookup keys) that Redis has but the complete load did not return — once the API
 * confirms they are gone: every eviction candidate is asked for by id, and one that still exists is loaded, not
 * deleted (a second line of defence behind the walk's proof). A lookup key naming an entity that exists goes when
 * that entity's body lacks it, unless the stream changed the entity during the pass. Its Redis calls are retried like the lanes' (a pass
 * must not fail on one timeout); a failed SCAN starts the scan over, which is harmless: evicting is idempotent.
 */
async function evictMissing(
  o: LoaderOptions,
  kind: EntityKind,
  seen: SeenIds,
  generation: number,
  signal: AbortSignal,
): Promise<number> {
  const idPrefix = kind === "company" ? o.keys.companyId("") : o.keys.userId("");
  const restKind = REST_KIND[kind];
  const retry = o.pipeline.redisRetry(signal);
  if (!(await seen.intact())) {
    o.log.warn({ kind: restKind }, "Redis lost the ids the load saw; nothing will be evicted this time");
    return 0;
  }
  let evicted = 0;
  let recovered = 0;
  // Everything queued before the scan (this load's rows, stream changes received earlier) must be in Redis first:
  // a write still queued could recreate an entity after the scan found it absent.
  await o.pipeline.flushed();
  for await (const batch of scanRetrying(o, o.keys.scanPattern(kind), retry)) {
    if (signal.aborted) break;
    const changed = (id: string) => o.pipeline.changedByStream(kind, id);
    const ids: string[] = [];
    const strayLookups: string[] = [];
    for (const key of batch) {
      const rest = key.slice(idPrefix.length);
      if (rest.includes(":")) strayLookups.push(key);
      else if (!changed(rest)) ids.push(rest);
    }
    const values = await withRetry("reading lookup keys to evict", retry, () => o.writer.readMany(strayLookups));
    const targets = values.map(lookupTarget);
    // The entities here and those the lookup keys name: which did the load see?
    const named = [...new Set([...ids, ...targets.filter((t): t is string => t !== undefined)])];
    const flags = await seen.has(named);
    const saw = new Set(named.filter((_, i) => flags[i]));
    const unchanged = (id: string) => !saw.has(id) && !changed(id);
    const missing = ids.filter(unchanged);
    const ask = new Set(missing);
    for (const t of targets) if (t !== undefined && unchanged(t)) ask.add(t);
    const upstream = new Set<string>();
    const asked = [...ask];
    for (let i = 0; i < asked.length; i += CONFIRM_CHUNK) {
      const request = o.pipeline.loadRequest();
      try {
        for (const row of await o.rest.existing(restKind, asked.slice(i, i + CONFIRM_CHUNK), signal)) {
          const entity = rowEntity(o, kind, row);
          if (!entity || !ask.has(entity.id) || upstream.has(entity.id)) continue;
          upstream.add(entity.id);
          recovered++;
          await enqueue(o, generation, kind, "full", entity.id, entity, request.order);
        }
      } finally {
        request.done();
      }
    }
    // Loaded now: later batches' lookup keys naming them stay.
    await seen.add([...upstream]);
    const evicting = o.pipeline.loadRequest();
    try {
      for (const id of missing) {
        if (upstream.has(id) || changed(id)) continue;
        evicted++;
        await enqueue(o, generation, kind, "delete", id, { id }, evicting.order);
      }
    } finally {
      evicting.done();
    }
    const ops: WriteOp[] = [];
    /** Lookup keys naming an entity that exists: stray if its body, as this pass wrote it, lacks them. */
    const owned: number[] = [];
    for (let i = 0; i < strayLookups.length; i++) {
      const raw = values[i];
      const target = targets[i];
      if (raw == null || (target !== undefined && upstream.has(target))) continue;
      if (target !== undefined && !unchanged(target)) {
        if (!o.pipeline.changedByStream(kind, target)) owned.push(i);
        continue;
      }
      ops.push({ op: "delIfEquals", key: strayLookups[i]!, value: raw });
    }
    const disowned = await lookupsTheirOwnerLacks(o, kind, owned, strayLookups, targets, retry);
    for (const i of disowned) ops.push({ op: "delIfEquals", key: strayLookups[i]!, value: values[i]! });
    if (ops.length) {
      evicted += ops.length;
      // Checked again when sent: an owner the stream changes from now on may be gaining the key (its write then
      // follows this delete on the same connection).
      const owner = new Map(disowned.map((i) => [strayLookups[i]!, targets[i]!]));
      const current = (op: WriteOp) => !o.pipeline.changedByStream(kind, owner.get(op.key) ?? "");
      await withRetry("evicting lookup keys", retry, () => o.writer.apply(ops.filter(current)));
    }
  }
  if (recovered > 0) o.log.info({ kind, recovered }, "loaded entities the paging skipped (changed during the load)");
  if (evicted > 0) o.log.info({ kind, evicted }, "evicted entities missing upstream");
  return evicted;
}

/**
 * Of the lookup keys at `at` (each naming an entity this pass loaded), those that entity's stored body does not have,
 * in either spelling (keys.ts): left behind when a change that removed the key from the body had its lookup delete
 * lost (a Cluster master lost it, or a batch was cut short), since a writer learns which lookup keys to delete only
 * from the previous body. Run after the pass's rows are written, so the body is the one the API just gave.
 */
async function lookupsTheirOwnerLacks(
  o: LoaderOptions,
  kind: EntityKind,
  at: number[],
  lookups: string[],
  targets: (string | undefined)[],
  retry: RetryContext,
): Promise<number[]> {
  if (at.length === 0) return [];
  const owners = [...new Set(at.map((i) => targets[i]!))];
  const bodies = await withRetry("reading entities of lookup keys", retry, () =>
    o.writer.readMany(owners.map((id) => o.keys.entityId(kind, id))),
  );
  const own = new Set<string>();
  for (const raw of bodies) {
    for (const [name, value] of Object.entries(storedKeys(kind, raw)?.keys ?? {})) {
      if (typeof value === "string") for (const key of o.keys.lookups(kind, name, value)) own.add(key);
    }
  }
  return at.filter((i) => !own.has(lookups[i]!));
}

/** Every key matching `pattern`, in batches; a SCAN that fails starts the scan over after a pause. */
async function* scanRetrying(o: LoaderOptions, pattern: string, retry: RetryContext): AsyncIterable<string[]> {
  for (let attempt = 1; ; attempt++) {
    try {
      // A failure of the caller's loop body does not land in the catch: the generator is closed at the yield.
      for await (const batch of o.scanKeys(pattern)) yield batch;
      return;
    } catch (err) {
      if (retry.signal.aborted) throw new LoadCancelledError("load cancelled");
      retry.stats.retried++;
      if (attempt === 1 || attempt % 20 === 0) {
        o.log.warn({ err: (err as Error).message, attempt }, "scanning for entities to evict failed; retrying");
      }
      await sleep(backoffDelay(attempt, 50, 2000), retry.signal);
    }
  }
}

/**
 * A REST row (its JSON text) as a rules-engine entity, or undefined (logged) when it cannot be one. Throws
 * MalformedPageError when the text is not JSON (the page is read again).
 */
function rowEntity(o: LoaderOptions, kind: EntityKind, text: string): Company | User | undefined {
  let row: unknown;
  try {
    row = JSON.parse(text);
  } catch (err) {
    throw new MalformedPageError(`a row is not JSON: ${(err as Error).message}`);
  }
  try {
    return restToEngine(kind, row);
  } catch (err) {
    o.log.warn({ kind, reason: (err as Error).message }, "skipping an invalid REST row");
    return undefined;
  }
}

/**
 * Queues a REST row (`full`) or an eviction (`delete`) of this load behind the entity's other changes; returns a
 * promise only when it must wait for room (see Pipeline.enqueueLoad).
 */
function enqueue(
  o: LoaderOptions,
  generation: number,
  kind: EntityKind,
  op: "full" | "delete",
  id: string,
  data: Company | User | { id: string },
  order: number,
): Promise<void> | undefined {
  const job: EntityJob = { kind, id, op, data, tracked: [], source: "load", generation, reconcile: o.reconcile, order };
  if (op === "full") {
    // Queued as its text and keys, not its object graph (see fold.ts); an anti-entropy row keeps the entity, to
    // compare it with what Redis holds.
    job.text = JSON.stringify(data);
    if (!o.reconcile) job.data = { keys: (data as Company | User).keys };
  }
  return o.pipeline.enqueueLoad(job);
}

/** The entity id a lookup key's value names, or undefined when it is not a JSON string naming one. */
function lookupTarget(raw: string | null): string | undefined {
  if (raw == null) return undefined;
  try {
    const target: unknown = JSON.parse(raw);
    return typeof target === "string" && target !== "" ? target : undefined;
  } catch {
    return undefined;
  }
}

/** Logs load progress about every 10% (and at the end). */
class Progress {
  private loaded = 0;
  private nextLog: number;
  constructor(
    private readonly log: Logger,
    private readonly kind: string,
    private readonly total: number,
    private readonly report?: (kind: RestKind, loaded: number, total: number) => void,
  ) {
    report?.(kind as RestKind, 0, total);
    this.nextLog = Math.max(1, Math.ceil(total / 10));
    log.info({ kind, total }, `loading ${kind}`);
  }
  add(n: number): void {
    if (n === 0) return;
    this.loaded += n;
    this.report?.(this.kind as RestKind, this.loaded, this.total);
    if (this.loaded >= this.nextLog || this.loaded >= this.total) {
      this.log.info(
        { kind: this.kind, loaded: this.loaded, total: this.total },
        `loaded ${this.loaded}/${this.total} ${this.kind}`,
      );
      this.nextLog = this.loaded + Math.max(1, Math.ceil(this.total / 10));
    }
  }
}
