/**
 * The soak's plan: its options, and per period a seeded list of workload events (trickled changes and bursts) and
 * fault events. Everything here is a pure function of the options (the seed above all): the same command gives the
 * same plan, which `fingerprint()` summarises. Only the timing of processes differs between runs.
 *
 * Periods are planned one at a time, in order (a burst holds megabytes of bodies; a 30-minute plan would not fit in
 * memory at once); the workload's model and the random streams carry over from one period to the next.
 */
import { createHash } from "node:crypto";
import type { Fixture } from "../src/model/wire.js";
import { Rand } from "./random.js";
import { DEFAULT_WORKLOAD, type Operation, Workload } from "./workload.js";

export type Topology = "single" | "sentinel" | "cluster";
export type Loading = "sync" | "async";

export interface SoakOptions {
  minutes: number;
  seed: number;
  topology: Topology;
  replicators: 1 | 2;
  /** USE_ASYNC_LOADING of the replicators; drawn from the seed unless given. */
  loading: Loading;
  /** Seconds of workload and faults between quiet checkpoints. */
  checkpointEvery: number;
  /** The emulator's replay log (`--replay-log`): small enough that a burst during an outage exceeds it. */
  replayLog: number;
  /** Fault kinds left out of the schedule (to get past a known defect while it is being fixed). */
  without: FaultKind[];
}

export const FAULT_KINDS = [
  "redis.kill-restart",
  "redis.flushall",
  "redis.pause",
  "sentinel.failover",
  "sentinel.kill-master",
  "cluster.failover",
  "cluster.kill-master",
  "stream.close",
  "stream.drop",
  "stream.reload",
  "stream.replay-exceeded",
  "rest.errors",
  "replicator.kill",
  "replicator.term",
  "replicator.pause",
  "replicator.handover",
] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

export interface RestFaults {
  rest_error_rate: number;
  rest_error_status: number;
  rest_latency_ms: number;
  rest_retry_after_s?: number;
  seed: number;
}

export interface FaultEvent {
  /** Unique in the run, in plan order. */
  id: number;
  /** Milliseconds after the start of its period. */
  at: number;
  kind: FaultKind;
  /** What it occupies: faults sharing a resource run one after the other, others overlap freely. */
  resources: string[];
  /** Outage length: a process down or paused, a REST fault window, the datastream refused. */
  durationMs: number;
  /** Which master (an index into the masters by port) or which replicator. */
  target?: number;
  /** stream.close: the close code. */
  code?: number;
  /** rest.errors, and stream.replay-exceeded when its reload meets REST faults. */
  rest?: RestFaults;
}

export interface WorkloadEvent {
  at: number;
  kind: "trickle" | "burst";
  operations: Operation[];
  /** A burst that belongs to a fault (stream.replay-exceeded): sent once that fault has cut the datastream. */
  faultId?: number;
}

export interface PeriodPlan {
  index: number;
  durationMs: number;
  workload: WorkloadEvent[];
  faults: FaultEvent[];
}

const COMMON_FAULTS: Partial<Record<FaultKind, number>> = {
  "redis.flushall": 3,
  "redis.pause": 3,
  "stream.close": 6,
  "stream.drop": 4,
  "stream.reload": 2,
  "stream.replay-exceeded": 2,
  "rest.errors": 4,
  "replicator.kill": 4,
  "replicator.term": 3,
  "replicator.pause": 2,
};

const TOPOLOGY_FAULTS: Record<Topology, Partial<Record<FaultKind, number>>> = {
  single: { "redis.kill-restart": 4 },
  sentinel: { "redis.kill-restart": 2, "sentinel.failover": 3, "sentinel.kill-master": 2 },
  cluster: { "redis.kill-restart": 2, "cluster.failover": 3, "cluster.kill-master": 2 },
};

const CLOSE_CODES = [1000, 1001, 1011, 1012, 1013, 4000];
/** Faults that make the writer load over REST, drawn right after REST faults begin. */
const LOAD_TRIGGERS: FaultKind[] = ["redis.flushall", "stream.reload", "stream.replay-exceeded"];
/** Mean time between two faults of the schedule. */
const FAULT_GAP_MS = 6000;
/** Mean time between two trickled operations. */
const TRICKLE_GAP_MS = 400;
/** Mean time between two bursts. */
const BURST_GAP_MS = 20_000;

export function faultWeights(
  topology: Topology,
  replicators: number,
  without: readonly FaultKind[] = [],
): Partial<Record<FaultKind, number>> {
  const weights: Partial<Record<FaultKind, number>> = {
    ...COMMON_FAULTS,
    ...TOPOLOGY_FAULTS[topology],
    ...(replicators > 1 ? { "replicator.handover": 3 } : {}),
  };
  for (const kind of without) delete weights[kind];
  return weights;
}

export function replayCommand(o: SoakOptions): string {
  return [
    "npm run soak --",
    `--minutes ${o.minutes}`,
    `--seed ${o.seed}`,
    `--topology ${o.topology}`,
    `--replicators ${o.replicators}`,
    `--loading ${o.loading}`,
    `--checkpoint-every ${o.checkpointEvery}`,
    `--replay-log ${o.replayLog}`,
    ...(o.without.length ? [`--without ${o.without.join(",")}`] : []),
  ].join(" ");
}

export class Planner {
  readonly workload: Workload;
  readonly periods: number;
  private readonly loadRand: Rand;
  private readonly faultRand: Rand;
  private readonly hash = createHash("sha256");
  private faultSerial = 0;
  private next = 0;

  constructor(
    readonly options: SoakOptions,
    fixture: Fixture,
  ) {
    const root = new Rand(options.seed);
    this.loadRand = root.fork("workload");
    this.faultRand = root.fork("faults");
    this.workload = new Workload(fixture, root.fork("model"), DEFAULT_WORKLOAD);
    this.periods = Math.max(1, Math.ceil((options.minutes * 60) / options.checkpointEvery));
    this.hash.update(JSON.stringify(this.workload.initial));
  }

  /** The plan of the next period (periods are planned in order, once each). */
  period(): PeriodPlan {
    const index = this.next++;
    const total = this.options.minutes * 60_000;
    const durationMs = Math.min(
      this.options.checkpointEvery * 1000,
      total - index * this.options.checkpointEvery * 1000,
    );
    const faults = this.faults(durationMs);
    const workload = this.workloadEvents(durationMs, faults);
    const plan = { index, durationMs, workload, faults };
    this.hash.update(JSON.stringify(plan));
    return plan;
  }

  /** A digest of everything planned so far: equal for equal options. */
  fingerprint(): string {
    return this.hash.copy().digest("hex").slice(0, 16);
  }

  private faults(durationMs: number): FaultEvent[] {
    const o = this.options;
    const r = this.faultRand;
    const weights = faultWeights(o.topology, o.replicators, o.without);
    const out: FaultEvent[] = [];
    // Faults start from 1 s into the period until 3 s before its end (their recoveries may run into the checkpoint,
    // which waits for them).
    for (let at = 1000 + r.gap(FAULT_GAP_MS); at < durationMs - 3000; at += 200 + r.gap(FAULT_GAP_MS)) {
      const event = this.fault(r.weighted(weights), at);
      out.push(event);
      // REST faults are there to meet a load: often a data loss or a reload follows them at once.
      const followers = LOAD_TRIGGERS.filter((k) => !o.without.includes(k));
      if (event.kind === "rest.errors" && r.chance(0.6) && followers.length > 0) {
        out.push(this.fault(r.pick(followers), at + r.int(300, 1500)));
      }
    }
    return out.sort((a, b) => a.at - b.at || a.id - b.id);
  }

  private fault(kind: FaultKind, at: number): FaultEvent {
    const r = this.faultRand;
    const o = this.options;
    const base = { id: this.faultSerial++, at, kind };
    const replicator = () => r.int(0, o.replicators - 1);
    switch (kind) {
      case "redis.kill-restart":
        return { ...base, resources: ["redis"], durationMs: r.int(300, 4000), target: r.int(0, 2) };
      case "redis.pause":
        return { ...base, resources: ["redis"], durationMs: r.int(300, 3000), target: r.int(0, 2) };
      case "redis.flushall":
        return { ...base, resources: ["redis"], durationMs: 0, target: r.int(0, 2) };
      case "sentinel.failover":
      case "cluster.failover":
        return { ...base, resources: ["redis"], durationMs: 0, target: r.int(0, 2) };
      case "sentinel.kill-master":
      case "cluster.kill-master":
        return { ...base, resources: ["redis"], durationMs: r.int(1000, 5000), target: r.int(0, 2) };
      case "stream.close":
        return { ...base, resources: ["stream"], durationMs: 0, code: r.pick(CLOSE_CODES) };
      case "stream.drop":
      case "stream.reload":
        return { ...base, resources: ["stream"], durationMs: 0 };
      case "stream.replay-exceeded":
        return {
          ...base,
          resources: ["stream", "emulator-faults"],
          durationMs: r.int(1500, 4000),
          rest: r.chance(0.4) ? this.restFaults() : undefined,
        };
      case "rest.errors":
        return { ...base, resources: ["emulator-faults"], durationMs: r.int(3000, 15_000), rest: this.restFaults() };
      case "replicator.pause": {
        // Up to twice the lease: the writer may lose its lease while frozen, and must not write when it wakes.
        const target = replicator();
        return { ...base, resources: [`replicator:${target}`], durationMs: r.int(500, 8000), target };
      }
      case "replicator.kill":
      case "replicator.term": {
        const target = replicator();
        return { ...base, resources: [`replicator:${target}`], durationMs: r.int(300, 5000), target };
      }
      case "replicator.handover":
        return {
          ...base,
          resources: Array.from({ length: o.replicators }, (_, i) => `replicator:${i}`),
          durationMs: r.int(300, 3000),
        };
    }
  }

  private restFaults(): RestFaults {
    const r = this.faultRand;
    const status = r.pick([500, 502, 503, 429]);
    return {
      rest_error_rate: Math.round(r.int(10, 60)) / 100,
      rest_error_status: status,
      rest_latency_ms: r.chance(0.5) ? r.int(20, 300) : 0,
      ...(status === 429 ? { rest_retry_after_s: 1 } : {}),
      seed: r.int(1, 1_000_000),
    };
  }

  private workloadEvents(durationMs: number, faults: FaultEvent[]): WorkloadEvent[] {
    const r = this.loadRand;
    const w = this.workload;
    const timed: { at: number; kind: "trickle" | "burst"; size: number; faultId?: number }[] = [];
    for (let at = r.gap(TRICKLE_GAP_MS); at < durationMs; at += 20 + r.gap(TRICKLE_GAP_MS)) {
      timed.push({ at, kind: "trickle", size: 1 });
    }
    for (let at = r.gap(BURST_GAP_MS); at < durationMs - 2000; at += 2000 + r.gap(BURST_GAP_MS)) {
      timed.push({ at, kind: "burst", size: r.int(300, 2500) });
    }
    for (const f of faults) {
      if (f.kind === "stream.replay-exceeded") {
        timed.push({ at: f.at, kind: "burst", size: this.options.replayLog + r.int(100, 600), faultId: f.id });
      }
    }
    timed.sort((a, b) => a.at - b.at || (a.faultId ?? -1) - (b.faultId ?? -1));
    // The operations are drawn in time order, so each one is valid after all those before it.
    return timed.map(({ at, kind, size, faultId }) => ({
      at,
      kind,
      operations: kind === "trickle" ? [w.next()] : w.batch(size),
      ...(faultId === undefined ? {} : { faultId }),
    }));
  }
}

export function defaultLoading(seed: number): Loading {
  return new Rand(seed).fork("loading").chance(0.5) ? "async" : "sync";
}
