/**
 * "Redis equals the source" (docs/design/decisions.md "Equivalence"): each entity is compared as the REST load would
 * produce it (wire → REST → rules-engine mapping), ignoring `account_id` (the REST API lacks it).
 *
 * - `expectedCompany` / `expectedUser`: that projection of a wire entity. It is idempotent, so applying it to a value
 *   read back from Redis (written by the bulk load or by the stream) gives comparable forms on both sides.
 * - `canonicalFlag`: a flag decoded the way Go decodes it (all fields, Go order), for flags, which only ever come
 *   from the stream.
 * - `sameEntity` / `firstDifference`: deep JSON equality, ignoring key order and `account_id` at every level, and
 *   treating a property set to `null` like an absent one (the SDK strips nulls before the rules engine sees them).
 */
import { decodeRules, isObject } from "./merge.js";
import { companyToRest, restCompanyToEngine, restUserToEngine, userToRest } from "./rest.js";
import type { Company, Flag, User } from "./wire.js";

/** What the REST load produces for this wire company. */
export function expectedCompany(c: Company): Company {
  return restCompanyToEngine(companyToRest(c));
}

/** What the REST load produces for this wire user. */
export function expectedUser(u: User): User {
  return restUserToEngine(userToRest(u));
}

/** A flag in its Go-decoded form (lenient: wrong types become zero values); fields in Go order. */
export function canonicalFlag(f: unknown): Flag {
  const o = isObject(f) ? f : {};
  const s = (v: unknown) => (typeof v === "string" ? v : "");
  return {
    id: s(o.id),
    account_id: s(o.account_id),
    environment_id: s(o.environment_id),
    key: s(o.key),
    rules: decodeRules(o.rules, "rules", "lenient"),
    default_value: o.default_value === true,
  };
}

const IGNORED = "account_id";

function describe(v: unknown): string {
  const s = JSON.stringify(v);
  if (s === undefined) return "absent";
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

/**
 * The path of the first difference between `a` and `b` (e.g. `.traits[0].value: "a" vs "b"`), or null when they are
 * the same entity by `sameEntity`'s rules.
 */
export function firstDifference(a: unknown, b: unknown, path = ""): string | null {
  if (a === b) return null;
  if (a === undefined || a === null || b === undefined || b === null) {
    return (a ?? null) === (b ?? null) ? null : `${path || "."}: ${describe(a)} vs ${describe(b)}`;
  }
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b)) return `${path || "."}: ${describe(a)} vs ${describe(b)}`;
    if (a.length !== b.length) return `${path || "."}: ${a.length} vs ${b.length} elements`;
    for (let i = 0; i < a.length; i++) {
      const d = firstDifference(a[i], b[i], `${path}[${i}]`);
      if (d !== null) return d;
    }
    return null;
  }
  if (isObject(a) && isObject(b)) {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    for (const k of keys) {
      if (k === IGNORED) continue;
      const d = firstDifference(
        Object.hasOwn(a, k) ? a[k] : undefined,
        Object.hasOwn(b, k) ? b[k] : undefined,
        `${path}.${k}`,
      );
      if (d !== null) return d;
    }
    return null;
  }
  return `${path || "."}: ${describe(a)} vs ${describe(b)}`;
}

/** Deep JSON equality ignoring `account_id` at every level, key order, and null-versus-absent properties. */
export function sameEntity(a: unknown, b: unknown): boolean {
  return firstDifference(a, b) === null;
}
