/**
 * The batch applier: every Redis write of the replicator goes through {@link StoreWriter.apply}, one round trip
 * per batch (DESIGN.md §6 "Writes").
 *
 * Single node and Sentinel: one EVALSHA of {@link APPLY_SCRIPT} per batch (larger batches are split into chunks
 * sent in one pipeline). With a lease configured the script first checks that the lease key still holds our
 * token and writes nothing otherwise ("fencing", DESIGN.md §6 "Writer lease"): a writer that was cut off and
 * reconnects after losing the lease cannot write. The check and the writes are one atomic script.
 *
 * Cluster: the keys live in many slots, so a script cannot cover them. One pipeline per node of single-key
 * commands (SET / DEL / a one-key EVALSHA for delIfEquals), all nodes in parallel. The lease is timing-based only:
 * the batch is refused when the lease's token() says it is not held, but nothing is checked on the server.
 */
import type { Cluster, Redis } from "ioredis";
import { groupBySlotOwner } from "./cluster.js";
import { isCluster, type RedisClient } from "./connect.js";
import { isNoScript, LuaScript } from "./script.js";

export type WriteOp =
  /** `ttl: false`: never expires, whatever the writer's TTL (control keys: marker, cursor). */
  | { op: "set"; key: string; value: string; ttl?: false }
  | { op: "del"; key: string }
  /** DEL only if the key still holds `value` (a lookup key now pointing at another entity is kept). */
  | { op: "delIfEquals"; key: string; value: string };

export interface WriterLeaseRef {
  key: string;
  /** The token while the lease is held, else undefined (see WriterLease.token()). */
  token: () => string | undefined;
}

export interface StoreWriterOptions {
  /** Expiry of cache writes in ms; 0 = no expiry (plain SET, which also clears an expiry the key had). */
  ttlMs: number;
  lease?: WriterLeaseRef;
  /** Largest number of ops in one script call (default 1000); bigger batches are chunked, still one round trip. */
  maxOpsPerCall?: number;
  /** Largest payload of one script call in bytes (default 8 MiB). */
  maxBytesPerCall?: number;
}

/** The batch was refused because this instance does not hold the writer lease (nothing was written). */
export class LeaseLostError extends Error {
  override readonly name = "LeaseLostError";
  constructor(message = "writer lease lost: batch not applied") {
    super(message);
  }
}

/**
 * KEYS: [leaseKey]? then one key per op. ARGV[1] = "1" when KEYS[1] is the lease key, ARGV[2] = token,
 * ARGV[3] = TTL in ms ("0": none), then two ARGV per op: a code and a value.
 * Codes: s = SET (with PX ttl when ttl > 0), p = SET without expiry, d = DEL, e = DEL if GET equals value.
 */
const APPLY_SCRIPT = new LuaScript(`local first = 1
if ARGV[1] == '1' then
  if redis.call('GET', KEYS[1]) ~= ARGV[2] then
    return redis.error_reply('LEASE_LOST')
  end
  first = 2
end
local ttl = tonumber(ARGV[3])
local a = 4
for i = first, #KEYS do
  local key = KEYS[i]
  local code = ARGV[a]
  if code == 's' then
    if ttl > 0 then
      redis.call('SET', key, ARGV[a + 1], 'PX', ttl)
    else
      redis.call('SET', key, ARGV[a + 1])
    end
  elseif code == 'p' then
    redis.call('SET', key, ARGV[a + 1])
  elseif code == 'd' then
    redis.call('DEL', key)
  elseif code == 'e' then
    if redis.call('GET', key) == ARGV[a + 1] then
      redis.call('DEL', key)
    end
  end
  a = a + 2
end
return #KEYS - first + 1
`);

/** Single-key compare-and-delete, for Cluster. */
const DEL_IF_EQUALS_SCRIPT = new LuaScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`);

const MGET_CHUNK = 1000;

type PipelineResult = [Error | null, unknown][] | null;

export class StoreWriter {
  readonly ttlMs: number;
  private readonly lease: WriterLeaseRef | undefined;
  private readonly maxOps: number;
  private readonly maxBytes: number;

  constructor(
    readonly client: RedisClient,
    opts: StoreWriterOptions,
  ) {
    this.ttlMs = opts.ttlMs > 0 ? Math.max(1, Math.round(opts.ttlMs)) : 0;
    this.lease = opts.lease;
    this.maxOps = Math.max(1, opts.maxOpsPerCall ?? 1000);
    this.maxBytes = Math.max(1, opts.maxBytesPerCall ?? 8 * 1024 * 1024);
  }

  /** GET of every key in one round trip (MGET chunks on a single node, per-node GET pipelines on a cluster). */
  async readMany(keys: string[]): Promise<(string | null)[]> {
    if (keys.length === 0) return [];
    const client = this.client;
    if (isCluster(client)) return await readManyCluster(client, keys);
    const pipe = client.pipeline();
    for (let i = 0; i < keys.length; i += MGET_CHUNK) pipe.mget(keys.slice(i, i + MGET_CHUNK));
    const results = checkPipeline(await pipe.exec());
    return results.flatMap((r) => r as (string | null)[]);
  }

  /**
   * Applies the ops in order, in one round trip. Throws {@link LeaseLostError} (nothing written) when the lease is
   * not held; any other error propagates and the caller retries the batch (every op is idempotent).
   */
  async apply(ops: WriteOp[]): Promise<void> {
    if (ops.length === 0) return;
    const client = this.client;
    let token: string | undefined;
    if (this.lease) {
      token = this.lease.token();
      if (token === undefined) throw new LeaseLostError("writer lease not held: batch not applied");
    }
    if (isCluster(client)) {
      await this.applyCluster(client, ops);
      return;
    }
    await this.applyScripted(client, ops, token);
  }

  private async applyScripted(client: Redis, ops: WriteOp[], token: string | undefined): Promise<void> {
    const head: string[] = [];
    const fixedArgs: string[] = [this.lease ? "1" : "0", token ?? "", String(this.ttlMs)];
    if (this.lease) head.push(this.lease.key);
    const calls: { keys: string[]; args: string[] }[] = [];
    let keys = [...head];
    let args = [...fixedArgs];
    let bytes = 0;
    let count = 0;
    for (const op of ops) {
      const size = op.key.length + (op.op === "del" ? 0 : op.value.length);
      if (count > 0 && (count >= this.maxOps || bytes + size > this.maxBytes)) {
        calls.push({ keys, args });
        keys = [...head];
        args = [...fixedArgs];
        bytes = 0;
        count = 0;
      }
      keys.push(op.key);
      if (op.op === "set") args.push(op.ttl === false ? "p" : "s", op.value);
      else if (op.op === "del") args.push("d", "");
      else args.push("e", op.value);
      bytes += size;
      count++;
    }
    calls.push({ keys, args });

    let start = 0;
    let reload = false;
    for (;;) {
      const pipe = client.pipeline();
      if (reload) pipe.script("LOAD", APPLY_SCRIPT.source);
      for (const call of calls.slice(start)) {
        pipe.evalsha(APPLY_SCRIPT.sha, call.keys.length, ...call.keys, ...call.args);
      }
      const results = await pipe.exec();
      if (!results) throw new Error("Redis pipeline was discarded");
      const offset = reload ? 1 : 0;
      if (reload && results[0]?.[0]) throw results[0][0];
      const failed = results.findIndex(([err], i) => i >= offset && Boolean(err));
      if (failed < 0) return;
      const err = results[failed]![0]!;
      if (isNoScript(err) && !reload) {
        // The server lost its script cache (restart, failover, SCRIPT FLUSH): the calls from this one on did not
        // run. Load the script and send them again, in the same order.
        start += failed - offset;
        reload = true;
        continue;
      }
      if (/\bLEASE_LOST\b/.test(err.message)) throw new LeaseLostError();
      throw err;
    }
  }

  private async applyCluster(cluster: Cluster, ops: WriteOp[]): Promise<void> {
    const groups = groupBySlotOwner(cluster, ops, (op) => op.key);
    const settled = await Promise.allSettled(groups.map((group) => this.applyClusterGroup(cluster, group, false)));
    for (const s of settled) if (s.status === "rejected") throw s.reason;
  }

  private async applyClusterGroup(cluster: Cluster, ops: WriteOp[], reload: boolean): Promise<void> {
    const pipe = cluster.pipeline();
    if (reload) pipe.script("LOAD", DEL_IF_EQUALS_SCRIPT.source);
    for (const op of ops) {
      if (op.op === "set") {
        if (op.ttl !== false && this.ttlMs > 0) pipe.set(op.key, op.value, "PX", this.ttlMs);
        else pipe.set(op.key, op.value);
      } else if (op.op === "del") {
        pipe.del(op.key);
      } else {
        pipe.evalsha(DEL_IF_EQUALS_SCRIPT.sha, 1, op.key, op.value);
      }
    }
    const results = await pipe.exec();
    if (!results) throw new Error("Redis pipeline was discarded");
    const offset = reload ? 1 : 0;
    if (reload && results[0]?.[0]) throw results[0][0];
    const noScript = results.findIndex(([err], i) => i >= offset && Boolean(err) && isNoScript(err));
    if (noScript >= 0 && !reload) {
      // Replaying the suffix in order gives the same final state: SET and DEL are idempotent, and each
      // compare-and-delete is evaluated again after the ops that precede it.
      await this.applyClusterGroup(cluster, ops.slice(noScript - offset), true);
      return;
    }
    const failed = results.find(([err], i) => i >= offset && Boolean(err));
    if (failed) throw failed[0];
  }
}

async function readManyCluster(cluster: Cluster, keys: string[]): Promise<(string | null)[]> {
  const out: (string | null)[] = new Array(keys.length).fill(null);
  const indexes = keys.map((_, i) => i);
  const groups = groupBySlotOwner(cluster, indexes, (i) => keys[i]!);
  const settled = await Promise.allSettled(
    groups.map(async (group) => {
      const pipe = cluster.pipeline();
      for (const i of group) pipe.get(keys[i]!);
      const results = checkPipeline(await pipe.exec());
      group.forEach((i, n) => {
        out[i] = results[n] as string | null;
      });
    }),
  );
  for (const s of settled) if (s.status === "rejected") throw s.reason;
  return out;
}

/** The replies of a pipeline, throwing its first error. */
function checkPipeline(results: PipelineResult): unknown[] {
  if (!results) throw new Error("Redis pipeline was discarded");
  return results.map(([err, value]) => {
    if (err) throw err;
    return value;
  });
}
