/**
 * The consistency checker behind `schematic-replicator verify` (docs/design/decisions.md "verify and snapshots"):
 * compares the current version's keyspace in Redis with what a source (fixture, emulator dump, or a REST + datastream
 * snapshot) says it must be.
 *
 * Expected keyspace, from the source:
 * - one flag key per flag with a non-empty key (every spelling `keys.flagKeys` gives), value = the flag;
 * - per company/user with at least one key: the id key (value = the entity as the REST load produces it, see
 *   equivalence.ts) and every lookup key of every (name, value) pair (value = the id as a JSON string).
 * Values are compared with `sameEntity` (ignoring `account_id`): flags in their Go-decoded form, companies and users
 * through the REST-load projection on both sides, so a body written from the stream and one written by the bulk load
 * compare alike. Then the current version's patterns are SCANned (every master on a Cluster) for extra keys.
 *
 * Reads are pipelined GET + PTTL on a single node; on a Cluster (where a pipeline must stay on one node and keys
 * spread over all slots) they are single-key commands issued concurrently, in batches.
 */
import type { Cluster, Redis } from "ioredis";
import { canonicalFlag, expectedCompany, expectedUser, firstDifference } from "../model/equivalence.js";
import type { Company, Fixture, Flag, User } from "../model/wire.js";
import { scanNode } from "../store/connect.js";

/** The part of src/store/keys.ts `KeyScheme` the checker uses. */
export interface DiffKeyScheme {
  flag(flagKey: string): string;
  /** Every spelling the writer uses for a flag key; `[flag(key)]` when absent. */
  flagKeys?(flagKey: string): string[];
  companyId(id: string): string;
  companyLookups(name: string, value: string): string[];
  userId(id: string): string;
  userLookups(name: string, value: string): string[];
  scanPattern(kind: "flags" | "company" | "user"): string;
}

export interface Difference {
  kind: "missing" | "stale" | "extra";
  key: string;
  detail?: string;
}

export interface DiffOptions {
  /**
   * Whether keys should carry an expiry (CACHE_TTL > 0). false (default): a key with a TTL is `stale` with detail
   * "unexpected expiry". true: a key without one is `stale` with detail "no expiry".
   */
  expectTtl?: boolean;
  /** Keys per read batch (default 500). */
  batchSize?: number;
  /** SCAN COUNT hint (default 1000). */
  scanCount?: number;
}

export interface DiffResult {
  /** Sorted by key. At most one difference per key. */
  differences: Difference[];
  /** Keys examined: every expected key plus every extra key found. */
  checked: number;
}

type Expectation =
  | { kind: "flag"; flag: Flag }
  | { kind: "company"; company: Company }
  | { kind: "user"; user: User }
  | { kind: "lookup"; id: string };

type RedisLike = Redis | Cluster;

function buildExpected(keys: DiffKeyScheme, source: Fixture): Map<string, Expectation> {
  const expected = new Map<string, Expectation>();
  for (const flag of source.flags ?? []) {
    if (!flag.key) continue; // the writer skips flags with an empty key
    const names = keys.flagKeys ? keys.flagKeys(flag.key) : [keys.flag(flag.key)];
    for (const k of names) expected.set(k, { kind: "flag", flag });
  }
  const entities = (
    kind: "company" | "user",
    list: (Company | User)[],
    idKey: (id: string) => string,
    lookups: (name: string, value: string) => string[],
  ) => {
    for (const e of list) {
      const pairs = Object.entries(e.keys ?? {});
      if (pairs.length === 0) continue; // an entity without keys is never cached
      expected.set(
        idKey(e.id),
        kind === "company" ? { kind, company: e as Company } : { kind: "user", user: e as User },
      );
      for (const [name, value] of pairs) {
        for (const k of lookups(name, value)) expected.set(k, { kind: "lookup", id: e.id });
      }
    }
  };
  entities(
    "company",
    source.companies ?? [],
    (id) => keys.companyId(id),
    (n, v) => keys.companyLookups(n, v),
  );
  entities(
    "user",
    source.users ?? [],
    (id) => keys.userId(id),
    (n, v) => keys.userLookups(n, v),
  );
  return expected;
}

interface Read {
  value: string | null;
  error?: string;
  pttl: number;
}

async function readBatch(redis: RedisLike, batch: string[]): Promise<Read[]> {
  if (redis.isCluster) {
    return await Promise.all(
      batch.map(async (key): Promise<Read> => {
        const [value, pttl] = await Promise.all([
          redis.get(key).then(
            (v) => ({ value: v }),
            (err: unknown) => ({ value: null, error: errorText(err) }),
          ),
          redis.pttl(key).catch(() => -2),
        ]);
        return { ...value, pttl };
      }),
    );
  }
  const pipeline = (redis as Redis).pipeline();
  for (const key of batch) pipeline.get(key).pttl(key);
  const results = (await pipeline.exec()) ?? [];
  return batch.map((_, i): Read => {
    const [getErr, value] = results[2 * i] ?? [new Error("no reply"), null];
    const [, pttl] = results[2 * i + 1] ?? [null, -2];
    return getErr
      ? { value: null, error: errorText(getErr), pttl: typeof pttl === "number" ? pttl : -2 }
      : { value: (value as string | null) ?? null, pttl: typeof pttl === "number" ? pttl : -2 };
  });
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Returns a detail string when the stored value differs from the expectation, null when it matches. */
function compareValue(exp: Expectation, raw: string): string | null {
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    return "value is not JSON";
  }
  try {
    switch (exp.kind) {
      case "lookup":
        if (parsed === exp.id) return null;
        return `points to ${JSON.stringify(parsed)}, expected ${JSON.stringify(exp.id)}`;
      case "flag": {
        const d = firstDifference(canonicalFlag(parsed), canonicalFlag(exp.flag));
        return d === null ? null : `value differs at ${d}`;
      }
      case "company": {
        if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return "value is not an object";
        const d = firstDifference(expectedCompany(parsed as Company), expectedCompany(exp.company));
        return d === null ? null : `value differs at ${d}`;
      }
      case "user": {
        if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return "value is not an object";
        const d = firstDifference(expectedUser(parsed as User), expectedUser(exp.user));
        return d === null ? null : `value differs at ${d}`;
      }
    }
  } catch (err) {
    return `unreadable value: ${errorText(err)}`;
  }
}

async function scanAll(redis: RedisLike, patterns: string[], count: number): Promise<Set<string>> {
  const nodes: Redis[] = redis.isCluster ? (redis as Cluster).nodes("master") : [redis as Redis];
  const found = new Set<string>();
  await Promise.all(
    nodes.map(async (node) => {
      for (const pattern of patterns) {
        for await (const batch of scanNode(node, pattern, count)) for (const k of batch) found.add(k);
      }
    }),
  );
  return found;
}

/**
 * Compares the current version's keyspace with `source`. Missing = an expected key is absent; stale = present with
 * another value (or the wrong TTL state); extra = a key under the current version's patterns that is not expected.
 */
export async function diffRedis(
  redis: RedisLike,
  keys: DiffKeyScheme,
  source: Fixture,
  opts: DiffOptions = {},
): Promise<DiffResult> {
  const expectTtl = opts.expectTtl ?? false;
  const batchSize = Math.max(1, opts.batchSize ?? 500);
  const expected = buildExpected(keys, source);
  const differences: Difference[] = [];

  const all = [...expected.keys()];
  for (let i = 0; i < all.length; i += batchSize) {
    const batch = all.slice(i, i + batchSize);
    const reads = await readBatch(redis, batch);
    batch.forEach((key, j) => {
      const read = reads[j]!;
      const exp = expected.get(key)!;
      if (read.error !== undefined) {
        differences.push({ kind: "stale", key, detail: `cannot read: ${read.error}` });
        return;
      }
      if (read.value === null) {
        differences.push({ kind: "missing", key });
        return;
      }
      const details: string[] = [];
      const valueDetail = compareValue(exp, read.value);
      if (valueDetail !== null) details.push(valueDetail);
      if (!expectTtl && read.pttl >= 0) details.push("unexpected expiry");
      if (expectTtl && read.pttl === -1) details.push("no expiry");
      if (details.length > 0) differences.push({ kind: "stale", key, detail: details.join("; ") });
    });
  }

  const patterns = (["flags", "company", "user"] as const).map((k) => keys.scanPattern(k));
  const present = await scanAll(redis, patterns, opts.scanCount ?? 1000);
  let extras = 0;
  for (const key of present) {
    if (expected.has(key)) continue;
    extras++;
    differences.push({ kind: "extra", key });
  }

  differences.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return { differences, checked: expected.size + extras };
}
