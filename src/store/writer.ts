/**
 * The batch applier: every Redis write of the replicator goes through {@link StoreWriter.apply}, one round trip per
 * batch, fenced by the writer lease. How and why: docs/design/writer.md.
 */
import type { ChainableCommander, Cluster, Redis } from "ioredis";
import { ACK_GRACE_MS, type AckOptions, type AckPlan, NotReplicatedError, ReplicaAcks } from "./acks.js";
import { groupByMaster, nodeKey } from "./cluster.js";
import {
  clusterReady,
  followSentinelMaster,
  isCluster,
  namedDuplicate,
  type RedisClient,
  WRITER_CONNECTION_PREFIX,
} from "./connect.js";
import { errorMessage, type StoreLog } from "./log.js";
import { LuaScript } from "./script.js";

export { ACK_GRACE_MS, NotReplicatedError };

export type WriteOp = (
  | /** `ttl: false`: never expires, whatever the writer's TTL (control keys: marker, cursor). */
  { op: "set"; key: string; value: string | Buffer; ttl?: false; ifStoredKeys?: readonly string[] }
  | { op: "del"; key: string; ifStoredKeys?: readonly string[] }
  /** DEL only if the key still holds `value` (a lookup key now pointing at another entity is kept). */
  | { op: "delIfEquals"; key: string; value: string }
) & {
  /**
   * Applied only once every op of the batch without it is (later ops on its key follow it): an entity's body that
   * drops lookup keys lands after their deletes, so a batch cut short never leaves a body whose replay would not
   * derive them again (docs/design/cluster-fencing.md). On Cluster a second round trip, only when a batch has such
   * ops; elsewhere they are sent last in the same pipeline, whose transactions commit in order.
   */
  last?: true;
};

/**
 * `ifStoredKeys` on the SET or DEL of an entity's body (its first op in the batch): the ops of that entity were
 * computed assuming that the body stored now is absent or has a `keys` member spelled exactly as one of these texts
 * (the same keys, so no other lookup key can point at the entity; JSON texts, never with a raw newline). The fence checks it in the same round trip (see {@link FENCE_SCRIPT}); where it does not hold,
 * nothing of that transaction is written and apply() throws {@link StoredKeysChangedError}. Only a writer with
 * {@link StoreWriter.checksStoredKeys} checks it: any other refuses such ops the same way, before writing anything.
 * docs/design/lookup-keys.md.
 */
export interface WriterLeaseRef {
  key: string;
  /** The token while the lease is held, else undefined (see WriterLease.token()). */
  token: () => string | undefined;
  /**
   * Reads the lease key: true while it holds the token (see WriterLease.confirm()). Where the lease is timing-based
   * (Cluster), it is asked before acting on a sign that another instance may have taken over.
   */
  confirm?: () => Promise<boolean>;
}

export interface StoreWriterOptions {
  /** Expiry of cache writes in ms; 0 = no expiry (plain SET, which also clears an expiry the key had). */
  ttlMs: number;
  lease?: WriterLeaseRef;
  /** Largest number of ops in one transaction (default 1000); bigger batches are chunked, still one round trip. */
  maxOpsPerCall?: number;
  /** Largest payload (keys and values) of one transaction in bytes (default 8 MiB). */
  maxBytesPerCall?: number;
  /**
   * Replica acknowledgements (acks.ts). Default: on for Sentinel and Cluster (see {@link replicaAcks}), off for a
   * single node; `false`: off.
   */
  acks?: Partial<AckOptions> | false;
  /**
   * Cluster only: write over connections of this writer's own, with this name (connect.ts's writerConnectionName),
   * and close the other writers' connections on each master before the first write there (fenceOtherWriters).
   * Call close() when done.
   */
  connectionName?: string;
  log?: StoreLog;
}

/**
 * The batch was refused because this instance does not hold the writer lease: nothing of the refused transaction was
 * written (of a batch split into several, the transactions before it were, while the lease was still ours).
 */
export class LeaseLostError extends Error {
  override readonly name = "LeaseLostError";
  constructor(message = "writer lease lost: batch not applied") {
    super(message);
  }
}

/**
 * The fence (KEYS[1] = the lease key, ARGV[1] = our token; then one pair KEYS[i], ARGV[i] per `ifStoredKeys` check
 * of the transaction: an entity's id key and the `keys` texts assumed, one per line), sent right after `WATCH lease` and before the
 * transaction. 1: the lease key holds our token and every check holds. 0: the lease key does not hold our token, and
 * the script has modified the key without changing what it says, so that the WATCH aborts the EXEC that follows:
 * another holder's value is rewritten with KEEPTTL (same value, same expiry), an absent key is created and deleted
 * again (absent again at once), a key of another type gets its own remaining time to live again (or one that is
 * removed again at once). An array: the lease is ours but the checks at these positions (1-based) do not hold; the
 * lease key is rewritten with KEEPTTL (unchanged), so the EXEC aborts too.
 *
 * A check holds when the stored body is absent, or when it names exactly one member "keys" (spelled plainly: no
 * escaped ASCII letter anywhere, no second occurrence of `"keys"`) and that member's value is one of the assumed
 * texts byte for byte. A JSON object's member value is self-delimiting, so that is then the member JSON.parse would read (or the
 * body has no top-level member "keys", and no lookup key to remove). Anything else only fails the check: the caller
 * then reads the body (docs/design/lookup-keys.md).
 *
 * Always sent as EVAL with the source, never EVALSHA: a NOSCRIPT reply (a flushed script cache) would leave the key
 * untouched and let the EXEC commit unfenced.
 */
const FENCE_SCRIPT = `local function keysAre(key, wants)
  local body = redis.pcall('GET', key)
  if body == false then return true end
  if type(body) ~= 'string' then return false end
  local found
  local from = 1
  while true do
    local at = string.find(body, 'keys"', from, true)
    if at == nil then break end
    if string.byte(body, at - 1) == 34 then
      if found then return false end
      found = at - 1
    end
    from = at + 5
  end
  if found == nil then return false end
  local same = false
  for want in string.gmatch(wants, '[^\\n]+') do
    if string.sub(body, found + 6, found + 6 + #want) == ':' .. want then same = true end
  end
  if not same then return false end
  from = 1
  while true do
    local at = string.find(body, '\\\\u00', from, true)
    if at == nil then return true end
    local c = string.byte(body, at + 4)
    if c == 54 or c == 55 then return false end
    from = at + 4
  end
end
local v = redis.pcall('GET', KEYS[1])
if v == ARGV[1] then
  local stale = {}
  for i = 2, #KEYS do
    if not keysAre(KEYS[i], ARGV[i]) then stale[#stale + 1] = i - 1 end
  end
  if #stale == 0 then return 1 end
  redis.call('SET', KEYS[1], v, 'KEEPTTL')
  return stale
end
if v == false then
  redis.call('SET', KEYS[1], '', 'PX', 1)
  redis.call('DEL', KEYS[1])
elseif type(v) == 'string' then
  redis.call('SET', KEYS[1], v, 'KEEPTTL')
else
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[1], ttl)
  else
    redis.call('PEXPIRE', KEYS[1], 86400000)
    redis.call('PERSIST', KEYS[1])
  end
end
return 0
`;

/**
 * The entities whose {@link WriteOp} `ifStoredKeys` did not hold (their id keys): nothing of the transactions that
 * carried them was written. Read their bodies and compute their ops again. Not a Redis failure.
 */
export class StoredKeysChangedError extends Error {
  override readonly name = "StoredKeysChangedError";
  constructor(readonly keys: readonly string[]) {
    super(`the stored keys of ${keys.length} entities differ from what the batch assumed: batch not applied`);
  }
}

/** Single-key compare-and-delete (EVAL with the source in a transaction; EVALSHA, then EVAL, on Cluster). */
const DEL_IF_EQUALS_SCRIPT = new LuaScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`);

const MGET_CHUNK = 1000;
/** Most keys in one MSET or DEL of a transaction (keeps each command's argument list short). */
const MAX_KEYS_PER_COMMAND = 512;

/** Reply positions of one transaction in the pipeline (fence: -1 without a lease), and the id keys it checks. */
interface Transaction {
  fence: number;
  multi: number;
  exec: number;
  checked: string[];
}

type PipelineResult = [Error | null, unknown][] | null;

export class StoreWriter {
  readonly ttlMs: number;
  private readonly lease: WriterLeaseRef | undefined;
  private readonly maxOps: number;
  private readonly maxBytes: number;
  /** Replica acknowledgements, or undefined (single node, or turned off). */
  readonly acks: ReplicaAcks | undefined;
  /** What the writes go through: `client`, or on a Cluster with a connection name, a client of this writer's own. */
  private readonly conn: RedisClient;
  private readonly connectionName: string | undefined;
  /** Masters (`host:port`) whose other writers' connections this writer has closed. */
  private readonly fenced = new Set<string>();
  private readonly log: StoreLog | undefined;
  private closed = false;

  constructor(
    readonly client: RedisClient,
    opts: StoreWriterOptions,
  ) {
    this.ttlMs = opts.ttlMs > 0 ? Math.max(1, Math.round(opts.ttlMs)) : 0;
    this.lease = opts.lease;
    this.maxOps = Math.max(1, opts.maxOpsPerCall ?? 1000);
    this.maxBytes = Math.max(1, opts.maxBytesPerCall ?? 8 * 1024 * 1024);
    this.log = opts.log;
    this.connectionName = isCluster(client) ? opts.connectionName : undefined;
    this.conn =
      isCluster(client) && this.connectionName !== undefined
        ? namedDuplicate(client, this.connectionName, opts.log)
        : client;
    this.acks = opts.acks === false ? undefined : replicaAcks(this.conn, opts.acks, opts.log);
  }

  /** Whether apply() checks the `ifStoredKeys` of ops (single node and Sentinel, fenced by a lease). */
  get checksStoredKeys(): boolean {
    return this.lease !== undefined && !isCluster(this.client);
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
    if (this.closed) throw new LeaseLostError("the writer was closed: batch not applied");
    const client = this.client;
    let token: string | undefined;
    if (this.lease) {
      token = this.lease.token();
      if (token === undefined) throw new LeaseLostError("writer lease not held: batch not applied");
    }
    if (!this.checksStoredKeys) {
      const unchecked = ops.filter((op) => op.op !== "delIfEquals" && op.ifStoredKeys !== undefined);
      if (unchecked.length > 0) throw new StoredKeysChangedError(unchecked.map((op) => op.key));
    }
    const [first, last] = phases(ops);
    if (isCluster(this.conn)) {
      await this.applyCluster(this.conn, first);
      if (last.length > 0) await this.applyCluster(this.conn, last);
      return;
    }
    await this.applyTransactions(client as Redis, last.length > 0 ? [...first, ...last] : first, token);
  }

  /**
   * Single node and Sentinel: one pipeline of transactions (see the module comment), then the replica
   * acknowledgements. Replies are checked transaction by transaction, in order; the first failure is thrown.
   */
  private async applyTransactions(client: Redis, ops: WriteOp[], token: string | undefined): Promise<void> {
    const lease = this.lease;
    const plan = this.acks?.plan(client) ?? NO_ACKS;
    const pipe = client.pipeline();
    this.acks?.begin(pipe, plan);
    const txs: Transaction[] = [];
    for (const chunk of this.chunks(ops)) {
      let fence = -1;
      const checked: string[] = [];
      if (lease && token !== undefined) {
        const texts: string[] = [];
        for (const op of chunk) {
          if (op.op === "delIfEquals" || op.ifStoredKeys === undefined) continue;
          checked.push(op.key);
          texts.push(op.ifStoredKeys.join("\n"));
        }
        pipe.watch(lease.key);
        fence = pipe.length;
        pipe.eval(FENCE_SCRIPT, 1 + checked.length, lease.key, ...checked, token, ...texts);
      }
      // MULTI and EXEC as plain commands: ioredis's own pipeline.multi() would turn the next pipeline.exec() into
      // the EXEC command instead of sending the pipeline.
      const multi = pipe.length;
      pipe.call("multi");
      this.queueOps(pipe, chunk);
      txs.push({ fence, multi, exec: pipe.length, checked });
      pipe.call("exec");
    }
    this.acks?.end(pipe, plan);
    const results = await pipe.exec();
    if (!results) throw new Error("Redis pipeline was discarded");
    let failure: Error | undefined;
    const stale: string[] = [];
    let unclean = false;
    for (const tx of txs) {
      const exec = reply(results[tx.exec]);
      if (!Array.isArray(exec) && exec !== null && !(exec instanceof Error && /^EXECABORT\b/.test(exec.message))) {
        unclean = true;
      }
      const txFailure = transactionFailure(results, tx);
      if (txFailure instanceof StoredKeysChangedError) stale.push(...txFailure.keys);
      else failure ??= txFailure;
    }
    // An EXEC that did not run (the connection closed, a timeout, a refusal) may leave this connection watching the
    // lease key, or even inside MULTI: clear both. Queued now, so before anything sent later on the connection; not
    // awaited (after a reconnect it is needless, and it must not hold up the error); its errors are harmless.
    if (unclean) void client.pipeline().call("discard").call("unwatch").exec().catch(noop);
    if (failure) throw failure;
    if (stale.length > 0) throw new StoredKeysChangedError(stale);
    await this.acks?.settle(
      client,
      plan,
      plan.role ? reply(results[0]) : undefined,
      plan.want > 0 ? reply(results.at(-1)) : undefined,
    );
  }

  /** The ops in chunks of at most maxOpsPerCall ops and maxBytesPerCall bytes (a chunk has one op at least). */
  private chunks(ops: WriteOp[]): WriteOp[][] {
    const chunks: WriteOp[][] = [];
    let chunk: WriteOp[] = [];
    let bytes = 0;
    for (const op of ops) {
      const size = op.key.length + (op.op === "del" ? 0 : op.value.length);
      if (chunk.length > 0 && (chunk.length >= this.maxOps || bytes + size > this.maxBytes)) {
        chunks.push(chunk);
        chunk = [];
        bytes = 0;
      }
      chunk.push(op);
      bytes += size;
    }
    chunks.push(chunk);
    return chunks;
  }

  /**
   * Queues the ops in order: a run of SETs without expiry as one MSET (a single one as SET), a run of DELs as one
   * DEL, a SET with expiry as `SET key value PX ttl`, a compare-and-delete as a one-key EVAL. MSET is what makes
   * this path cheap: one command for many keys costs Redis and ioredis far less than one SET per key.
   */
  private queueOps(pipe: ChainableCommander, ops: WriteOp[]): void {
    let sets: (string | Buffer)[] = [];
    let dels: string[] = [];
    const flush = () => {
      if (sets.length === 2) pipe.set(sets[0]!, sets[1]!);
      else if (sets.length > 0) pipe.mset(...sets);
      if (dels.length > 0) pipe.del(...dels);
      sets = [];
      dels = [];
    };
    for (const op of ops) {
      if (op.op === "set" && (op.ttl === false || this.ttlMs === 0)) {
        if (dels.length > 0 || sets.length >= 2 * MAX_KEYS_PER_COMMAND) flush();
        sets.push(op.key, op.value);
      } else if (op.op === "del") {
        if (sets.length > 0 || dels.length >= MAX_KEYS_PER_COMMAND) flush();
        dels.push(op.key);
      } else {
        flush();
        if (op.op === "set") pipe.set(op.key, op.value, "PX", this.ttlMs);
        else pipe.eval(DEL_IF_EQUALS_SCRIPT.source, 1, op.key, op.value);
      }
    }
    flush();
  }

  /**
   * Cluster: a pipeline per master, all in parallel, then the ops that failed or were redirected again (ASK: to the
   * importing master, after ASKING; MOVED or a failure: to the slot's master after a slot map refresh), at most
   * REDIS_MAX_REDIRECTS rounds. Every round goes through {@link applyOnNode}, which re-checks the lease just before it
   * sends; nothing is ever left to the cluster client's own routing, whose queues and retries could send an op later.
   */
  private async applyCluster(cluster: Cluster, ops: WriteOp[]): Promise<void> {
    // Only a client never connected waits to be: one whose connections were closed (by a successor fencing this
    // writer) must fail now and read the lease (applyOnNode), not reconnect and write.
    if (cluster.status === "wait") await clusterReady(cluster);
    const rounds = 1 + Math.max(0, cluster.options.maxRedirections ?? 16);
    let pending: Routed[] = ops.map((op) => ({ op }));
    /** Why the last op failed (reported when the rounds run out). */
    let lastError: unknown;
    /** A master's pipeline failed as a whole (its replicas fell short): reported once the rest is done. */
    let failure: unknown;
    for (let round = 0; pending.length > 0; round++) {
      if (round === rounds) throw lastError ?? new Error(`${pending.length} writes not applied after ${rounds} rounds`);
      if (round > 0) await refreshSlots(cluster);
      const redo: Routed[] = [];
      let redirectsOnly = true;
      const settled = await Promise.allSettled(
        routeOps(cluster, pending).map(async ({ node, items, asking }) => {
          const result = node
            ? await this.applyOnNode(node, items, asking)
            : { redo: items, error: new Error("no Redis master is known for the slot of some keys") };
          redo.push(...result.redo);
          if (result.error === undefined) return;
          lastError = result.error;
          if (!/^(MOVED|ASK) /.test(errorMessage(result.error))) redirectsOnly = false;
        }),
      );
      for (const s of settled) {
        if (s.status !== "rejected") continue;
        // The lease is not held any more: stop at once.
        if (s.reason instanceof LeaseLostError) throw s.reason;
        failure ??= s.reason;
      }
      if (redo.length > 0 && !redirectsOnly) {
        await new Promise((r) => setTimeout(r, RETRY_AFTER_FAILURE_MS));
        // A closed connection may be a successor's doing (it closes ours before writing): ask the lease key first.
        if (this.lease?.confirm && !(await this.lease.confirm().catch(() => true))) {
          throw new LeaseLostError("another writer holds the lease: batch not applied");
        }
      }
      pending = redo;
    }
    if (failure !== undefined) throw failure;
  }

  /**
   * One pipeline on one master's connection, sent only while the lease is held, checked just before sending (see
   * the module comment). With `asking`, each op is preceded by ASKING (the master is importing their slots). Returns
   * the ops to send again: every op that failed (MOVED, ASK, a closed connection, …) and, to keep the order per key,
   * the later ops on its key; with the last error. Throws LeaseLostError (nothing sent), or the replicas' shortfall.
   */
  private async applyOnNode(
    node: Redis,
    items: Routed[],
    asking: boolean,
  ): Promise<{ redo: Routed[]; error?: unknown }> {
    try {
      // A connection that is not ready would queue the writes and send them whenever it connects: make it ready first.
      if (node.status !== "ready") await node.ping();
      if (node.status !== "ready") throw new Error(`Redis ${nodeKey(node)} is not connected`);
      await this.fenceOtherWriters(node);
    } catch (err) {
      return { redo: items, error: err };
    }
    if (this.lease && this.lease.token() === undefined)
      throw new LeaseLostError("writer lease not held: batch not applied");
    const plan = this.acks?.plan(node) ?? NO_ACKS;
    const pipe = node.pipeline();
    this.acks?.begin(pipe, plan);
    const replyAt: number[] = [];
    for (const { op } of items) {
      if (asking) pipe.call("ASKING");
      replyAt.push(pipe.length);
      if (op.op === "set") {
        if (op.ttl !== false && this.ttlMs > 0) pipe.set(op.key, op.value, "PX", this.ttlMs);
        else pipe.set(op.key, op.value);
      } else if (op.op === "del") {
        pipe.del(op.key);
      } else {
        pipe.eval(DEL_IF_EQUALS_SCRIPT.source, 1, op.key, op.value);
      }
    }
    this.acks?.end(pipe, plan);
    let results: PipelineResult;
    try {
      results = await pipe.exec();
    } catch (err) {
      return { redo: items, error: err };
    }
    if (!results) return { redo: items, error: new Error("Redis pipeline was discarded") };
    const failed = new Map<string, string | undefined>();
    const redo: Routed[] = [];
    let error: unknown;
    items.forEach(({ op }, i) => {
      const [err] = results[replyAt[i]!] ?? [new Error("no reply")];
      if (err && !failed.has(op.key)) failed.set(op.key, /^ASK \d+ (\S+)/.exec(err.message)?.[1]);
      if (err) error = err;
      if (failed.has(op.key)) redo.push({ op, ask: failed.get(op.key) });
    });
    await this.acks?.settle(
      node,
      plan,
      plan.role ? reply(results[0]) : undefined,
      plan.want > 0 ? reply(results.at(-1)) : undefined,
    );
    return { redo, error };
  }

  /**
   * With {@link StoreWriterOptions.connectionName}: before the first write to a master, closes every connection of
   * another writer there (named by connect.ts's writerConnectionName), once per master and writer. Whatever a deposed
   * writer still had in flight on them (commands sent into a network partition that arrive when it heals) is then
   * refused by the server. An ACL that forbids CLIENT LIST or CLIENT KILL disables this (logged once).
   */
  private async fenceOtherWriters(node: Redis): Promise<void> {
    const name = this.connectionName;
    const address = nodeKey(node);
    if (name === undefined || this.fenced.has(address)) return;
    try {
      const others = otherWriterConnections(String(await node.call("CLIENT", "LIST", "TYPE", "normal")), name);
      if (others.length > 0) {
        const pipe = node.pipeline();
        for (const c of others) pipe.call("CLIENT", "KILL", "ID", c.id);
        // A connection gone meanwhile ("No such client") is fine; a refusal is not.
        const refused = (await pipe.exec())?.find(([err]) => err && /^NOPERM\b/.test(err.message));
        if (refused) throw refused[0];
        this.log?.info(
          { redis: address, writers: [...new Set(others.map((c) => c.name))] },
          "closed another writer's connections before writing",
        );
      }
    } catch (err) {
      if (!/^NOPERM\b/.test(errorMessage(err))) throw err;
      if (this.fenced.size === 0) {
        this.log?.warn(
          { err: errorMessage(err) },
          "cannot close a deposed writer's connections (CLIENT LIST/KILL not allowed): its late writes are not fenced",
        );
      }
    }
    this.fenced.add(address);
  }

  /**
   * Cluster with {@link StoreWriterOptions.connectionName}: closes the other writers' connections on every master now,
   * rather than before the first write to each: a deposed writer that has not noticed yet (its lease key vanished
   * with a master's data) then finds its connections closed, and asks the lease key before it writes again.
   */
  async fenceOthers(): Promise<void> {
    const cluster = this.conn;
    if (!isCluster(cluster) || this.connectionName === undefined) return;
    await clusterReady(cluster);
    for (const node of cluster.nodes("master")) {
      if (node.status !== "ready") await node.ping();
      await this.fenceOtherWriters(node);
    }
  }

  /** Closes this writer's own connections (see {@link StoreWriterOptions.connectionName}); anything in flight fails. */
  close(): void {
    this.closed = true;
    if (this.conn !== this.client) this.conn.disconnect();
  }
}

/** The ops without `last`, and those with it or after one on the same key (see {@link WriteOp}), each in order. */
export function phases(ops: WriteOp[]): [WriteOp[], WriteOp[]] {
  if (!ops.some((op) => op.last)) return [ops, []];
  const later = new Set<string>();
  const first: WriteOp[] = [];
  const last: WriteOp[] = [];
  for (const op of ops) {
    if (op.last || later.has(op.key)) {
      later.add(op.key);
      last.push(op);
    } else first.push(op);
  }
  return [first, last];
}

/** An op to send (again), with the master to send it to after ASKING when a slot migration redirected it. */
interface Routed {
  op: WriteOp;
  ask?: string;
}

/** After a failure other than a redirect (a closed connection, a failover under way): a pause before the next round. */
const RETRY_AFTER_FAILURE_MS = 100;

/** Groups ops by the master to send them to: an ASK target, or the slot's master (undefined: none known). */
function routeOps(cluster: Cluster, items: Routed[]): { node: Redis | undefined; items: Routed[]; asking: boolean }[] {
  const asked = new Map<string, Routed[]>();
  const direct: Routed[] = [];
  for (const item of items) {
    if (item.ask) {
      const list = asked.get(item.ask) ?? [];
      list.push(item);
      asked.set(item.ask, list);
    } else direct.push(item);
  }
  const groups = groupByMaster(cluster, direct, (item) => item.op.key).map((g) => ({ ...g, asking: false }));
  const byAddress = new Map(cluster.nodes("master").map((node) => [nodeKey(node), node]));
  for (const [address, list] of asked) {
    const node = byAddress.get(address);
    // An importing master we do not know yet: route by slot after the next refresh.
    if (node) groups.push({ node, items: list, asking: true });
    else groups.push({ node: undefined, items: list.map(({ op }) => ({ op })), asking: false });
  }
  return groups;
}

/** Reloads the slot map (errors leave the old one: the next round fails over again). */
async function refreshSlots(cluster: Cluster): Promise<void> {
  await new Promise<void>((resolve) => cluster.refreshSlotsCache(() => resolve()));
}

/** Connections in a CLIENT LIST reply named as another writer's (connect.ts's writerConnectionName), not `own`. */
export function otherWriterConnections(clientList: string, own: string): { id: string; name: string }[] {
  const out: { id: string; name: string }[] = [];
  for (const line of clientList.split("\n")) {
    const id = /(?:^|\s)id=(\d+)/.exec(line)?.[1];
    const name = /(?:^|\s)name=(\S+)/.exec(line)?.[1];
    if (id && name && name !== own && name.startsWith(WRITER_CONNECTION_PREFIX)) out.push({ id, name });
  }
  return out;
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

/**
 * Why one transaction of a batch failed, or undefined when it committed and every command in it succeeded. A
 * transaction Redis aborted (EXEC answered null: the fence found another token or none, or the lease key changed
 * between the WATCH and the EXEC) wrote nothing: LeaseLostError, or StoredKeysChangedError when the fence aborted it
 * for checks that did not hold.
 */
function transactionFailure(results: [Error | null, unknown][], tx: Transaction): Error | undefined {
  const fence = tx.fence < 0 ? 1 : reply(results[tx.fence]);
  const exec = reply(results[tx.exec]);
  if (exec === null) {
    if (tx.fence < 0) return new Error("Redis aborted the transaction (EXEC answered null): batch not applied");
    if (Array.isArray(fence)) return new StoredKeysChangedError(fence.map((i) => tx.checked[Number(i) - 1] ?? ""));
    return fence === 1
      ? new LeaseLostError("the writer lease key changed during the batch: batch not applied")
      : new LeaseLostError();
  }
  if (!Array.isArray(exec)) {
    // Not committed (EXECABORT: a command was refused when queued, e.g. out of memory; or no reply).
    if (fence === 0) return new LeaseLostError();
    return exec instanceof Error ? exec : new Error(`unexpected EXEC reply: ${String(exec)}`);
  }
  // Committed. The fence and MULTI replies can only be wrong here if the server refused them (an ACL that denies
  // EVAL or MULTI): report it, the writes were not fenced.
  if (fence !== 1) return fence instanceof Error ? fence : new Error(`unexpected fence reply: ${String(fence)}`);
  const multi = reply(results[tx.multi]);
  if (multi instanceof Error) return multi;
  return exec.find((r): r is Error => r instanceof Error);
}

function noop(): void {}

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
