/**
 * Schematic datastream protocol helpers (docs/reference/protocol.md): frames the replicator sends and the
 * envelope check for frames it receives. Pure functions; the socket lives in client.ts.
 */
import { type DataStreamResp, ENTITY_TYPES } from "../model/wire.js";

export const CLIENT_NAME = "schematic-datastream-replicator";

/** The three subscriptions a replicator sends on every (re)connect, with the replay cursor when resuming. */
export function subscribeFrames(replayFrom?: string): string[] {
  return [ENTITY_TYPES.companies, ENTITY_TYPES.users, ENTITY_TYPES.flags].map((entityType) =>
    subscribeFrame(entityType, replayFrom),
  );
}

/** One subscription request (also used alone to ask for a fresh flags snapshot on an open connection). */
export function subscribeFrame(entityType: string, replayFrom?: string): string {
  return JSON.stringify({
    data: { action: "start", entity_type: entityType, ...(replayFrom ? { replay_from: replayFrom } : {}) },
  });
}

export class FrameError extends Error {}

/** Parses one text frame into an envelope, or throws FrameError naming what is wrong. */
export function parseFrame(text: string): DataStreamResp {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new FrameError(`frame is not JSON: ${(err as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new FrameError("frame is not a JSON object");
  }
  const msg = value as Record<string, unknown>;
  if (typeof msg.entity_type !== "string") throw new FrameError("frame has no entity_type");
  if (typeof msg.message_type !== "string") throw new FrameError("frame has no message_type");
  if (msg.stream_id !== undefined && msg.stream_id !== null && typeof msg.stream_id !== "string") {
    throw new FrameError("stream_id is not a string");
  }
  if (msg.entity_id !== undefined && msg.entity_id !== null && typeof msg.entity_id !== "string") {
    throw new FrameError("entity_id is not a string");
  }
  return msg as unknown as DataStreamResp;
}

/** Milliseconds part of a `<ms>-<seq>` stream id (for replication lag), or undefined. */
export function streamIdTime(id: string | undefined): number | undefined {
  if (!id) return undefined;
  const dash = id.indexOf("-");
  const ms = Number(dash < 0 ? id : id.slice(0, dash));
  return Number.isFinite(ms) ? ms : undefined;
}

/** Orders `<ms>-<seq>` ids numerically; anything else falls back to text order. */
export function compareStreamIds(a: string, b: string): number {
  const pa = splitId(a);
  const pb = splitId(b);
  if (pa && pb) {
    // `<` and `>` compare a number with a bigint by value (`!==` would not).
    for (let i = 0; i < 2; i++) {
      if (pa[i]! < pb[i]!) return -1;
      if (pa[i]! > pb[i]!) return 1;
    }
    return 0;
  }
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Called for every change (the cursor orders them): plain numbers while they are exact, BigInt beyond that. */
function splitId(id: string): [number, number] | [bigint, bigint] | undefined {
  const dash = id.indexOf("-");
  if (dash <= 0 || dash === id.length - 1 || !allDigits(id, 0, dash) || !allDigits(id, dash + 1, id.length)) {
    return undefined;
  }
  if (dash <= 15 && id.length - dash - 1 <= 15) return [digitsValue(id, 0, dash), digitsValue(id, dash + 1, id.length)];
  return [BigInt(id.slice(0, dash)), BigInt(id.slice(dash + 1))];
}

/** The number the digits `s[from, to)` spell (at most 15 of them: exact as a double). */
function digitsValue(s: string, from: number, to: number): number {
  let n = 0;
  for (let i = from; i < to; i++) n = n * 10 + (s.charCodeAt(i) - 48);
  return n;
}

function allDigits(s: string, from: number, to: number): boolean {
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  return true;
}
