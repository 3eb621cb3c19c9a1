/**
 * Keyspace maintenance, streamed through SCAN (never KEYS) on every master, in constant memory:
 *
 * - {@link cleanupOtherVersions} (docs/reference/redis-contract.md §4, checklist 19): deletes cache keys
 *   (`{prefix}flags|company|user:{ver}:…`) whose version segment is not ours. Current-version keys, the
 *   marker, the lease and the cursor (`{prefix}datastream:*`) and anything else are never touched.
 * - {@link refreshExpiry} (docs/design/decisions.md "CACHE_TTL", "Repair"): with a TTL, pushes every current-version
 *   cache key's expiry out again (PEXPIRE); without one, removes expiries that foreign writers added (PERSIST): the
 *   SDKs' track() rewrites company keys with a 24 h TTL.
 *
 * Deletes and expiry changes are pipelined single-key commands sent to the master the key was scanned on, so they
 * are cluster-safe. These passes are not fenced by the lease: they only remove other versions' keys or change
 * expiries, which a deposed writer doing once more is harmless. Pass `signal` to stop a pass early (counts so
 * far are returned).
 */
import type { Redis } from "ioredis";
import { connectedMasters, type RedisClient, scanNode } from "./connect.js";
import type { CacheKind, KeyScheme } from "./keys.js";
import { errorMessage, type StoreLog } from "./log.js";

const KINDS: CacheKind[] = ["flags", "company", "user"];
const SCAN_COUNT = 1000;
const DELETE_BATCH = 500;

export interface MaintenanceOptions {
  signal?: AbortSignal;
  /** SCAN COUNT hint (default 1000). */
  scanCount?: number;
  /** Keys per DEL pipeline (default 500). */
  batchSize?: number;
}

export interface CleanupResult {
  deleted: number;
  byVersion: Record<string, number>;
}

export async function cleanupOtherVersions(
  client: RedisClient,
  keys: KeyScheme,
  log?: StoreLog,
  opts: MaintenanceOptions = {},
): Promise<CleanupResult> {
  const byVersion: Record<string, number> = {};
  let deleted = 0;
  let errors = 0;
  let firstError: string | undefined;
  const batchSize = opts.batchSize ?? DELETE_BATCH;

  const cleanNode = async (node: Redis) => {
    let pending: { key: string; version: string }[] = [];
    const flush = async () => {
      if (pending.length === 0) return;
      const batch = pending;
      pending = [];
      const pipe = node.pipeline();
      for (const { key } of batch) pipe.del(key);
      const results = (await pipe.exec()) ?? [];
      batch.forEach(({ version }, i) => {
        const [err, reply] = results[i] ?? [new Error("no reply"), 0];
        if (err) {
          errors++;
          firstError ??= errorMessage(err);
        } else if (reply === 1) {
          deleted++;
          byVersion[version] = (byVersion[version] ?? 0) + 1;
        }
      });
    };
    for (const kind of KINDS) {
      for await (const page of scan(node, keys.scanPattern(kind, null), opts)) {
        for (const key of page) {
          const version = keys.versionOf(key);
          if (version === undefined || version === keys.version) continue;
          pending.push({ key, version });
          if (pending.length >= batchSize) await flush();
        }
      }
    }
    await flush();
  };

  await allMasters(client, cleanNode);
  if (errors > 0) log?.warn({ errors, err: firstError }, "cache cleanup: some deletes failed (retried next run)");
  if (deleted > 0) {
    log?.info({ deleted, byVersion, current: keys.version }, "cache cleanup removed keys of other versions");
  } else {
    log?.debug({ current: keys.version }, "cache cleanup: no keys of other versions");
  }
  return { deleted, byVersion };
}

export interface RefreshResult {
  /** Current-version cache keys seen. */
  scanned: number;
  /** Keys whose expiry was set (ttlMs > 0) or removed (ttlMs = 0). */
  updated: number;
  /** Keys whose PEXPIRE or PERSIST failed (logged; retried next run). */
  failed: number;
}

export async function refreshExpiry(
  client: RedisClient,
  keys: KeyScheme,
  ttlMs: number,
  opts: MaintenanceOptions & { log?: StoreLog } = {},
): Promise<RefreshResult> {
  let scanned = 0;
  let updated = 0;
  let errors = 0;
  let firstError: string | undefined;
  const ttl = ttlMs > 0 ? Math.max(1, Math.round(ttlMs)) : 0;

  const refreshNode = async (node: Redis) => {
    for (const kind of KINDS) {
      for await (const page of scan(node, keys.scanPattern(kind), opts)) {
        const mine = page.filter((key) => keys.versionOf(key) === keys.version);
        if (mine.length === 0) continue;
        scanned += mine.length;
        const pipe = node.pipeline();
        for (const key of mine) {
          if (ttl > 0) pipe.pexpire(key, ttl);
          else pipe.persist(key);
        }
        const results = (await pipe.exec()) ?? [];
        for (const [err, reply] of results) {
          if (err) {
            errors++;
            firstError ??= errorMessage(err);
          } else if (reply === 1) {
            updated++;
          }
        }
      }
    }
  };

  await allMasters(client, refreshNode);
  if (errors > 0) opts.log?.warn({ errors, err: firstError }, "expiry refresh: some keys failed (retried next run)");
  opts.log?.debug({ scanned, updated, ttlMs: ttl }, ttl > 0 ? "cache expiries refreshed" : "foreign expiries removed");
  return { scanned, updated, failed: errors };
}

async function allMasters(client: RedisClient, each: (node: Redis) => Promise<void>): Promise<void> {
  const nodes = await connectedMasters(client);
  if (nodes.length === 0) throw new Error("Redis Cluster reports no masters");
  const settled = await Promise.allSettled(nodes.map(each));
  for (const s of settled) if (s.status === "rejected") throw s.reason;
}

function scan(node: Redis, pattern: string, opts: MaintenanceOptions): AsyncGenerator<string[]> {
  return scanNode(node, pattern, opts.scanCount ?? SCAN_COUNT, opts.signal);
}
