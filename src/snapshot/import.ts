/**
 * `snapshot import` (docs/design/decisions.md "verify and snapshots"): bootstraps a Redis from a fixture file when the
 * Schematic API cannot be reached. It writes exactly what a replicator that had just loaded that data would hold:
 *
 * 1. take the writer lease (waiting a bounded time; a live replicator renews it forever, so then it gives up);
 * 2. if a marker exists, set it to `reloading` first, so `/ready` does not vouch for a half-written keyspace;
 * 3. write every flag, company and user body and every lookup key through the fenced StoreWriter (the lease token is
 *    checked by the server on every batch; CACHE_TTL applies as for the replicator's writes);
 * 4. delete the current version's cache keys that the snapshot does not have;
 * 5. delete the replay cursor (it described the old data: the next replicator must load, not replay);
 * 6. write the marker `loaded` (with CACHE_TTL, expiring no later than the keys written) and release the lease.
 *
 * A replicator started afterwards finds the marker `loaded`, serves this data, and refreshes it by a full load as
 * soon as the API answers.
 */
import { hostname } from "node:os";
import { parseCompany, parseFlag, parseUser } from "../model/entities.js";
import type { Fixture } from "../model/wire.js";
import { connectedMasters, type RedisClient, scanNode } from "../store/connect.js";
import { serverTime } from "../store/control-keys.js";
import type { KeyScheme } from "../store/keys.js";
import { WriterLease } from "../store/lease.js";
import { readMarker, saveMarker } from "../store/marker.js";
import { StoreWriter, type WriteOp, type WriterLeaseRef } from "../store/writer.js";
import { nowIso } from "../util/time.js";
import { SnapshotError } from "./export.js";

export interface ImportOptions {
  keys: KeyScheme;
  /** Expiry of cache keys (CACHE_TTL); 0 = none. */
  ttlMs: number;
  /** The writer lease; undefined when WRITER_LOCK_DISABLED. */
  lease?: { key: string; ttlMs: number };
  /** How long to wait for the lease (default: its TTL plus 2 s, enough for a crashed writer's lease to lapse). */
  leaseWaitMs?: number;
  /** The replay cursor key to delete (undefined: leave it). */
  cursorKey?: string;
  /** Ops per write batch (default 2000). */
  batchSize?: number;
  /** Progress lines for the operator. */
  info?: (line: string) => void;
}

export interface ImportResult {
  flags: number;
  companies: number;
  users: number;
  /** Keys written (bodies and lookups). */
  written: number;
  /** Current-version keys removed because the snapshot does not have them. */
  removed: number;
}

/** Another writer holds the lease (exit 1). */
export class LeaseBusyError extends SnapshotError {}

export async function importSnapshot(client: RedisClient, fixture: Fixture, o: ImportOptions): Promise<ImportResult> {
  const owner = `${hostname()}-${process.pid}`;
  let lease: WriterLease | undefined;
  if (o.lease) {
    lease = new WriterLease(client, { key: o.lease.key, ttlMs: o.lease.ttlMs, owner });
    await acquire(client, lease, o.leaseWaitMs ?? o.lease.ttlMs + 2000);
  }
  try {
    const leaseRef = lease && o.lease ? { key: o.lease.key, token: () => lease?.token() } : undefined;
    const writer = new StoreWriter(client, { ttlMs: o.ttlMs, lease: leaseRef });
    return await writeAll(client, writer, fixture, { ...o, leaseRef }, owner);
  } finally {
    if (lease) await lease.release().catch(() => false);
  }
}

async function acquire(client: RedisClient, lease: WriterLease, waitMs: number): Promise<void> {
  const acquired = new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), waitMs);
    lease.once("acquired", () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
  lease.start();
  if (await acquired) return;
  lease.stop();
  const holder = await WriterLease.holder(client, lease.key).catch(() => null);
  // The token is `{owner}-{32 hex}`: show the owner, not the fencing token.
  const who = holder ? ` by ${holder.replace(/-[0-9a-f]{32}$/, "")}` : "";
  throw new LeaseBusyError(
    `the writer lease ${lease.key} is held${who} and was not released within ${waitMs} ms: ` +
      "stop the replicators that write to this Redis (or let them step down) and run the import again",
  );
}

async function writeAll(
  client: RedisClient,
  writer: StoreWriter,
  fixture: Fixture,
  o: ImportOptions & { leaseRef?: WriterLeaseRef },
  owner: string,
): Promise<ImportResult> {
  const { keys } = o;
  const batchSize = Math.max(1, o.batchSize ?? 2000);
  // Every key written from now on expires no sooner than this: the marker must not outlive them.
  const expireAt = o.ttlMs > 0 ? (await serverTime(client, keys.marker())) + o.ttlMs : undefined;
  const previous = await readMarker(client, keys);
  if (previous) {
    const reloading = { state: "reloading", loaded_at: previous.loaded_at, writer: owner } as const;
    await saveMarker(client, keys, reloading, { lease: o.leaseRef });
  }

  const wanted = new Set<string>();
  let batch: WriteOp[] = [];
  let written = 0;
  const set = async (key: string, value: string) => {
    wanted.add(key);
    batch.push({ op: "set", key, value });
    if (batch.length >= batchSize) await flush();
  };
  const flush = async () => {
    if (batch.length === 0) return;
    const ops = batch;
    batch = [];
    await writer.apply(ops);
    written += ops.length;
  };

  let flags = 0;
  for (const f of fixture.flags) {
    const flag = parseFlag(f, "engine");
    if (!flag.key) continue;
    flags++;
    const body = JSON.stringify(flag);
    for (const key of keys.flagKeys(flag.key)) await set(key, body);
  }
  const counts = { company: 0, user: 0 };
  for (const kind of ["company", "user"] as const) {
    const list = kind === "company" ? fixture.companies : fixture.users;
    for (const e of list) {
      const entity = kind === "company" ? parseCompany(e, "engine") : parseUser(e, "engine");
      const pairs = Object.entries(entity.keys);
      if (pairs.length === 0) continue; // no SDK could find it: the replicator does not store it either
      counts[kind]++;
      await set(keys.entityId(kind, entity.id), JSON.stringify(entity));
      const idValue = JSON.stringify(entity.id);
      for (const [name, value] of pairs) for (const key of keys.lookups(kind, name, value)) await set(key, idValue);
    }
  }
  await flush();
  o.info?.(`wrote ${written} keys (${flags} flags, ${counts.company} companies, ${counts.user} users)`);

  let removed = 0;
  for (const node of await connectedMasters(client)) {
    for (const kind of ["flags", "company", "user"] as const) {
      for await (const page of scanNode(node, keys.scanPattern(kind))) {
        const stale = page.filter((key) => !wanted.has(key) && keys.versionOf(key) === keys.version);
        if (stale.length > 0) {
          await writer.apply(stale.map((key) => ({ op: "del", key })));
          removed += stale.length;
        }
      }
    }
  }
  if (removed > 0) o.info?.(`removed ${removed} keys the snapshot does not have`);
  if (o.cursorKey) await writer.apply([{ op: "del", key: o.cursorKey }]);
  await saveMarker(
    client,
    keys,
    { state: "loaded", loaded_at: nowIso(), writer: owner },
    { lease: o.leaseRef, expireAt },
  );
  return { flags, companies: counts.company, users: counts.user, written, removed };
}
