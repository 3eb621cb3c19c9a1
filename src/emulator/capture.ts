/**
 * Event capture: `POST /batch`, where the SDK's event buffer sends `identify`, `track`, `flag_check` and
 * `inference` events (its `eventCaptureBaseURL` pointed at the emulator). A batch is validated whole first (a
 * malformed event answers 400 naming it, and nothing changes); then `track` adds usage to the company's metrics
 * (./usage.ts) and `identify` creates or updates the company and user (./identify.ts), all applied as one change
 * set and pushed on the datastream like admin changes. Every event is recorded for `GET /_emulator/events`.
 */
import { ChangeSet } from "./changes.js";
import type { DatastreamHub } from "./datastream.js";
import { type CapturedEvent, EVENT_TYPES, type EventLog, type EventType } from "./event-log.js";
import { HttpError } from "./http.js";
import { type Identity, identifyChange } from "./identify.js";
import type { EmulatorState } from "./state.js";
import { measuredPeriods, trackedMetrics } from "./usage.js";

/** The capture service refuses larger batches (the SDK splits its buffer into chunks of this size). */
const MAX_BATCH = 100;

interface TrackBody {
  event: string;
  company?: Record<string, string>;
  quantity: number;
}

interface IdentifyBody extends Identity {
  company?: Identity;
}

/** One validated event of a batch. */
interface Event {
  type: EventType;
  raw: Record<string, unknown>;
  track?: TrackBody;
  identify?: IdentifyBody;
}

// ---- validation -------------------------------------------------------------------------------------------

function bad(path: string, reason: string): never {
  throw new HttpError(400, `${path}: ${reason}`);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function fields(o: Record<string, unknown>, path: string, allowed: readonly string[]): void {
  for (const k of Object.keys(o))
    if (!allowed.includes(k)) bad(`${path}.${k}`, `unknown field (expected ${allowed.join(", ")})`);
}

function optString(v: unknown, path: string): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") bad(path, "expected a string");
  return v;
}

function keyMap(v: unknown, path: string, required: boolean): Record<string, string> | undefined {
  if (v === undefined || v === null)
    return required ? bad(path, "required: an object of key names to string values") : undefined;
  if (!isObject(v) || !Object.values(v).every((x) => typeof x === "string")) {
    bad(path, "expected an object of key names to string values");
  }
  if (required && Object.keys(v).length === 0) bad(path, "needs at least one key");
  return Object.keys(v).length > 0 ? (v as Record<string, string>) : undefined;
}

function traitMap(v: unknown, path: string): Identity["traits"] {
  if (v === undefined || v === null) return undefined;
  if (!isObject(v)) bad(path, "expected an object of trait names to values");
  for (const [k, x] of Object.entries(v)) {
    const ok =
      x === null || typeof x === "string" || typeof x === "boolean" || (typeof x === "number" && Number.isFinite(x));
    if (!ok) bad(`${path}.${k}`, "expected a string, number, boolean or null");
  }
  return v as Identity["traits"];
}

function identity(o: Record<string, unknown>, path: string, allowed: readonly string[]): Identity {
  fields(o, path, allowed);
  return {
    keys: keyMap(o.keys, `${path}.keys`, true)!,
    name: optString(o.name, `${path}.name`),
    traits: traitMap(o.traits, `${path}.traits`),
  };
}

function parseTrack(b: Record<string, unknown>, path: string): TrackBody {
  fields(b, path, ["event", "company", "user", "quantity", "traits", "lease_id", "reservation_id"]);
  if (typeof b.event !== "string" || b.event === "")
    bad(`${path}.event`, "required: the event name (a non-empty string)");
  keyMap(b.user, `${path}.user`, false);
  optString(b.lease_id, `${path}.lease_id`);
  optString(b.reservation_id, `${path}.reservation_id`);
  if (b.traits !== undefined && b.traits !== null && !isObject(b.traits)) bad(`${path}.traits`, "expected an object");
  const q = b.quantity ?? 1;
  if (typeof q !== "number" || !Number.isSafeInteger(q) || q < 0) {
    bad(`${path}.quantity`, `expected a non-negative integer, got ${JSON.stringify(b.quantity)}`);
  }
  // As the SDK bumps its cached metric: no quantity, or 0, counts once.
  return { event: b.event, company: keyMap(b.company, `${path}.company`, false), quantity: q || 1 };
}

function parseIdentify(b: Record<string, unknown>, path: string): IdentifyBody {
  const who = identity(b, path, ["keys", "name", "traits", "company"]);
  if (b.company === undefined || b.company === null) return who;
  if (!isObject(b.company)) bad(`${path}.company`, 'expected {"keys": {...}, "name"?, "traits"?}');
  return { ...who, company: identity(b.company, `${path}.company`, ["keys", "name", "traits"]) };
}

/** Validates a whole batch (`{"events": [...]}`) before anything is applied. */
function parseBatch(body: unknown): Event[] {
  if (!isObject(body) || !Array.isArray(body.events))
    bad("$.events", 'expected {"events": [{"type", "body", ...}, ...]}');
  fields(body, "$", ["events"]);
  const list = body.events as unknown[];
  if (list.length > MAX_BATCH) throw new HttpError(400, "batch too large", { max_size: MAX_BATCH });
  return list.map((raw, i) => {
    const path = `$.events[${i}]`;
    if (!isObject(raw)) bad(path, "expected an object");
    fields(raw, path, ["api_key", "type", "body", "idempotency_key", "sent_at", "trusted_client_clock", "backfill"]);
    const type = raw.type as EventType;
    if (!EVENT_TYPES.includes(type))
      bad(`${path}.type`, `expected one of ${EVENT_TYPES.join(", ")}, got ${JSON.stringify(raw.type)}`);
    optString(raw.api_key, `${path}.api_key`);
    optString(raw.idempotency_key, `${path}.idempotency_key`);
    const sentAt = optString(raw.sent_at, `${path}.sent_at`);
    if (sentAt !== undefined && Number.isNaN(Date.parse(sentAt))) bad(`${path}.sent_at`, "expected an ISO 8601 time");
    for (const k of ["trusted_client_clock", "backfill"]) {
      if (raw[k] !== undefined && raw[k] !== null && typeof raw[k] !== "boolean")
        bad(`${path}.${k}`, "expected a boolean");
    }
    const b = raw.body;
    if (!isObject(b)) {
      if (type === "track" || type === "identify" || b !== undefined) bad(`${path}.body`, "expected an object");
      return { type, raw };
    }
    if (type === "track") return { type, raw, track: parseTrack(b, `${path}.body`) };
    if (type === "identify") return { type, raw, identify: parseIdentify(b, `${path}.body`) };
    return { type, raw };
  });
}

// ---- applying ---------------------------------------------------------------------------------------------

export interface CaptureContext {
  state: EmulatorState;
  hub: DatastreamHub;
  events: EventLog;
}

/** What applying one event did (its changes are in the change set). */
interface Outcome {
  company_id?: string;
  user_id?: string;
  ignored?: string;
  /** Display names to keep once the batch is in (identify's `name`). */
  names: [kind: "companies" | "users", id: string, name: string][];
}

function track(state: EmulatorState, set: ChangeSet, t: TrackBody, now: number): Outcome {
  if (!t.company) return { ignored: "no company keys: usage is counted per company", names: [] };
  const company = state.companies.lookup(t.company);
  if (!company) return { ignored: `no company matches ${JSON.stringify(t.company)}`, names: [] };
  const periods = measuredPeriods(t.event, state.flags.byKey.values(), company);
  const metrics = trackedMetrics(company, t.event, t.quantity, periods, now);
  const over = metrics.find((m) => !Number.isSafeInteger(m.value));
  if (over) throw new HttpError(400, `quantity: the ${over.period} ${over.event_subtype} metric would pass 2^53`);
  set.apply({ method: "PATCH", path: `/companies/${encodeURIComponent(company.id)}`, body: { metrics } });
  return { company_id: company.id, names: [] };
}

function identify(state: EmulatorState, set: ChangeSet, body: IdentifyBody): Outcome {
  const out: Outcome = { names: [] };
  const { company, ...user } = body;
  for (const [kind, who] of [
    ["company", company],
    ["user", user],
  ] as const) {
    if (!who) continue;
    const { id, change } = identifyChange(state, kind, who);
    if (change) set.apply(change);
    out[kind === "company" ? "company_id" : "user_id"] = id;
    if (who.name !== undefined) out.names.push([kind === "company" ? "companies" : "users", id, who.name]);
  }
  return out;
}

/**
 * Captures a batch: validates it, applies every event in order as one change set (all or nothing), pushes the
 * changes and records the events. Resolves once the pushes reached every connection (as an admin change does).
 */
export async function capture(ctx: CaptureContext, body: unknown, now = Date.now()): Promise<{ accepted: number }> {
  const events = parseBatch(body);
  const { state } = ctx;
  const set = new ChangeSet(state, ctx.hub);
  const outcomes: { ev: Event; outcome: Outcome; changes: number }[] = [];
  const keys: string[] = [];
  try {
    events.forEach((ev, i) => {
      const key = ev.raw.idempotency_key as string | undefined;
      const before = set.size;
      let outcome: Outcome;
      try {
        if (key !== undefined && (keys.includes(key) || ctx.events.isDuplicate(key, now))) {
          outcome = {
            ignored: `duplicate: idempotency_key ${JSON.stringify(key)} seen in the last 24 hours`,
            names: [],
          };
        } else {
          if (key !== undefined) keys.push(key);
          if (ev.track) outcome = track(state, set, ev.track, now);
          else if (ev.identify) outcome = identify(state, set, ev.identify);
          else outcome = { ignored: `${ev.type} events change nothing`, names: [] };
        }
      } catch (err) {
        if (err instanceof HttpError) throw new HttpError(err.status, `$.events[${i}]: ${err.message}`);
        throw err;
      }
      outcomes.push({ ev, outcome, changes: set.size - before });
    });
  } catch (err) {
    set.rollback();
    throw err;
  }
  const ids = await set.publish();
  let next = 0;
  const records = outcomes.map(({ ev, outcome, changes }): CapturedEvent => {
    const { names, ...did } = outcome;
    for (const [kind, id, name] of names) state[kind].names.set(id, name);
    const streamIds = ids.slice(next, next + changes);
    next += changes;
    return {
      received_at: new Date(now).toISOString(),
      type: ev.type,
      ...(ev.raw.idempotency_key !== undefined && { idempotency_key: ev.raw.idempotency_key as string }),
      ...(ev.raw.sent_at !== undefined && { sent_at: ev.raw.sent_at as string }),
      body: ev.raw.body,
      ...did,
      stream_ids: streamIds,
    };
  });
  ctx.events.record(records, keys, now);
  return { accepted: records.length };
}
