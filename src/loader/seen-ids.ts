/**
 * Which entities a load saw, kept in Redis rather than in the replicator: one set per load and kind (on a cluster,
 * sharded over slots so no master holds all of it), so that the loader's memory does not grow with the number of
 * entities (docs/design/loading.md, "Memory"). The eviction asks it about every entity Redis holds; it holds the
 * ids themselves, so no entity is evicted or spared by mistake.
 *
 * The sets expire when a load stops adding to them (a replicator that died mid-load leaves nothing behind for long)
 * and are deleted when the load ends. A set that lost ids before the eviction (Redis lost it, or it expired and was
 * created again) makes the eviction skip: {@link SeenIds.intact}.
 */
import { randomUUID } from "node:crypto";
import type { ChainableCommander } from "ioredis";
import { laneOf } from "../replication/pipeline.js";
import { type RetryContext, withRetry } from "../replication/retry.js";
import { isCluster, type RedisClient } from "../store/connect.js";
import type { EntityKind, KeyScheme } from "../store/keys.js";

/** How long a set outlives the last ids added to it. */
const SEEN_TTL_MS = 60 * 60 * 1000;
/** A member no entity id can be (the REST mapping refuses an empty id): see {@link SeenIds.add}. */
const MARK = "";
/** Sets per load and kind on a cluster (one elsewhere). */
const CLUSTER_SHARDS = 16;

interface Shard {
  ids: string[];
  /** Each id's position in the caller's list. */
  at: number[];
}

export class SeenIds {
  private readonly keys: string[];
  /** Shards that were given ids (and must still exist at the end). */
  private readonly used = new Set<number>();
  /** SMISMEMBER is unknown (Redis before 6.2): one SISMEMBER per id. */
  private oneByOne = false;

  constructor(
    private readonly client: RedisClient,
    scheme: KeyScheme,
    kind: EntityKind,
    private readonly retry: RetryContext,
  ) {
    const token = randomUUID();
    const shards = isCluster(client) ? CLUSTER_SHARDS : 1;
    this.keys = Array.from({ length: shards }, (_, i) => scheme.loadSeen(kind, `${token}-${i}`));
  }

  /** Records ids as seen (retried like the lanes' writes). */
  async add(ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return;
    const byShard = this.group(ids);
    // A set's first write also adds MARK: a set that expired and was created again by later ids lacks it.
    await withRetry("recording the ids a load saw", this.retry, () =>
      this.run(byShard, (pipe, key, some, shard) =>
        pipe.sadd(key, ...(this.used.has(shard) ? some : [...some, MARK])).pexpire(key, SEEN_TTL_MS),
      ),
    );
    for (const shard of byShard.keys()) this.used.add(shard);
  }

  /** Whether each of `ids` was seen, in order. */
  async has(ids: readonly string[]): Promise<boolean[]> {
    const out = new Array<boolean>(ids.length).fill(false);
    if (ids.length === 0) return out;
    const byShard = this.group(ids);
    const replies = await withRetry("reading the ids a load saw", this.retry, async () => {
      if (!this.oneByOne) {
        try {
          const all = await this.run(byShard, (pipe, key, some) => pipe.smismember(key, ...some));
          return new Map([...all].map(([shard, reply]) => [shard, reply[0] as number[]]));
        } catch (err) {
          if (!/unknown command/i.test((err as Error).message)) throw err;
          this.oneByOne = true; // Redis before 6.2
        }
      }
      const each = await this.run(byShard, (pipe, key, some) => {
        for (const id of some) pipe.sismember(key, id);
        return pipe;
      });
      return new Map([...each].map(([shard, reply]) => [shard, reply as number[]]));
    });
    for (const [shard, { ids: asked, at }] of byShard) {
      const flags = replies.get(shard)!;
      for (let i = 0; i < at.length; i++) if (flags[i] === 1 && asked[i] !== MARK) out[at[i]!] = true;
    }
    return out;
  }

  /** Whether every set that was given ids still holds all of them (Redis lost or expired none). */
  async intact(): Promise<boolean> {
    const shards = new Map([...this.used].map((shard): [number, Shard] => [shard, { ids: [], at: [] }]));
    const replies = await withRetry("checking the ids a load saw", this.retry, () =>
      this.run(shards, (pipe, key) => pipe.sismember(key, MARK)),
    );
    return [...replies.values()].every((r) => r[0] === 1);
  }

  /** Deletes the sets (best effort: they expire anyway). */
  async clear(): Promise<void> {
    await Promise.all(this.keys.map((key) => this.client.unlink(key).catch(() => 0)));
  }

  /** The ids by shard, with their positions in `ids`. */
  private group(ids: readonly string[]): Map<number, Shard> {
    const byShard = new Map<number, Shard>();
    for (let i = 0; i < ids.length; i++) {
      const shard = laneOf(ids[i]!, this.keys.length);
      let group = byShard.get(shard);
      if (!group) {
        group = { ids: [], at: [] };
        byShard.set(shard, group);
      }
      group.ids.push(ids[i]!);
      group.at.push(i);
    }
    return byShard;
  }

  /** One pipeline per shard (each touches one key, so one slot), all at once; the replies of each, by shard. */
  private async run(
    byShard: Map<number, Shard>,
    build: (pipe: ChainableCommander, key: string, ids: string[], shard: number) => ChainableCommander,
  ): Promise<Map<number, unknown[]>> {
    const entries = [...byShard];
    const replies = await Promise.all(
      entries.map(async ([shard, { ids }]) => {
        const results = await build(this.client.pipeline(), this.keys[shard]!, ids, shard).exec();
        if (!results) throw new Error("Redis pipeline was discarded");
        return results.map(([err, value]) => {
          if (err) throw err;
          return value;
        });
      }),
    );
    return new Map(entries.map(([shard], i) => [shard, replies[i]!]));
  }
}
