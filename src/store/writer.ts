/**
 * The batch applier: every Redis write of the replicator goes through {@link StoreWriter.apply}, one round trip
 * per batch (DESIGN.md §6 "Writes").
 *
 * Single node and Sentinel: one EVALSHA of {@link APPLY_SCRIPT} per batch (larger batches are split into chunks
 * sent in one pipeline). With a lease configured the script first checks that the lease key still holds our
 * token and writes nothing otherwise ("fencing", DESIGN.md §6 "Writer lease"): a writer that was cut off and
 * reconnects after losing the lease cannot write. The check and the writes are one atomic script.
 *
 * Cluster: the keys live in many slots, so a script cannot cover them. One pipeline of single-key commands (SET /
 * DEL / a one-key EVALSHA for delIfEquals) per master, sent on that master's own connection, all masters in
 * parallel. Ops a master redirects (MOVED after a failover or a resharding, ASK during a slot migration) or fails
 * are sent again one by one through the cluster client, which follows redirects (at most REDIS_MAX_REDIRECTS), in
 * their original order per key. The lease is timing-based only: the batch is refused when the lease's token()
 * says it is not held, but nothing is checked on the server.
 *
 * Sentinel and Cluster: a batch also waits for a replica's acknowledgement (see acks.ts), so a failover cannot
 * lose a write the caller was told succeeded.
 */
import type { ChainableCommander, Cluster, Redis } from "ioredis";
import { ACK_GRACE_MS, type AckOptions, type AckPlan, NotReplicatedError, ReplicaAcks } from "./acks.js";
import { groupByMaster } from "./cluster.js";
import { followSentinelMaster, isCluster, type RedisClient } from "./connect.js";
import type { StoreLog } from "./log.js";
import { isNoScript, LuaScript } from "./script.js";

export { ACK_GRACE_MS, NotReplicatedError };

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
  /**
   * Replica acknowledgements (acks.ts). Default: on for Sentinel and Cluster (see {@link replicaAcks}), off for a
   * single node; `false`: off.
   */
  acks?: Partial<AckOptions> | false;
  log?: StoreLog;
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
  /** Replica acknowledgements, or undefined (single node, or turned off). */
  readonly acks: ReplicaAcks | undefined;

  constructor(
    readonly client: RedisClient,
    opts: StoreWriterOptions,
  ) {
    this.ttlMs = opts.ttlMs > 0 ? Math.max(1, Math.round(opts.ttlMs)) : 0;
    this.lease = opts.lease;
    this.maxOps = Math.max(1, opts.maxOpsPerCall ?? 1000);
    this.maxBytes = Math.max(1, opts.maxBytesPerCall ?? 8 * 1024 * 1024);
    this.acks = opts.acks === false ? undefined : replicaAcks(client, opts.acks, opts.log);
  }

  /** GET of every key in one round trip (MGET chunks on a single node, per-master GET pipelines on a cluster). */
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
      const plan = this.acks?.plan(client) ?? NO_ACKS;
      const pipe = client.pipeline();
      this.acks?.begin(pipe, plan);
      if (reload) pipe.script("LOAD", APPLY_SCRIPT.source);
      for (const call of calls.slice(start)) {
        pipe.evalsha(APPLY_SCRIPT.sha, call.keys.length, ...call.keys, ...call.args);
      }
      this.acks?.end(pipe, plan);
      const results = await pipe.exec();
      if (!results) throw new Error("Redis pipeline was discarded");
      const role = plan.role ? reply(results[0]) : undefined;
      const wait = plan.want > 0 ? reply(results.at(-1)) : undefined;
      const first = (plan.role ? 1 : 0) + (reload ? 1 : 0);
      const end = results.length - (plan.want > 0 ? 1 : 0);
      if (reload && results[first - 1]?.[0]) throw results[first - 1]![0];
      let failed = -1;
      for (let i = first; i < end; i++) {
        if (results[i]![0]) {
          failed = i;
          break;
        }
      }
      if (failed < 0) {
        await this.acks?.settle(client, plan, role, wait);
        return;
      }
      const err = results[failed]![0]!;
      if (isNoScript(err) && !reload) {
        // The server lost its script cache (restart, failover, SCRIPT FLUSH): the calls from this one on did not
        // run. Load the script and send them again, in the same order.
        start += failed - first;
        reload = true;
        continue;
      }
      if (/\bLEASE_LOST\b/.test(err.message)) throw new LeaseLostError();
      throw err;
    }
  }

  private async applyCluster(cluster: Cluster, ops: WriteOp[]): Promise<void> {
    const groups = groupByMaster(cluster, ops, (op) => op.key);
    const redo: WriteOp[] = [];
    const settled = await Promise.allSettled(
      groups.map(async ({ node, items }) => {
        if (!node) {
          redo.push(...items);
          return;
        }
        redo.push(...(await this.applyOnNode(node, items)));
      }),
    );
    let failure: unknown;
    for (const s of settled) if (s.status === "rejected") failure ??= s.reason;
    if (redo.length > 0) {
      cluster.refreshSlotsCache();
      await this.applyRedirected(cluster, redo);
      // Those ops went to whichever master now serves them: confirm every master's replica has what we sent it.
      const acks = this.acks;
      if (acks) {
        const ready = cluster.nodes("master").filter((node) => node.status === "ready");
        await Promise.all(ready.map((node) => acks.confirm(node)));
      }
    }
    if (failure !== undefined) throw failure;
  }

  /**
   * One pipeline on one master's connection. Returns the ops to send again through the cluster client: every op
   * that failed (MOVED, ASK, a closed connection, …) and, to keep the order per key, the later ops on its key.
   */
  private async applyOnNode(node: Redis, ops: WriteOp[]): Promise<WriteOp[]> {
    const plan = this.acks?.plan(node) ?? NO_ACKS;
    const pipe = node.pipeline();
    this.acks?.begin(pipe, plan);
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
    this.acks?.end(pipe, plan);
    let results: PipelineResult;
    try {
      results = await pipe.exec();
    } catch {
      return ops;
    }
    if (!results) return ops;
    const offset = plan.role ? 1 : 0;
    const failedKeys = new Set<string>();
    const redo: WriteOp[] = [];
    ops.forEach((op, i) => {
      const [err] = results[i + offset] ?? [new Error("no reply")];
      if (err || failedKeys.has(op.key)) {
        failedKeys.add(op.key);
        redo.push(op);
      }
    });
    await this.acks?.settle(
      node,
      plan,
      plan.role ? reply(results[0]) : undefined,
      plan.want > 0 ? reply(results.at(-1)) : undefined,
    );
    return redo;
  }

  /** Sends ops one by one through the cluster client (it follows MOVED/ASK), in order per key, keys in parallel. */
  private async applyRedirected(cluster: Cluster, ops: WriteOp[]): Promise<void> {
    const byKey = new Map<string, WriteOp[]>();
    for (const op of ops) {
      const list = byKey.get(op.key);
      if (list) list.push(op);
      else byKey.set(op.key, [op]);
    }
    const settled = await Promise.allSettled(
      [...byKey.values()].map(async (list) => {
        for (const op of list) {
          if (op.op === "set") {
            if (op.ttl !== false && this.ttlMs > 0) await cluster.set(op.key, op.value, "PX", this.ttlMs);
            else await cluster.set(op.key, op.value);
          } else if (op.op === "del") {
            await cluster.del(op.key);
          } else {
            await DEL_IF_EQUALS_SCRIPT.run(cluster, [op.key], [op.value]);
          }
        }
      }),
    );
    for (const s of settled) if (s.status === "rejected") throw s.reason;
  }
}

const NO_ACKS: AckPlan = { role: false, want: 0, timeoutMs: 0 };

/**
 * The replica acknowledgements a client needs (acks.ts): on for Sentinel and Cluster, where a replica can be
 * promoted (WAIT timeout a third of the command timeout, 100 ms to 1 s; grace {@link ACK_GRACE_MS}), off for a single
 * node unless `opts` asks for them.
 */
export function replicaAcks(client: RedisClient, opts?: Partial<AckOptions>, log?: StoreLog): ReplicaAcks | undefined {
  const failover = isCluster(client) || (client.options.sentinels?.length ?? 0) > 0;
  if (!failover && !opts) return undefined;
  const commandTimeout = isCluster(client)
    ? client.options.redisOptions?.commandTimeout
    : (client as Redis).options.commandTimeout;
  return new ReplicaAcks(client, {
    timeoutMs: Math.min(1000, Math.max(100, (commandTimeout ?? 2000) / 3)),
    graceMs: ACK_GRACE_MS,
    log,
    // Through Sentinel, unacknowledged writes may mean we are talking to a master a failover replaced.
    onShortfall: isCluster(client) ? undefined : () => void followSentinelMaster(client as Redis, log).catch(() => {}),
    ...opts,
  });
}

/**
 * Runs single-key commands on `key`'s master in one round trip, durably (with replica acknowledgements where
 * {@link replicaAcks} applies): `build` adds them to the pipeline; resolves with their replies (an Error where one
 * failed); throws {@link NotReplicatedError} when the replicas did not acknowledge. For the lease.
 */
export async function durably(
  client: RedisClient,
  key: string,
  build: (pipe: ChainableCommander) => void,
  acks: ReplicaAcks | undefined = replicaAcks(client),
): Promise<unknown[]> {
  let node: Redis | undefined;
  if (isCluster(client)) node = groupByMaster(client, [key], (k) => k)[0]?.node;
  else node = client;
  if (!node || !acks) {
    // Unknown slot owner (no slot map yet): through the cluster client, without acknowledgements.
    const pipe = client.pipeline();
    build(pipe);
    return ((await pipe.exec()) ?? []).map(([err, value]) => err ?? value);
  }
  const plan = acks.plan(node);
  const pipe = node.pipeline();
  acks.begin(pipe, plan);
  build(pipe);
  acks.end(pipe, plan);
  const results = await pipe.exec();
  if (!results) throw new Error("Redis pipeline was discarded");
  const replies = results.map(([err, value]) => err ?? value);
  const from = plan.role ? 1 : 0;
  const to = replies.length - (plan.want > 0 ? 1 : 0);
  const own = replies.slice(from, to);
  if (isCluster(client) && own.some((r) => r instanceof Error && /^(MOVED|ASK) /.test(r.message))) {
    // The slot moved (a failover or a resharding): through the cluster client, which follows the redirect.
    client.refreshSlotsCache();
    const pipe = client.pipeline();
    build(pipe);
    const again = ((await pipe.exec()) ?? []).map(([err, value]) => err ?? value);
    const ready = client.nodes("master").filter((n) => n.status === "ready");
    await Promise.all(ready.map((n) => acks.confirm(n)));
    return again;
  }
  await acks.settle(node, plan, plan.role ? replies[0] : undefined, plan.want > 0 ? replies.at(-1) : undefined);
  return own;
}

/** A pipeline reply: the value, or the Error. */
function reply(entry: [Error | null, unknown] | undefined): unknown {
  if (!entry) return new Error("no reply");
  return entry[0] ?? entry[1];
}

async function readManyCluster(cluster: Cluster, keys: string[]): Promise<(string | null)[]> {
  const out: (string | null)[] = new Array(keys.length).fill(null);
  const indexes = keys.map((_, i) => i);
  const groups = groupByMaster(cluster, indexes, (i) => keys[i]!);
  const redo: number[] = [];
  await Promise.all(
    groups.map(async ({ node, items }) => {
      if (!node) {
        redo.push(...items);
        return;
      }
      const pipe = node.pipeline();
      for (const i of items) pipe.get(keys[i]!);
      let results: PipelineResult;
      try {
        results = await pipe.exec();
      } catch {
        results = null;
      }
      items.forEach((i, n) => {
        const entry = results?.[n];
        if (!entry || entry[0]) redo.push(i);
        else out[i] = entry[1] as string | null;
      });
    }),
  );
  if (redo.length > 0) {
    cluster.refreshSlotsCache();
    // Redirected or failed reads: one by one through the cluster client, which follows MOVED/ASK.
    const values = await Promise.all(redo.map((i) => cluster.get(keys[i]!)));
    redo.forEach((i, n) => {
      out[i] = values[n] ?? null;
    });
  }
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
