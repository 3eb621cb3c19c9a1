/**
 * The readiness marker `{prefix}datastream:state:{ver}` (docs/design/decisions.md "Readiness and the marker"): JSON
 * `{ state, loaded_at, stream_id?, writer, stale_since? }`. Its absence means Redis lost its data. Without a cache
 * TTL it never expires; with one, it expires no later than any cache key, so it cannot vouch for data that has
 * expired (docs/design/marker.md). It is written as a control key (control-keys.ts), fenced by the lease.
 */

import type { RedisClient } from "./connect.js";
import { type ControlWrite, writeControlKey } from "./control-keys.js";
import type { KeyScheme } from "./keys.js";
import { LuaScript } from "./script.js";

export type MarkerState = "loaded" | "reloading";

export interface Marker {
  state: MarkerState;
  /** RFC 3339: when the last complete load finished. */
  loaded_at: string;
  /** The last stream_id applied when the marker was written. */
  stream_id?: string;
  /** The writer's owner id (`hostname-pid`). */
  writer: string;
  /** RFC 3339: since when the writer's datastream is disconnected; absent while connected. */
  stale_since?: string;
}

/** The marker, or null when it is absent or unreadable (garbage counts as absent). Redis errors propagate. */
export async function readMarker(client: RedisClient, keys: KeyScheme): Promise<Marker | null> {
  return parseMarker(await client.get(keys.marker()));
}

/** KEYS[1]: the marker. Its value, its PTTL and the server's clock (ms), read at one instant. */
const READ_WITH_EXPIRY = new LuaScript(`local t = redis.call('TIME')
return { redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1]), t[1] * 1000 + math.floor(t[2] / 1000) }`);

/** The marker and when it expires, in the server's clock (ms; undefined when it never does). */
export async function readMarkerAndExpiry(
  client: RedisClient,
  keys: KeyScheme,
): Promise<{ marker: Marker | null; expireAt: number | undefined }> {
  const [raw, pttl, now] = (await READ_WITH_EXPIRY.run(client, [keys.marker()], [])) as [string | null, number, number];
  const marker = parseMarker(raw);
  return { marker, expireAt: marker && pttl >= 0 ? now + pttl : undefined };
}

export function parseMarker(raw: string | null | undefined): Marker | null {
  if (typeof raw !== "string") return null;
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return null;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return null;
  const v = value as Record<string, unknown>;
  if (v.state !== "loaded" && v.state !== "reloading") return null;
  if (typeof v.loaded_at !== "string" || typeof v.writer !== "string") return null;
  if (v.stream_id !== undefined && v.stream_id !== null && typeof v.stream_id !== "string") return null;
  if (v.stale_since !== undefined && v.stale_since !== null && typeof v.stale_since !== "string") return null;
  return normalise({
    state: v.state,
    loaded_at: v.loaded_at,
    writer: v.writer,
    stream_id: typeof v.stream_id === "string" ? v.stream_id : undefined,
    stale_since: typeof v.stale_since === "string" ? v.stale_since : undefined,
  });
}

/** The stored form: fixed field order, absent optionals left out. */
export function serializeMarker(marker: Marker): string {
  return JSON.stringify(normalise(marker));
}

/** Writes the marker; throws LeaseLostError or ServerChangedError (nothing written) as writeControlKey does. */
export async function saveMarker(client: RedisClient, keys: KeyScheme, marker: Marker, o: ControlWrite): Promise<void> {
  await writeControlKey(client, keys.marker(), serializeMarker(marker), o);
}

function normalise(m: Marker): Marker {
  const out: Marker = { state: m.state, loaded_at: m.loaded_at } as Marker;
  if (m.stream_id !== undefined) out.stream_id = m.stream_id;
  out.writer = m.writer;
  if (m.stale_since !== undefined) out.stale_since = m.stale_since;
  return out;
}
