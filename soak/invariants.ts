/**
 * The soak's continuous invariants, as pure functions over what the watchers recorded (see watch.ts and
 * docs/reliability.md for the exact definitions):
 *
 * - /ready is honest: no replicator answers /ready 200 for longer than the marker check interval plus an
 *   allowance while Redis lacks data (an anchor company's key is missing);
 * - one writer: Redis never executes a data write from one replicator process while the writer lease, as two
 *   polls of the lease key on either side of that write prove, belongs to another process;
 * - clean exits: no replicator exits unasked, and one told to stop with SIGTERM exits 0 within its shutdown bound.
 */
import type { ProcessExit } from "./rig.js";

// ---- /ready honesty ----------------------------------------------------------------------------------------------

export interface ReadyProbe {
  slot: number;
  pid?: number;
  /** HTTP status of /ready; 0: no answer. */
  status: number;
  role?: string;
}

export interface ReadySample {
  /** Milliseconds since the soak started, when the probes were answered. */
  t: number;
  /** Anchor keys missing from Redis; undefined when Redis did not answer in time. */
  missing: number | undefined;
  probes: ReadyProbe[];
}

export interface ReadyViolation {
  slot: number;
  pid?: number;
  from: number;
  to: number;
}

/**
 * Stretches during which a replicator said ready while anchors were missing, per replicator process: a stretch
 * runs over consecutive samples that all show both, and any other sample (data present, /ready not 200, Redis not
 * answering, another process) ends it. Stretches longer than `limitMs` are violations; `worstMs` is the longest.
 */
export function readyViolations(
  samples: ReadySample[],
  limitMs: number,
): { violations: ReadyViolation[]; worstMs: number } {
  const open = new Map<number, ReadyViolation>();
  const stretches: ReadyViolation[] = [];
  const close = (slot: number) => {
    const s = open.get(slot);
    if (s) stretches.push(s);
    open.delete(slot);
  };
  for (const sample of samples) {
    const slots = new Set<number>();
    for (const p of sample.probes) {
      slots.add(p.slot);
      const lying = sample.missing !== undefined && sample.missing > 0 && p.status === 200;
      const current = open.get(p.slot);
      if (!lying || (current && current.pid !== p.pid)) close(p.slot);
      if (!lying) continue;
      const s = open.get(p.slot);
      if (s) s.to = sample.t;
      else open.set(p.slot, { slot: p.slot, pid: p.pid, from: sample.t, to: sample.t });
    }
    for (const slot of [...open.keys()]) if (!slots.has(slot)) close(slot);
  }
  for (const slot of [...open.keys()]) close(slot);
  const worstMs = stretches.reduce((m, s) => Math.max(m, s.to - s.from), 0);
  return { violations: stretches.filter((s) => s.to - s.from > limitMs), worstMs };
}

/** How long two or more processes at once reported `role: writer` (informational: a role is not a write). */
export function roleOverlap(samples: ReadySample[]): { samples: number; longestMs: number } {
  let count = 0;
  let longest = 0;
  let since: number | undefined;
  for (const s of samples) {
    const writers = s.probes.filter((p) => p.role === "writer").length;
    if (writers > 1) {
      count++;
      since ??= s.t;
      longest = Math.max(longest, s.t - since);
    } else since = undefined;
  }
  return { samples: count, longestMs: longest };
}

// ---- one writer --------------------------------------------------------------------------------------------------

export interface LeasePoll {
  /** Wall-clock ms when the GET of the lease key was sent and when its answer came. */
  sent: number;
  received: number;
  token: string | null;
}

export interface WriteEvent {
  /** Wall-clock ms at which Redis executed it (MONITOR's timestamp). */
  time: number;
  /** The replicator process whose connection sent it. */
  pid: number;
  port: number;
  command: string;
}

export interface WriterViolation {
  write: WriteEvent;
  /** The process named by the lease token both polls around the write saw; undefined: nobody held the lease. */
  holderPid: number | undefined;
  polls: [LeasePoll, LeasePoll];
}

/**
 * Two polls that both found no lease prove nobody held it in between only if no whole tenure fits between them: a
 * tenure lasts a lease TTL (4 s in the soak) unless released at once, so gaps shorter than this are judged.
 */
export const NO_HOLDER_WINDOW_MS = 1000;

/** The pid in a lease token `{host}-{pid}-{32 hex}`. */
export function tokenPid(token: string): number | undefined {
  const m = /-(\d+)-[0-9a-f]{32}$/.exec(token);
  return m ? Number(m[1]) : undefined;
}

/**
 * Writes that Redis executed while the lease belonged to another process, or to nobody. A token is never reused, so
 * two polls that both saw token T prove T was in the key for the whole time between them (from the first answer to
 * the second request). A write by a process other than T's owner strictly inside such an interval — 1 ms of margin
 * for the clocks' rounding — is a second writer. Two polls less than {@link NO_HOLDER_WINDOW_MS} apart that both
 * found no lease prove nobody held it: a write between them came from a writer without the lease. Writes near a
 * handover, between polls that saw different tokens, cannot be judged and are not counted either way. `polls` must
 * be in the order they were made (they never overlap).
 *
 * `lostKeyGraceMs` excuses one case of "nobody": a write by the last holder less than that long after its key was
 * first seen gone. On a Cluster no server-side fence covers a batch, so when a fault (a FLUSHALL, a master restarting
 * empty) removes the lease key early, its holder keeps writing until its next renewal finds the key gone
 * (docs/design/cluster-fencing.md, "When the lease key itself is lost"). Its tenure, as the lease TTL defines it,
 * has not ended: its last renewal came before the key was lost, so the key would have lived until at most a TTL
 * after that. Such writes are returned as `excused`; nobody else writes meanwhile, which the first rule still judges.
 * On a single node and through Sentinel the fence refuses them: pass 0.
 */
export function writerViolations(
  writes: WriteEvent[],
  polls: LeasePoll[],
  lostKeyGraceMs = 0,
): { violations: WriterViolation[]; excused: WriteEvent[] } {
  const violations: WriterViolation[] = [];
  const excused: WriteEvent[] = [];
  const lastHeld = lastHeldIndices(polls);
  for (const write of writes) {
    // The last poll answered before the write and the first one sent after it.
    const before = lastIndex(polls, (p) => p.received < write.time - 1);
    const after = lastIndex(polls, (p) => p.sent <= write.time + 1) + 1;
    if (before < 0 || after >= polls.length) continue;
    const a = polls[before]!;
    const b = polls[after]!;
    if (a.token !== b.token) continue;
    if (a.token === null) {
      if (b.sent - a.received >= NO_HOLDER_WINDOW_MS) continue;
      const held = lastHeld[before]!;
      // The holder's token, then its key seen gone by polls close enough that nobody else's tenure fits between.
      const last = held >= 0 ? polls[held]! : undefined;
      const lost = held >= 0 ? polls[held + 1]! : undefined;
      const seenLost = last && lost && lost.sent - last.received < NO_HOLDER_WINDOW_MS;
      if (seenLost && tokenPid(last.token!) === write.pid && write.time < lost.received + lostKeyGraceMs) {
        excused.push(write);
      } else violations.push({ write, holderPid: undefined, polls: [a, b] });
      continue;
    }
    const holderPid = tokenPid(a.token);
    if (holderPid !== undefined && holderPid !== write.pid) violations.push({ write, holderPid, polls: [a, b] });
  }
  return { violations, excused };
}

/** For each poll, the index of the last poll up to it that saw a token (-1: none). */
function lastHeldIndices(polls: LeasePoll[]): number[] {
  let last = -1;
  return polls.map((p, i) => {
    if (p.token !== null) last = i;
    return last;
  });
}

/** The last index whose element satisfies `test`, for a test that holds for a prefix of `items` (-1: none). */
function lastIndex<T>(items: T[], test: (item: T) => boolean): number {
  let lo = 0;
  let hi = items.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (test(items[mid]!)) {
      found = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  return found;
}

// ---- clean exits -------------------------------------------------------------------------------------------------

export function exitViolations(exits: ProcessExit[], shutdownBoundMs: number): string[] {
  const out: string[] = [];
  for (const e of exits) {
    const who = `replicator ${e.slot} (pid ${e.pid})`;
    if (e.sent === undefined) out.push(`${who} exited unasked (code ${e.code}, signal ${e.signal})`);
    else if (e.sent === "SIGTERM" && (e.code !== 0 || (e.afterMs ?? 0) > shutdownBoundMs)) {
      out.push(`${who} answered SIGTERM with code ${e.code} (signal ${e.signal}) after ${e.afterMs} ms`);
    }
  }
  return out;
}
