/**
 * The Redis key scheme the official SDKs read in replicator mode (docs/reference/redis-contract.md §1):
 *
 *   {prefix}flags:{ver}:{lower(flagKey)}
 *   {prefix}company:{ver}:{id}                      (id NOT lower-cased)
 *   {prefix}company:{ver}:{lower(name)}:{lower(value)}
 *   {prefix}user:{ver}:{id}
 *   {prefix}user:{ver}:{lower(name)}:{lower(value)}
 *   {prefix}datastream:state:{ver}                  (our readiness marker, docs/design/marker.md)
 *   {prefix}datastream:canary:{ver}:{tag}           (Cluster only: a few per master, see canary.ts)
 *
 * Lower-casing: the TypeScript SDK uses JavaScript `toLowerCase` (full Unicode mapping), the Go SDK and the Go
 * replicator use Go `strings.ToLower` (per-code-point simple mapping). Lookup keys are written in the JavaScript
 * form and, where Go's form differs, in that form too, so both SDKs find them.
 */

export type CacheKind = "flags" | "company" | "user";
export type EntityKind = "company" | "user";

const CACHE_KINDS: ReadonlySet<string> = new Set<CacheKind>(["flags", "company", "user"]);

/** JavaScript `String.prototype.toLowerCase`: what the TypeScript SDK applies. */
export function jsToLower(s: string): string {
  return s.toLowerCase();
}

/**
 * Code points Go's `strings.ToLower` maps differently from JavaScript's `toLowerCase`:
 * - U+0130 `İ`: JavaScript applies the unconditional full mapping to `i` + U+0307; Go's simple mapping gives `i`;
 * - U+03A3 `Σ`: JavaScript gives final sigma `ς` at the end of a word; Go always gives `σ`;
 * - capital letters that gained a lower-case mapping after Unicode 15.0 (the tables of Go 1.21–1.26, which built
 *   the Go replicator and current Go SDKs), while Node's ICU is newer: Go leaves them unchanged.
 * Every other code point lower-cases to the same single code point in both (checked exhaustively against
 * go1.26 and Node 20's ICU).
 */
const GO_DIFFERS =
  /[\u0130\u03a3\u1c89\ua7cb\ua7cc\ua7ce\ua7d2\ua7d4\ua7da\ua7dc\u{10d50}-\u{10d65}\u{16ea0}-\u{16eb8}]/u;

/** Go `strings.ToLower`: each code point through `unicode.ToLower` (UnicodeData simple mapping, Unicode 15.0). */
export function goToLower(s: string): string {
  if (!GO_DIFFERS.test(s)) return s.toLowerCase();
  let out = "";
  for (const ch of s) {
    if (ch === "\u0130") out += "i";
    else if (ch === "\u03a3") out += "\u03c3";
    else if (GO_DIFFERS.test(ch)) out += ch;
    else out += ch.toLowerCase();
  }
  return out;
}

/** Escapes Redis glob metacharacters (`* ? [ ] \ ^`) so the text matches literally in SCAN MATCH. */
export function escapeGlob(s: string): string {
  return s.replace(/[*?[\]\\^]/g, (c) => `\\${c}`);
}

/** A cache key taken apart; see {@link KeyScheme.parse}. */
export interface ParsedKey {
  kind: CacheKind;
  version: string;
  /** The segments after the version: `[flagKey]`, `[id]` or `[name, value]` (more if an id holds colons). */
  rest: string[];
}

export class KeyScheme {
  /** `{prefix}{kind}:{ver}:`, the head of every key of an entity kind. */
  private readonly heads: Record<EntityKind, string>;

  constructor(
    readonly prefix: string,
    readonly version: string,
  ) {
    this.heads = { company: `${prefix}company:${version}:`, user: `${prefix}user:${version}:` };
  }

  /** `{prefix}flags:{ver}:{lower(flagKey)}`. Flag keys use the JavaScript form (the SDKs agree on ASCII keys). */
  flag(flagKey: string): string {
    return `${this.prefix}flags:${this.version}:${jsToLower(flagKey)}`;
  }

  /** Every spelling of the flag's key: the JavaScript form, then Go's if it differs. */
  flagKeys(flagKey: string): string[] {
    return this.variants(`${this.prefix}flags:${this.version}:`, flagKey);
  }

  /** `{prefix}company:{ver}:{id}`: the id is NOT lower-cased. */
  companyId(id: string): string {
    return this.entityId("company", id);
  }

  /** `{prefix}company:{ver}:{lower(name)}:{lower(value)}`: JavaScript form first, then Go's if it differs. */
  companyLookups(name: string, value: string): string[] {
    return this.lookups("company", name, value);
  }

  userId(id: string): string {
    return this.entityId("user", id);
  }

  userLookups(name: string, value: string): string[] {
    return this.lookups("user", name, value);
  }

  entityId(kind: EntityKind, id: string): string {
    return this.heads[kind] + id;
  }

  lookups(kind: EntityKind, name: string, value: string): string[] {
    return this.variants(this.heads[kind], `${name}:${value}`);
  }

  /** The readiness marker `{prefix}datastream:state:{ver}` (no expiry). */
  marker(): string {
    return `${this.prefix}datastream:state:${this.version}`;
  }

  /**
   * A Cluster canary `{prefix}datastream:canary:{ver}:{tag}` (no expiry): `{tag}` is a hash tag, so the tag alone
   * picks the slot, and so the master (canary.ts).
   */
  canary(tag: string): string {
    return `${this.prefix}datastream:canary:${this.version}:{${tag}}`;
  }

  /**
   * `{prefix}datastream:load-seen:{ver}:{kind}:{{set}}`: a set of the ids a load saw (src/loader/seen-ids.ts). The
   * set's name is the key's hash tag, so that a load's sets spread over a cluster's slots.
   */
  loadSeen(kind: EntityKind, set: string): string {
    return `${this.prefix}datastream:load-seen:${this.version}:${kind}:{${set}}`;
  }

  /**
   * SCAN MATCH pattern for the cache keys of one kind: `{prefix}{kind}:{version}:*`, with glob characters in
   * the prefix and the version escaped. `version = null` matches every version (`{prefix}{kind}:*`), as cleanup
   * needs.
   */
  scanPattern(kind: CacheKind, version: string | null = this.version): string {
    const head = `${escapeGlob(this.prefix)}${kind}:`;
    return version === null ? `${head}*` : `${head}${escapeGlob(version)}:*`;
  }

  /**
   * Takes a cache key under this prefix apart: `{kind}:{version}:{rest…}` with at least one segment after the
   * version (the Go cleanup's "≥ 4 colon segments" with the default prefix counted as one). Anything else
   * (other prefixes, `datastream:*`, keys with too few segments) gives undefined.
   */
  parse(key: string): ParsedKey | undefined {
    if (!key.startsWith(this.prefix)) return undefined;
    const parts = key.slice(this.prefix.length).split(":");
    if (parts.length < 3) return undefined;
    const [kind, version, ...rest] = parts as [string, string, ...string[]];
    if (!CACHE_KINDS.has(kind)) return undefined;
    return { kind: kind as CacheKind, version, rest };
  }

  /** The version segment of a cache key under this prefix, or undefined if it is not one (see {@link parse}). */
  versionOf(key: string): string | undefined {
    return this.parse(key)?.version;
  }

  private variants(head: string, tail: string): string[] {
    const js = head + jsToLower(tail);
    if (!GO_DIFFERS.test(tail)) return [js];
    const go = head + goToLower(tail);
    return js === go ? [js] : [js, go];
  }
}
