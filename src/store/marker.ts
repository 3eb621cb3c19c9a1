/**
 * The readiness marker `{prefix}datastream:state:{ver}` (DESIGN.md §6 "Readiness and the marker"): JSON
 * `{ state, loaded_at, stream_id?, writer, stale_since? }`, no expiry. Its absence means Redis lost its data.
 * It is written through the fenced StoreWriter, so a deposed writer cannot overwrite it.
 */
import type { RedisClient } from "./connect.js";
import type { KeyScheme } from "./keys.js";
import type { StoreWriter } from "./writer.js";

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

/** Writes the marker (no expiry) through the fenced writer; throws LeaseLostError when deposed. */
export async function writeMarker(writer: StoreWriter, keys: KeyScheme, marker: Marker): Promise<void> {
  await writer.apply([{ op: "set", key: keys.marker(), value: serializeMarker(marker), ttl: false }]);
}

export async function deleteMarker(writer: StoreWriter, keys: KeyScheme): Promise<void> {
  await writer.apply([{ op: "del", key: keys.marker() }]);
}

function normalise(m: Marker): Marker {
  const out: Marker = { state: m.state, loaded_at: m.loaded_at } as Marker;
  if (m.stream_id !== undefined) out.stream_id = m.stream_id;
  out.writer = m.writer;
  if (m.stale_since !== undefined) out.stale_since = m.stale_since;
  return out;
}
