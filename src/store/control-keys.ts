/**
 * The writer's control keys vouch for the cache keys: the readiness marker says "Redis holds a complete data set",
 * the replay cursor "Redis holds every change up to here". Both are written by one script that checks, atomically
 * with the write (docs/design/marker.md):
 *
 * - the lease token, so a deposed writer cannot write them (single node and Sentinel; on Cluster the lease key lives
 *   in another slot, so the token is checked before sending, and the lease key read, when the caller can confirm it);
 * - optionally, the Redis server's identity (its `run_id`): a server that restarted since the writer last looked
 *   may have lost the latest writes the key would vouch for (an append-only file loses up to its last second);
 *   {@link ServerChangedError} tells the writer, which then resumes from what that server kept;
 * - and it gives the key an absolute expiry in the server's clock (PEXPIREAT), with a cache TTL no later than any
 *   cache key's, so it cannot outlive the data. An expiry relative to when the writer computed it would land late by
 *   however long the command took to reach Redis.
 */
import { isCluster, type RedisClient } from "./connect.js";
import { LuaScript } from "./script.js";
import { LeaseLostError, type WriterLeaseRef } from "./writer.js";

const RUN_ID = "string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')";

/** KEYS[1]: routes the call on a cluster. The run_id of the server holding it. */
const SERVER_ID = new LuaScript(`return ${RUN_ID}`);

/** KEYS[1]: routes the call on a cluster. The server's clock in ms. */
const SERVER_TIME = new LuaScript(`local t = redis.call('TIME')
return t[1] * 1000 + math.floor(t[2] / 1000)`);

/**
 * KEYS[1] the key, KEYS[2] the lease (optional); ARGV: value, expire-at ms ('' none), expected run_id ('' any), token.
 * 1: written; 0: the lease holds another token; a string: the server's run_id, which is not the expected one.
 */
const WRITE = new LuaScript(`if KEYS[2] and redis.call('GET', KEYS[2]) ~= ARGV[4] then return 0 end
if ARGV[3] ~= '' then
  local id = ${RUN_ID}
  if id ~= ARGV[3] then return id end
end
redis.call('SET', KEYS[1], ARGV[1])
if ARGV[2] ~= '' then redis.call('PEXPIREAT', KEYS[1], ARGV[2]) end
return 1
`);

/** The Redis server is not the one the writer last checked (it restarted, or a failover replaced it). */
export class ServerChangedError extends Error {
  override readonly name = "ServerChangedError";
  constructor(readonly serverId: string) {
    super(`the Redis server changed (run_id ${serverId}): not written`);
  }
}

export interface ControlWrite {
  /** The writer lease (undefined: WRITER_LOCK_DISABLED). */
  lease?: WriterLeaseRef;
  /** The `run_id` the server must have ({@link serverId}); undefined: any. */
  serverId?: string;
  /** Absolute expiry in the server's clock, ms ({@link serverTime}); undefined: none. Past: the key is removed. */
  expireAt?: number;
}

/**
 * Writes a control key; throws LeaseLostError when the lease is not ours and ServerChangedError when the server is
 * not the one `serverId` names (nothing written in either case).
 */
export async function writeControlKey(client: RedisClient, key: string, value: string, o: ControlWrite): Promise<void> {
  const token = o.lease?.token();
  if (o.lease && token === undefined) throw new LeaseLostError(`writer lease not held: ${key} not written`);
  // On Cluster the lease key is read just before instead: its master may have lost it (and another instance taken
  // it) while the lease's timing still says held. That leaves one round trip, not a renewal period.
  if (o.lease?.confirm && isCluster(client) && !(await o.lease.confirm())) {
    throw new LeaseLostError(`writer lease lost: ${key} not written`);
  }
  const fenced = o.lease && !isCluster(client) ? [o.lease.key] : [];
  const expireAt = o.expireAt === undefined ? "" : String(Math.floor(o.expireAt));
  const reply = await WRITE.run(client, [key, ...fenced], [value, expireAt, o.serverId ?? "", token ?? ""]);
  if (reply === 1) return;
  if (reply === 0) throw new LeaseLostError(`writer lease lost: ${key} not written`);
  throw new ServerChangedError(String(reply));
}

/** The `run_id` of the server holding `key` (on a cluster, of its master). */
export async function serverId(client: RedisClient, key: string): Promise<string> {
  const id = await SERVER_ID.run(client, [key], []);
  if (typeof id !== "string") throw new Error("INFO server reported no run_id");
  return id;
}

/** The clock of the server holding `key`, in ms. */
export async function serverTime(client: RedisClient, key: string): Promise<number> {
  return Number(await SERVER_TIME.run(client, [key], []));
}
