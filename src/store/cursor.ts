/**
 * Replay cursor persistence (redis-contract.md §6): a raw `<ms>-<seq>` string (not JSON), no expiry, at
 * `{prefix}datastream:replay_cursor` unless REPLAY_CURSOR_KEY names another key. Written through the fenced
 * StoreWriter with `ttl: false`, so the cache TTL never applies to it and a deposed writer cannot move it.
 */
import type { RedisClient } from "./connect.js";
import type { StoreWriter } from "./writer.js";

const STREAM_ID = /^\d+-\d+$/;

export function isStreamId(value: string): boolean {
  return STREAM_ID.test(value);
}

/** The persisted cursor, or null when absent or not a stream id (then a full load is the safe choice). */
export async function loadCursor(client: RedisClient, key: string): Promise<string | null> {
  const raw = await client.get(key);
  return raw !== null && isStreamId(raw) ? raw : null;
}

export async function saveCursor(writer: StoreWriter, key: string, id: string): Promise<void> {
  if (!isStreamId(id)) throw new Error(`not a stream id: ${JSON.stringify(id)}`);
  await writer.apply([{ op: "set", key, value: id, ttl: false }]);
}

export async function deleteCursor(writer: StoreWriter, key: string): Promise<void> {
  await writer.apply([{ op: "del", key }]);
}
