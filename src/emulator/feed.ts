/**
 * The benchmark feed: `POST /_emulator/bulk {"generate": {...}}` updates existing companies or users server-side
 * and pushes them as `full` messages, so a benchmark can drive 100k changes of ~2 KB without sending 200 MB of
 * JSON to the emulator first (docs/performance.md).
 *
 * Each change is an entity already in the state (taken in id order from `offset`, wrapping around) with its
 * top-level `environment_id` replaced by `tag` — a field the replicator stores verbatim, so a reader of Redis can
 * tell which feed (and, with `stamp`, at what time) wrote a value. Changes are applied to the state like any other
 * admin change (REST, dump and lookups see them), logged for replay and pushed to every subscribed connection.
 *
 * - Without `rate` or `stamp`: every frame (stream id included) is built first, then all are pushed in one
 *   synchronous loop, 256 frames per socket write: as fast as the sockets take them, nothing waits for a slow
 *   reader (the bytes queue in the emulator). `push_started_ns` marks the start of that loop.
 * - With `rate` (changes per second): pushed on a timer that wakes when the next change is due (at least 1 ms
 *   later), each tick sending what is due, so the long-run rate is exact and the burst per tick is about
 *   rate/1000 at high rates, one change at low ones; each change is serialised as it is pushed, so the first push
 *   follows the request at once. The answer comes when the last change is pushed.
 * - `stamp: true`: `environment_id` is `"{tag}@{ns}"`, ns being `process.hrtime.bigint()` (CLOCK_MONOTONIC on
 *   Linux: comparable between processes of one host) taken just before that change is pushed.
 * Meant for benchmarks: the entities it updates should not be changed by other admin calls while it runs.
 */
import type { Company, User } from "../model/wire.js";
import { changeFrame, type DatastreamHub } from "./datastream.js";
import { HttpError } from "./http.js";
import type { StreamId } from "./replay.js";
import type { EmulatorState, EntityTable } from "./state.js";

export interface FeedSpec {
  kind: "company" | "user";
  count: number;
  offset: number;
  tag: string;
  /** Changes per second; undefined: as fast as possible. */
  rate?: number;
  stamp: boolean;
}

export interface FeedResult {
  stream_id?: string;
  count: number;
  /** `process.hrtime.bigint()` when the first change was pushed, as a decimal string. */
  push_started_ns: string;
  /** `process.hrtime.bigint()` after the last change was pushed. */
  push_ended_ns: string;
  /** Time spent building the frames before the first push. */
  prepare_ms: number;
}

const FEED_FIELDS = ["kind", "count", "offset", "tag", "rate", "stamp"];
const MAX_COUNT = 10_000_000;
const MARK = "@@schematic-emulator-feed-mark@@";

function bad(message: string): never {
  throw new HttpError(400, `$.generate.${message}`);
}

/** Validates the `generate` object of a bulk request (throws HttpError 400). */
export function parseFeedSpec(raw: unknown): FeedSpec {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new HttpError(400, '$.generate: expected {"count": N, "kind"?, "offset"?, "tag"?, "rate"?, "stamp"?}');
  }
  const r = raw as Record<string, unknown>;
  for (const k of Object.keys(r)) {
    if (!FEED_FIELDS.includes(k)) bad(`${k}: unknown field (expected ${FEED_FIELDS.join(", ")})`);
  }
  const kind = r.kind ?? "company";
  if (kind !== "company" && kind !== "user") bad(`kind: expected "company" or "user", got ${JSON.stringify(kind)}`);
  const count = r.count;
  if (typeof count !== "number" || !Number.isInteger(count) || count < 1 || count > MAX_COUNT) {
    bad(`count: expected an integer from 1 to ${MAX_COUNT}, got ${JSON.stringify(count)}`);
  }
  const offset = r.offset ?? 0;
  if (typeof offset !== "number" || !Number.isInteger(offset) || offset < 0) {
    bad(`offset: expected a non-negative integer, got ${JSON.stringify(offset)}`);
  }
  const tag = r.tag ?? "feed";
  if (typeof tag !== "string" || tag.length === 0 || tag.length > 200) {
    bad(`tag: expected a string of 1 to 200 characters, got ${JSON.stringify(tag)}`);
  }
  const rate = r.rate ?? undefined;
  if (rate !== undefined && (typeof rate !== "number" || !Number.isFinite(rate) || rate <= 0 || rate > 1_000_000)) {
    bad(`rate: expected changes per second (0 < rate <= 1000000), got ${JSON.stringify(rate)}`);
  }
  const stamp = r.stamp ?? false;
  if (typeof stamp !== "boolean") bad(`stamp: expected a boolean, got ${JSON.stringify(stamp)}`);
  return { kind, count, offset, tag, rate, stamp };
}

/** The JSON text of a string, without its quotes. */
function jsonInner(s: string): string {
  return JSON.stringify(s).slice(1, -1);
}

/** Frames published per corked write while the feed pushes as fast as it can. */
const CHUNK = 256;

/** Runs a feed to the end (or until the hub closes); see the module comment. */
export async function runFeed(state: EmulatorState, hub: DatastreamHub, spec: FeedSpec): Promise<FeedResult> {
  const table = (spec.kind === "company" ? state.companies : state.users) as EntityTable<Company | User>;
  const ids = table.ids();
  if (ids.length === 0) throw new HttpError(400, `$.generate.kind: the emulator holds no ${spec.kind} to update`);
  const entityAt = (i: number) => table.get(ids[(spec.offset + i) % ids.length]!)!;
  const count = spec.count;
  let last: string | undefined;
  let sent = 0;
  const t0 = performance.now();
  let prepareMs = 0;
  let started: bigint;

  if (spec.rate === undefined && !spec.stamp) {
    // Everything is built first (stream ids included: nothing else can publish in between, this is synchronous),
    // so that pushing is only queueing ready bytes on the sockets.
    const entities = new Array<Company | User>(count);
    const sids = new Array<StreamId>(count);
    const frames = new Array<Buffer>(count);
    for (let i = 0; i < count; i++) {
      const entity = { ...entityAt(i), environment_id: spec.tag };
      const sid = hub.clock.next();
      entities[i] = entity;
      sids[i] = sid;
      frames[i] = Buffer.from(changeFrame(spec.kind, "full", entity.id, sid, JSON.stringify(entity)), "utf8");
    }
    prepareMs = performance.now() - t0;
    started = process.hrtime.bigint();
    while (sent < count && !hub.closed) {
      const end = Math.min(count, sent + CHUNK);
      hub.batch(() => {
        for (; sent < end; sent++) {
          table.put(entities[sent]!);
          last = hub.publishFrame(spec.kind, sids[sent]!, frames[sent]!);
        }
      });
    }
  } else {
    // Each change is serialised as it is pushed, so the first push follows the request at once however long the
    // feed is (a freshly started replicator gets its first change right away). The entity is serialised around a
    // mark first, so the stamp is taken just before the push, not before the serialisation.
    const tag = jsonInner(spec.tag);
    const push = (i: number): void => {
      const entity = entityAt(i);
      const json = JSON.stringify({ ...entity, environment_id: MARK });
      const at = json.indexOf(MARK);
      let value = spec.tag;
      let inner = tag;
      if (spec.stamp) {
        const ns = process.hrtime.bigint();
        value = `${spec.tag}@${ns}`;
        inner = `${tag}@${ns}`;
      }
      table.put({ ...entity, environment_id: value });
      last = hub.publishJson(spec.kind, "full", entity.id, json.slice(0, at) + inner + json.slice(at + MARK.length));
    };
    prepareMs = performance.now() - t0;
    started = process.hrtime.bigint();
    const nsPerChange = spec.rate === undefined ? 0 : 1e9 / spec.rate;
    await new Promise<void>((resolve) => {
      const tick = () => {
        const due =
          nsPerChange === 0
            ? Math.min(count, sent + CHUNK)
            : Math.min(count, Math.floor(Number(process.hrtime.bigint() - started) / nsPerChange) + 1);
        hub.batch(() => {
          while (sent < due && !hub.closed) push(sent++);
        });
        if (sent >= count || hub.closed) resolve();
        else if (nsPerChange === 0) setImmediate(tick);
        else {
          // Sleep until the next change is due (at least the timer's 1 ms): a slow feed does not spin.
          const untilNextMs = (sent * nsPerChange - Number(process.hrtime.bigint() - started)) / 1e6;
          setTimeout(tick, Math.max(1, Math.floor(untilNextMs)));
        }
      };
      tick();
    });
  }
  const ended = process.hrtime.bigint();
  return {
    ...(last === undefined ? {} : { stream_id: last }),
    count: sent,
    push_started_ns: String(started),
    push_ended_ns: String(ended),
    prepare_ms: Math.round(prepareMs),
  };
}
