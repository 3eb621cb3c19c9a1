/**
 * Stream ids (`<ms>-<seq>`, strictly increasing within the process) and the bounded replay log of pushed changes.
 */

export type StreamKind = "company" | "user" | "flag";

export interface StreamId {
  ms: number;
  seq: number;
  id: string;
}

export interface LogEntry extends StreamId {
  kind: StreamKind;
  frame: Buffer;
}

const STREAM_ID = /^(\d{1,16})-(\d{1,16})$/;

export function parseStreamId(id: string): { ms: number; seq: number } | null {
  const m = STREAM_ID.exec(id);
  return m ? { ms: Number(m[1]), seq: Number(m[2]) } : null;
}

function cmp(a: { ms: number; seq: number }, b: { ms: number; seq: number }): number {
  return a.ms !== b.ms ? a.ms - b.ms : a.seq - b.seq;
}

export class StreamClock {
  private lastMs = -1;
  private seq = 0;
  last: StreamId | null = null;

  next(): StreamId {
    const now = Date.now();
    if (now > this.lastMs) {
      this.lastMs = now;
      this.seq = 0;
    } else this.seq++;
    const id = { ms: this.lastMs, seq: this.seq, id: `${this.lastMs}-${this.seq}` };
    this.last = id;
    return id;
  }
}

/** A ring of the last `capacity` changes. */
export class ReplayLog {
  private readonly ring: (LogEntry | undefined)[] = [];
  private start = 0;
  private count = 0;
  /** The newest entry that fell out of the log (a cursor equal to it is still covered). */
  private lastEvicted: StreamId | null = null;

  constructor(readonly capacity: number) {}

  get size(): number {
    return this.count;
  }

  oldest(): LogEntry | undefined {
    return this.count > 0 ? this.ring[this.start] : undefined;
  }

  private at(i: number): LogEntry {
    return this.ring[(this.start + i) % this.capacity]!;
  }

  append(entry: LogEntry): void {
    if (this.capacity === 0) {
      this.lastEvicted = entry;
      return;
    }
    if (this.count < this.capacity) {
      this.ring[(this.start + this.count) % this.capacity] = entry;
      this.count++;
      return;
    }
    const old = this.ring[this.start]!;
    this.lastEvicted = { ms: old.ms, seq: old.seq, id: old.id };
    this.ring[this.start] = entry;
    this.start = (this.start + 1) % this.capacity;
  }

  /**
   * The logged changes strictly after `cursor`, oldest first, or `null` when this process cannot guarantee
   * them: the cursor is malformed, older than the log, or not one this process issued (e.g. from before a
   * restart).
   */
  after(cursor: string): LogEntry[] | null {
    const c = parseStreamId(cursor);
    if (!c) return null;
    let from: number;
    if (this.lastEvicted && cmp(c, this.lastEvicted) === 0) from = 0;
    else {
      let lo = 0;
      let hi = this.count - 1;
      from = -1;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        const d = cmp(this.at(mid), c);
        if (d === 0) {
          from = mid + 1;
          break;
        }
        if (d < 0) lo = mid + 1;
        else hi = mid - 1;
      }
      if (from < 0) return null;
    }
    const out: LogEntry[] = [];
    for (let i = from; i < this.count; i++) out.push(this.at(i));
    return out;
  }
}
