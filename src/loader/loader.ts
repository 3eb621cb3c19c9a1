/**
 * Bulk load of companies and users over REST into the pipeline (DESIGN.md §6 "Loading modes"). Rows go through
 * the same per-entity lanes as stream changes, so one entity is never written by two paths at once. A load is
 * complete only when the distinct rows seen equal the count; only then are entities missing upstream evicted.
 */
import { restCompanyToEngine, restUserToEngine } from "../model/rest.js";
import type { Company, User } from "../model/wire.js";
import type { EntityKind } from "../replication/jobs.js";
import type { Pipeline } from "../replication/pipeline.js";
import type { KeyScheme } from "../store/keys.js";
import type { StoreWriter } from "../store/writer.js";
import type { Logger } from "../util/log.js";
import { pageRows, type RestClient, type RestKind } from "./rest-client.js";

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
  const [companies, users] = await Promise.all([
    loadKind(o, "company", generation, signal),
    loadKind(o, "user", generation, signal),
  ]);
  return {
    companies: companies.seen,
    users: users.seen,
    complete: companies.complete && users.complete,
    evicted: companies.evicted + users.evicted,
  };
}

async function loadKind(
  o: LoaderOptions,
  kind: EntityKind,
  generation: number,
  signal: AbortSignal,
): Promise<{ seen: number; complete: boolean; evicted: number }> {
  const restKind = REST_KIND[kind];
  const maxPasses = o.maxPasses ?? 3;
  const seen = new Set<string>();
  let expected = 0;
  for (let pass = 1; pass <= maxPasses; pass++) {
    // Offset paging is no snapshot: an entity deleted upstream during the pass moves later rows to earlier pages,
    // and one of them can be skipped while the counts still agree. Deletes arrive on the datastream (subscribed
    // before any load), so a pass during which none arrived skipped nothing.
    const deletesBefore = o.pipeline.deletesSeen(kind);
    expected = await o.rest.count(restKind, signal);
    const progress = new Progress(o.log, restKind, expected, o.onProgress);
    // Rows of this pass alone: entities deleted upstream after an earlier pass saw them stay in `seen` for good,
    // so a pass that returns exactly the count also completes the load.
    const passSeen = new Set<string>();
    const pages = Math.ceil(expected / o.pageSize);
    const handlePage = async (rows: unknown[]) => {
      for (const row of rows) {
        const entity = toEngine(o, kind, row);
        if (!entity) continue;
        seen.add(entity.id);
        passSeen.add(entity.id);
        await enqueue(o, generation, kind, "full", entity.id, entity);
      }
      progress.add(rows.length);
    };
    if (o.concurrent) {
      // Up to `maxConcurrent` pages are fetched ahead, as text; pages are parsed and queued one at a time, in order.
      // Parsing is CPU work on this one thread either way, and a page parsed early would only sit in memory (its
      // object graph is ~10 times its text) and make every garbage collection of the load slower.
      const ahead: Promise<string>[] = [];
      let next = 0;
      const fetchAhead = () => {
        while (ahead.length < o.rest.maxConcurrent && next < pages) {
          const text = o.rest.pageText(restKind, o.pageSize, next++ * o.pageSize, signal);
          text.catch(() => {}); // awaited in order below; a later page's failure must not go unhandled meanwhile
          ahead.push(text);
        }
      };
      fetchAhead();
      for (let n = 0; ahead.length > 0; n++) {
        const text = await ahead.shift()!;
        fetchAhead();
        await handlePage(await parsePage(o, restKind, text, n * o.pageSize, signal));
      }
    } else {
      for (let offset = 0; ; offset += o.pageSize) {
        const rows = await o.rest.page(restKind, o.pageSize, offset, signal);
        await handlePage(rows);
        if (rows.length < o.pageSize) break;
      }
    }
    const shifted = o.pipeline.deletesSeen(kind) !== deletesBefore;
    if (!shifted && (seen.size === expected || passSeen.size === expected)) break;
    o.log.warn(
      { kind: restKind, seen: seen.size, count: expected, pass },
      shifted
        ? "entities were deleted upstream during the pass, so rows may have moved between pages; paging again"
        : "rows seen differ from the count; paging again",
    );
    if (pass === maxPasses) {
      o.log.warn({ kind: restKind }, "the load did not converge; nothing will be evicted this time");
      return { seen: seen.size, complete: false, evicted: 0 };
    }
  }
  const evicted = await evictMissing(o, kind, seen, generation, signal);
  return { seen: seen.size, complete: true, evicted };
}

/** The rows of a prefetched page; a malformed one is fetched again the ordinary way (with retries). */
async function parsePage(
  o: LoaderOptions,
  kind: RestKind,
  text: string,
  offset: number,
  signal: AbortSignal,
): Promise<unknown[]> {
  try {
    return pageRows(kind, text);
  } catch (err) {
    o.log.warn({ kind, offset, err: (err as Error).message }, "malformed REST page; fetching it again");
    return await o.rest.page(kind, o.pageSize, offset, signal);
  }
}

/** Ids confirmed per REST call before eviction (the list endpoint's `ids` filter). */
const CONFIRM_CHUNK = 100;

/**
 * Deletes entities (and stray lookup keys) that Redis has but the complete load did not return — once the API
 * confirms they are gone. Offset paging is not a snapshot: a row deleted upstream during the load shifts later rows
 * to earlier pages, so one can be skipped while the count still matches (the deleted row was seen). Every eviction
 * candidate is therefore asked for by id; one that still exists is loaded (it was skipped), not deleted.
 */
async function evictMissing(
  o: LoaderOptions,
  kind: EntityKind,
  seen: Set<string>,
  generation: number,
  signal: AbortSignal,
): Promise<number> {
  const idPrefix = kind === "company" ? o.keys.companyId("") : o.keys.userId("");
  const restKind = REST_KIND[kind];
  const unchanged = (id: string) => !seen.has(id) && !o.pipeline.changedByStream(kind, id);
  let evicted = 0;
  let recovered = 0;
  // Everything queued before the scan (this load's rows, stream changes received earlier) must be in Redis first:
  // a write still queued could recreate an entity after the scan found it absent.
  await o.pipeline.flushed();
  for await (const batch of o.scanKeys(o.keys.scanPattern(kind))) {
    if (signal.aborted) break;
    const missing: string[] = [];
    const strayLookups: string[] = [];
    for (const key of batch) {
      const rest = key.slice(idPrefix.length);
      if (!unchanged(rest)) continue;
      if (rest.includes(":")) strayLookups.push(key);
      else missing.push(rest);
    }
    if (missing.length === 0 && strayLookups.length === 0) continue;
    const values = await o.writer.readMany(strayLookups);
    const targets = values.map(lookupTarget);
    const ask = new Set(missing);
    for (const t of targets) if (t !== undefined && unchanged(t)) ask.add(t);
    const upstream = new Set<string>();
    const asked = [...ask];
    for (let i = 0; i < asked.length; i += CONFIRM_CHUNK) {
      for (const row of await o.rest.existing(restKind, asked.slice(i, i + CONFIRM_CHUNK), signal)) {
        const entity = toEngine(o, kind, row);
        if (!entity || !ask.has(entity.id) || upstream.has(entity.id)) continue;
        upstream.add(entity.id);
        seen.add(entity.id);
        recovered++;
        await enqueue(o, generation, kind, "full", entity.id, entity);
      }
    }
    for (const id of missing) {
      if (upstream.has(id) || !unchanged(id)) continue;
      evicted++;
      await enqueue(o, generation, kind, "delete", id, { id });
    }
    const ops = [];
    for (let i = 0; i < strayLookups.length; i++) {
      const raw = values[i];
      const target = targets[i];
      if (raw == null || (target !== undefined && (upstream.has(target) || !unchanged(target)))) continue;
      ops.push({ op: "delIfEquals" as const, key: strayLookups[i]!, value: raw });
    }
    if (ops.length) {
      evicted += ops.length;
      await o.writer.apply(ops);
    }
  }
  if (recovered > 0) o.log.info({ kind, recovered }, "loaded entities the paging skipped (changed during the load)");
  if (evicted > 0) o.log.info({ kind, evicted }, "evicted entities missing upstream");
  return evicted;
}

/** A REST row as a rules-engine entity, or undefined (logged) when it cannot be one. */
function toEngine(o: LoaderOptions, kind: EntityKind, row: unknown): Company | User | undefined {
  try {
    return kind === "company" ? restCompanyToEngine(row) : restUserToEngine(row);
  } catch (err) {
    o.log.warn({ kind, reason: (err as Error).message }, "skipping an invalid REST row");
    return undefined;
  }
}

/** Queues a REST row (`full`) or an eviction (`delete`) of this load behind the entity's other changes. */
function enqueue(
  o: LoaderOptions,
  generation: number,
  kind: EntityKind,
  op: "full" | "delete",
  id: string,
  data: unknown,
): Promise<void> {
  return o.pipeline.enqueueLoad({
    kind,
    id,
    op,
    data,
    tracked: [],
    source: "load",
    generation,
    reconcile: o.reconcile,
  });
}

/** The entity id a lookup key's value names, or undefined when it is not a JSON string. */
function lookupTarget(raw: string | null): string | undefined {
  if (raw == null) return undefined;
  try {
    const target: unknown = JSON.parse(raw);
    return typeof target === "string" ? target : undefined;
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
