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
import type { EntityJob, EntityKind } from "./jobs.js";

type Entity = Company | User;

export interface FoldResult {
  /** The entity as it must now be stored, or null when it must not exist. */
  next: Entity | null;
  /** `next` as received, when that text can be stored unchanged (else it is serialised). */
  body?: string;
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

/** Parses a stored body; a foreign or corrupt value counts as absent (it is about to be overwritten). */
export function parseStored(kind: EntityKind, raw: string | null): Entity | null {
  if (raw === null) return null;
  try {
    return parseEngineEntity(kind, JSON.parse(raw)).entity;
  } catch {
    return null;
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
        const parsed = parseEngineEntity(kind, job.data);
        result.next = parsed.entity;
        result.body = parsed.exact ? job.text : undefined;
        keysOnly = false;
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
        if (keysOnly) result.next = JSON.parse(result.body!) as Entity;
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

function lookupKeys(scheme: KeyScheme, kind: EntityKind, keys: Record<string, string> | undefined): string[] {
  if (!keys) return [];
  const out: string[] = [];
  for (const [name, value] of Object.entries(keys)) {
    if (typeof value !== "string") continue;
    for (const k of kind === "company" ? scheme.companyLookups(name, value) : scheme.userLookups(name, value)) {
      out.push(k);
    }
  }
  return out;
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
  const idKey = kind === "company" ? scheme.companyId(id) : scheme.userId(id);
  const idValue = JSON.stringify(id);
  const old = new Set(lookupKeys(scheme, kind, previous?.keys));
  for (const keys of fold.deletedKeys) for (const k of lookupKeys(scheme, kind, keys)) old.add(k);

  const next = fold.next;
  // An entity with no keys cannot be found by any SDK: store nothing for it (and remove what it had).
  if (next && Object.keys(next.keys).length > 0) {
    ops.push({ op: "set", key: idKey, value: fold.body ?? JSON.stringify(next) });
    const current = lookupKeys(scheme, kind, next.keys);
    for (const k of current) {
      ops.push({ op: "set", key: k, value: idValue });
      old.delete(k);
    }
  } else if (previous || fold.deletedKeys.length > 0) {
    ops.push({ op: "del", key: idKey });
  }
  for (const k of old) ops.push({ op: "delIfEquals", key: k, value: idValue });
  return ops;
}

/**
 * Whether two stored forms are the same entity for the SDKs (DESIGN.md §6 "Equivalence": compared as the REST load
 * produces them, ignoring `account_id`), so a body the stream wrote is not rewritten by an equal REST row.
 */
export function sameStoredEntity(kind: EntityKind, a: Entity, b: Entity): boolean {
  return kind === "company"
    ? sameEntity(expectedCompany(a as Company), expectedCompany(b as Company))
    : sameEntity(expectedUser(a as User), expectedUser(b as User));
}
