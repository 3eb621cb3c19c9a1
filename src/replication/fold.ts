/**
 * Pure batch logic for companies and users: fold each entity's changes in arrival order onto what Redis holds,
 * then turn the results into Redis operations. No I/O here, so every rule is unit-testable.
 */
import { EntityError, parseEngineEntity } from "../model/entities.js";
import { expectedCompany, expectedUser, sameEntity } from "../model/equivalence.js";
import { mergeCompany, mergeUser } from "../model/merge.js";
import type { Company, User } from "../model/wire.js";
import type { KeyScheme } from "../store/keys.js";
import type { WriteOp } from "../store/writer.js";
import { memberText } from "../util/json-span.js";
import type { CheckedFull, EntityJob, EntityKind } from "./jobs.js";

type Entity = Company | User;

export interface FoldResult {
  /**
   * The entity as it must now be stored, or null when it must not exist. While `body` is set, only `next.keys` is
   * sure to be there: the entity is `body` (a full's text is not parsed again unless a partial needs it).
   */
  next: Entity | null;
  /** `next` as received, when that text can be stored unchanged (else it is serialised). */
  body?: string | Buffer;
  /** Whether anything changed relative to Redis (false: nothing to write). */
  touched: boolean;
  /** Keys carried by delete payloads (their lookups must go even if Redis had no body). */
  deletedKeys: Record<string, string>[];
  /** Jobs rejected as invalid, with the reason (skipped, never retried). */
  invalid: { job: EntityJob; reason: string }[];
  /** Partials that found no base (a no-op, as upstream). */
  orphanPartials: number;
}

/** What a batch needs to know of a stored body to replace or delete it: the keys whose lookups it owns. */
export type StoredKeys = Pick<Entity, "keys">;

/**
 * The `keys` of a stored body without parsing the rest (a full or a delete replaces the body, so the rest does not
 * matter). Anything unusual falls back to {@link parseStored}.
 */
export function storedKeys(kind: EntityKind, raw: string | null): StoredKeys | null {
  if (raw === null) return null;
  const text = memberText(raw, "keys");
  if (text !== undefined && text.charCodeAt(0) === 123 /* { */) {
    try {
      const keys = JSON.parse(text) as Record<string, unknown>;
      let strings = true;
      for (const k in keys) if (typeof keys[k] !== "string") strings = false;
      if (strings) return { keys: keys as Record<string, string> };
    } catch {
      // fall through
    }
  }
  return parseStored(kind, raw);
}

/**
 * The keys a batch may assume an entity's stored body has when its changes are fulls and deletes only: those of the
 * first change (keys rarely change). The writer checks the assumption in the write's own round trip, so no read is
 * needed (docs/design/lookup-keys.md). Undefined when the stored body itself is needed (a partial merges onto it, an
 * anti-entropy row compares with it) or the first change carries no `keys` object of strings.
 */
export function assumedKeys(jobs: readonly EntityJob[]): Record<string, string> | undefined {
  for (const job of jobs) if (job.op === "partial" || job.reconcile) return undefined;
  const first = jobs[0];
  const checked = first?.checked;
  if (checked) return "keys" in checked ? checked.keys : undefined;
  const keys = (first?.data as { keys?: unknown } | null | undefined)?.keys;
  if (typeof keys !== "object" || keys === null || Array.isArray(keys)) return undefined;
  for (const value of Object.values(keys)) if (typeof value !== "string") return undefined;
  return keys as Record<string, string>;
}

/**
 * How a body written by this replicator or the loader spells `keys` (JSON.stringify, in the order received or in
 * byte order, as the REST mapping sorts them): the texts a write may expect to find stored.
 */
export function keysTexts(keys: Record<string, string>): string[] {
  const received = JSON.stringify(keys);
  const names: string[] = [];
  let sorted = true;
  for (const name in keys) {
    // Insertion sort: an entity has a few keys.
    let i = names.length;
    for (; i > 0 && names[i - 1]! > name; i--) names[i] = names[i - 1]!;
    names[i] = name;
    if (i < names.length - 1) sorted = false;
  }
  if (sorted) return [received];
  let inOrder = "{";
  for (const name of names)
    inOrder += `${inOrder.length > 1 ? "," : ""}${JSON.stringify(name)}:${JSON.stringify(keys[name])}`;
  return [received, `${inOrder}}`];
}

/** Parses a stored body; a foreign or corrupt value counts as absent (it is about to be overwritten). */
export function parseStored(kind: EntityKind, raw: string | null): Entity | null {
  if (raw === null) return null;
  try {
    return parseEngineEntity(kind, JSON.parse(raw)).entity;
  } catch {
    return null;
  }
}

/**
 * Validates a full: its keys, and the validated entity unless `text` can be stored as it is (see CheckedFull).
 * Stream fulls are checked when they arrive (Pipeline.handleFrame), others when folded.
 */
export function checkFull(kind: EntityKind, data: unknown, text: string | Buffer | undefined): CheckedFull {
  try {
    const { entity, exact } = parseEngineEntity(kind, data);
    return exact && text !== undefined ? { keys: entity.keys } : { keys: entity.keys, entity };
  } catch (err) {
    return { invalid: err instanceof Error ? err.message : String(err) };
  }
}

export function foldEntity(kind: EntityKind, previous: Entity | null, jobs: EntityJob[]): FoldResult {
  const result: FoldResult = { next: previous, touched: false, deletedKeys: [], invalid: [], orphanPartials: 0 };
  // `next` holds only the keys of a REST row (see below) until a partial needs the whole entity.
  let keysOnly = false;
  for (const job of jobs) {
    try {
      if (job.op === "full" && job.source === "load") {
        // A REST row, mapped, checked and serialised by the loader (model/rest.ts restToEngine): stored as it is.
        // Its data is the entity (an anti-entropy row, compared with Redis) or only its keys (a load's queued rows
        // hold their text, not their object graph).
        result.next = job.data as Entity;
        result.body = job.text;
        keysOnly = !job.reconcile && job.text !== undefined;
      } else if (job.op === "full") {
        const full = job.checked ?? checkFull(kind, job.data, job.text);
        if ("invalid" in full) throw new Error(full.invalid);
        // Stored as received when validation changed nothing: `next` then holds only the keys.
        result.next = full.entity ?? ({ keys: full.keys } as Entity);
        result.body = full.entity ? undefined : job.text;
        keysOnly = full.entity === undefined;
      } else if (job.op === "delete") {
        const keys = (job.data as { keys?: unknown } | null)?.keys;
        if (keys && typeof keys === "object") result.deletedKeys.push(keys as Record<string, string>);
        result.next = null;
        result.body = undefined;
      } else {
        if (!job.data || typeof job.data !== "object" || Array.isArray(job.data)) {
          throw new EntityError("$", "partial data is not an object");
        }
        if (result.next === null) {
          result.orphanPartials++;
          continue;
        }
        // A full stored as received is its text: the partial needs the whole entity.
        if (keysOnly) result.next = JSON.parse(result.body!.toString()) as Entity;
        keysOnly = false;
        result.next =
          kind === "company"
            ? mergeCompany(result.next as Company, job.data as Record<string, unknown>)
            : mergeUser(result.next as User, job.data as Record<string, unknown>);
        result.body = undefined;
      }
      result.touched = true;
    } catch (err) {
      result.invalid.push({ job, reason: err instanceof Error ? err.message : String(err) });
    }
  }
  return result;
}

/** The lookup keys of an entity's `keys` (every spelling; see KeyScheme.lookups). */
function lookupKeys(scheme: KeyScheme, kind: EntityKind, keys: Record<string, string>, out: string[] = []): string[] {
  for (const name in keys) {
    const value = keys[name];
    if (!Object.hasOwn(keys, name) || typeof value !== "string") continue;
    for (const k of scheme.lookups(kind, name, value)) out.push(k);
  }
  return out;
}

/** Whether two `keys` maps have the same entries (then they own the same lookup keys). */
function sameKeys(a: Record<string, string>, b: Record<string, string>): boolean {
  if (a === b) return true;
  let n = 0;
  for (const name in a) {
    if (!Object.hasOwn(a, name)) continue;
    if (!Object.hasOwn(b, name) || a[name] !== b[name]) return false;
    n++;
  }
  for (const name in b) if (Object.hasOwn(b, name)) n--;
  return n === 0;
}

function hasEntries(keys: Record<string, string>): boolean {
  for (const name in keys) if (Object.hasOwn(keys, name)) return true;
  return false;
}

/**
 * Operations that move Redis from `previous` to `fold.next` for entity `id`. Lookup keys are only removed while
 * they still point at this entity, so an entity that lost a key never deletes it from the entity that gained it.
 */
export function entityOps(
  scheme: KeyScheme,
  kind: EntityKind,
  id: string,
  previous: StoredKeys | null,
  fold: FoldResult,
): WriteOp[] {
  const ops: WriteOp[] = [];
  const idKey = scheme.entityId(kind, id);
  const idValue = JSON.stringify(id);
  const next = fold.next;
  let body: WriteOp | undefined;
  // An entity with no keys cannot be found by any SDK: store nothing for it (and remove what it had).
  const stored = next !== null && hasEntries(next.keys);
  // The lookup keys of the previous state and of delete payloads, unless the new state has the same keys (the usual
  // case: then it writes them all again, and none must go).
  const old: string[] = [];
  for (const keys of [previous?.keys, ...fold.deletedKeys]) {
    if (keys && !(stored && sameKeys(keys, next.keys))) lookupKeys(scheme, kind, keys, old);
  }
  const gone = old.length > 0 ? new Set(old) : undefined;
  if (stored) {
    body = { op: "set", key: idKey, value: fold.body ?? JSON.stringify(next) };
    ops.push(body);
    for (const k of lookupKeys(scheme, kind, next.keys)) {
      ops.push({ op: "set", key: k, value: idValue });
      gone?.delete(k);
    }
  } else if (previous || fold.deletedKeys.length > 0) {
    body = { op: "del", key: idKey };
    ops.push(body);
  }
  // Which lookup keys to delete is learnt from the previous body alone: it must not change before they are gone.
  if (body && gone && gone.size > 0) body.last = true;
  if (gone) for (const k of gone) ops.push({ op: "delIfEquals", key: k, value: idValue });
  return ops;
}

/**
 * Whether two stored forms are the same entity for the SDKs (docs/design/decisions.md "Equivalence": compared as the
 * REST load produces them, ignoring `account_id`), so a body the stream wrote is not rewritten by an equal REST row.
 */
export function sameStoredEntity(kind: EntityKind, a: Entity, b: Entity): boolean {
  return kind === "company"
    ? sameEntity(expectedCompany(a as Company), expectedCompany(b as Company))
    : sameEntity(expectedUser(a as User), expectedUser(b as User));
}
