/**
 * The events the emulator captured (`GET /_emulator/events`), the newest kept, and the idempotency keys that make
 * a repeated event a duplicate for 24 hours, as the capture service drops them.
 */
export const EVENT_TYPES = ["identify", "track", "flag_check", "inference"] as const;
export type EventType = (typeof EVENT_TYPES)[number];

/** How long an idempotency key makes a repeated event a duplicate. */
const IDEMPOTENCY_MS = 24 * 3600 * 1000;
/** Keys kept before the expired ones are swept. */
const KEYS_BEFORE_SWEEP = 100_000;

/** An event as `GET /_emulator/events` lists it: what arrived and what it did. */
export interface CapturedEvent {
  received_at: string;
  type: EventType;
  body: unknown;
  idempotency_key?: string;
  sent_at?: string;
  company_id?: string;
  user_id?: string;
  /** The stream ids of the changes it pushed, in order. */
  stream_ids: string[];
  /** Why it changed nothing, when it did not (a flag check, an unknown company, a duplicate). */
  ignored?: string;
}

/** The events received, the newest `capacity` kept, and the idempotency keys of the last 24 hours. */
export class EventLog {
  private events: CapturedEvent[] = [];
  private received = 0;
  private receivedByType: Record<string, number> = {};
  private readonly keys = new Map<string, number>();

  constructor(readonly capacity = 10_000) {}

  /**
   * `GET /_emulator/events[?type=T]`: oldest first; `count` is every event received (of that type), `dropped`
   * those no longer listed.
   */
  view(type?: string): { events: CapturedEvent[]; count: number; dropped: number } {
    if (type === undefined) {
      return { events: this.events, count: this.received, dropped: this.received - this.events.length };
    }
    const events = this.events.filter((e) => e.type === type);
    const count = this.receivedByType[type] ?? 0;
    return { events, count, dropped: count - events.length };
  }

  clear(): void {
    this.events = [];
    this.received = 0;
    this.receivedByType = {};
  }

  isDuplicate(key: string, now: number): boolean {
    const at = this.keys.get(key);
    return at !== undefined && now - at < IDEMPOTENCY_MS;
  }

  record(events: CapturedEvent[], keys: string[], now: number): void {
    this.received += events.length;
    for (const e of events) this.receivedByType[e.type] = (this.receivedByType[e.type] ?? 0) + 1;
    this.events.push(...events);
    if (this.events.length > this.capacity) this.events = this.events.slice(-this.capacity);
    for (const k of keys) this.keys.set(k, now);
    if (this.keys.size > KEYS_BEFORE_SWEEP) {
      for (const [k, at] of this.keys) if (now - at >= IDEMPOTENCY_MS) this.keys.delete(k);
    }
  }
}
