/**
 * Replay cursor persistence (docs/reference/redis-contract.md §6): a raw `<ms>-<seq>` string (not JSON) at
 * `{prefix}datastream:replay_cursor` unless REPLAY_CURSOR_KEY names another key. Saved as a control key (see
 * control-keys.ts): fenced by the lease, on the server the writer knows, never expiring after the cache keys.
 */

import type { RedisClient } from "./connect.js";
import { type ControlWrite, writeControlKey } from "./control-keys.js";
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

/** Saves the cursor; throws LeaseLostError or ServerChangedError (nothing saved) as writeControlKey does. */
export async function saveCursor(client: RedisClient, key: string, id: string, o: ControlWrite): Promise<void> {
  if (!isStreamId(id)) throw new Error(`not a stream id: ${JSON.stringify(id)}`);
  await writeControlKey(client, key, id, o);
}

export async function deleteCursor(writer: StoreWriter, key: string): Promise<void> {
  await writer.apply([{ op: "del", key }]);
}
