/**
 * Runs a period's plan against the processes: the workload one event at a time, in order (its validity depends on
 * it), and each fault at its time, overlapping with the workload and with faults on other resources. Faults sharing
 * a resource (Redis, one replicator, the emulator's fault settings) run one after the other, in plan order.
 *
 * A fault whose target cannot take it at that moment (a failover with no replica in sync) is recorded as skipped;
 * an admin request the emulator refuses, or a replicator that cannot be started again, is a harness error.
 */

import type { FaultEvent, FaultKind, PeriodPlan, WorkloadEvent } from "./plan.js";
import type { Timeline } from "./report.js";
import { type EmulatorProcess, HarnessError, type RedisRig, type ReplicatorSlot, sleep } from "./rig.js";
import type { ChangeKind } from "./workload.js";

export interface FaultOutcome {
  id: number;
  kind: FaultKind;
  done: boolean;
  detail: string;
}

/** The hand-off between a fault that cuts the datastream and the burst that must arrive meanwhile. */
class Gate {
  opened: Promise<void>;
  finished: Promise<void>;
  open!: () => void;
  finish!: () => void;
  constructor() {
    this.opened = new Promise((resolve) => {
      this.open = resolve;
    });
    this.finished = new Promise((resolve) => {
      this.finish = resolve;
    });
  }
}

async function until<T>(promise: Promise<T>, ms: number): Promise<void> {
  await Promise.race([promise, sleep(ms)]);
}

export interface RunContext {
  rig: RedisRig;
  emu: EmulatorProcess;
  slots: ReplicatorSlot[];
  timeline: Timeline;
}

export class FaultRunner {
  readonly outcomes: FaultOutcome[] = [];
  private readonly chains = new Map<string, Promise<void>>();
  private readonly inflight = new Set<Promise<void>>();
  private readonly gates = new Map<number, Gate>();
  private harnessError: Error | undefined;

  constructor(private readonly ctx: RunContext) {}

  gate(faultId: number): Gate {
    let g = this.gates.get(faultId);
    if (!g) {
      g = new Gate();
      this.gates.set(faultId, g);
    }
    return g;
  }

  /** Starts `event` at `startAt + event.at` (wall-clock ms), after earlier faults on its resources. */
  schedule(event: FaultEvent, startAt: number): void {
    const task = (async () => {
      await sleep(Math.max(0, startAt + event.at - Date.now()));
      const before = event.resources.map((r) => this.chains.get(r) ?? Promise.resolve());
      const mine = Promise.all(before).then(() => this.run(event));
      for (const r of event.resources) this.chains.set(r, mine);
      await mine;
    })().catch((err: Error) => {
      this.harnessError ??= err;
    });
    this.inflight.add(task);
    void task.finally(() => this.inflight.delete(task));
  }

  /** Resolves once every scheduled fault (and its recovery) is over; rethrows a harness error. */
  async idle(): Promise<void> {
    while (this.inflight.size > 0) await Promise.all([...this.inflight]);
    this.chains.clear();
    if (this.harnessError) throw this.harnessError;
  }

  private async run(event: FaultEvent): Promise<void> {
    const { timeline } = this.ctx;
    timeline.add("fault", `${event.kind} #${event.id}${describeParams(event)}`);
    try {
      const detail = await this.inject(event);
      this.outcomes.push({ id: event.id, kind: event.kind, done: true, detail });
      timeline.add("fault", `${event.kind} #${event.id} over: ${detail}`);
    } catch (err) {
      if (err instanceof HarnessError) throw err;
      const detail = (err as Error).message.split("\n")[0]!;
      this.outcomes.push({ id: event.id, kind: event.kind, done: false, detail });
      timeline.add("fault", `${event.kind} #${event.id} skipped: ${detail}`);
    } finally {
      // A burst waiting for this fault must never wait for a fault that failed.
      if (event.kind === "stream.replay-exceeded") this.gate(event.id).open();
    }
  }

  private async inject(e: FaultEvent): Promise<string> {
    const { rig, emu, slots } = this.ctx;
    const target = e.target ?? 0;
    switch (e.kind) {
      case "redis.kill-restart":
        return await rig.killRestart(target, e.durationMs);
      case "redis.flushall":
        return await rig.flushAll(target);
      case "redis.pause":
        return await rig.pause(target, e.durationMs);
      case "sentinel.failover":
      case "cluster.failover":
        return await rig.failover(target);
      case "sentinel.kill-master":
      case "cluster.kill-master":
        return await rig.killMaster(target, e.durationMs);
      case "stream.close":
        await emu.admin("POST", "/disconnect", { code: e.code });
        return `closed every datastream connection with ${e.code}`;
      case "stream.drop":
        await emu.admin("POST", "/disconnect", { drop: true });
        return "cut every datastream connection (no close frame)";
      case "stream.reload":
        await emu.admin("POST", "/reload", {});
        return "sent reload to every connection";
      case "stream.replay-exceeded": {
        await emu.admin("POST", "/faults", { datastream_refuse_status: 503, ...(e.rest ?? {}) });
        await emu.admin("POST", "/disconnect", { code: 1012 });
        const gate = this.gate(e.id);
        gate.open();
        await until(gate.finished, 120_000);
        await sleep(e.durationMs);
        await emu.admin("POST", "/faults", {});
        return `datastream refused for ${e.durationMs} ms after a burst larger than the replay log`;
      }
      case "rest.errors":
        await emu.admin("POST", "/faults", e.rest);
        await sleep(e.durationMs);
        await emu.admin("POST", "/faults", {});
        return `REST faults for ${e.durationMs} ms`;
      case "replicator.kill":
      case "replicator.term":
        return await this.restart(slots[target]!, e.kind === "replicator.kill" ? "SIGKILL" : "SIGTERM", e.durationMs);
      case "replicator.pause":
        return await slots[target]!.pause(e.durationMs);
      case "replicator.handover": {
        const writer = await this.writerSlot();
        if (!writer) throw new Error("no replicator is the writer at the moment");
        return `the writer: ${await this.restart(writer, "SIGTERM", e.durationMs)}`;
      }
    }
  }

  private async restart(slot: ReplicatorSlot, signal: "SIGKILL" | "SIGTERM", downMs: number): Promise<string> {
    const exit = await slot.stop(signal);
    if (!exit) throw new Error(`replicator ${slot.index} was not running`);
    await sleep(downMs);
    await slot.start();
    return `replicator ${slot.index} (pid ${exit.pid}) ${signal}: exit ${exit.code ?? exit.signal} after ${exit.afterMs} ms; started again (pid ${slot.pid}) ${downMs} ms later`;
  }

  private async writerSlot(): Promise<ReplicatorSlot | undefined> {
    for (const s of this.ctx.slots) {
      if (!s.alive()) continue;
      try {
        const res = await fetch(`${s.url}/health`, { signal: AbortSignal.timeout(2000) });
        if (((await res.json()) as { role?: string }).role === "writer") return s;
      } catch {
        // not answering: not a writer we can hand over from
      }
    }
    return undefined;
  }
}

function describeParams(e: FaultEvent): string {
  const parts: string[] = [];
  if (e.durationMs) parts.push(`${e.durationMs} ms`);
  if (e.target !== undefined) parts.push(`target ${e.target}`);
  if (e.code !== undefined) parts.push(`code ${e.code}`);
  if (e.rest) parts.push(`REST ${JSON.stringify(e.rest)}`);
  return parts.length ? ` (${parts.join(", ")})` : "";
}

// ---- the workload --------------------------------------------------------------------------------------------------

export class WorkloadStats {
  readonly byKind = new Map<ChangeKind, number>();
  changes = 0;
  bursts = 0;
  trickled = 0;

  count(kind: ChangeKind, n: number): void {
    this.byKind.set(kind, (this.byKind.get(kind) ?? 0) + n);
    this.changes += n;
  }
}

/** Sends the period's workload in order, each event at its time (or as soon as the one before it is done). */
export async function runWorkload(
  plan: PeriodPlan,
  startAt: number,
  ctx: RunContext,
  faults: FaultRunner,
  stats: WorkloadStats,
): Promise<void> {
  let trickledSince = 0;
  let lastReport = Date.now();
  const report = () => {
    if (trickledSince > 0) ctx.timeline.add("load", `trickle: ${trickledSince} changes sent one by one`);
    trickledSince = 0;
    lastReport = Date.now();
  };
  for (const event of plan.workload) {
    await sleep(Math.max(0, startAt + event.at - Date.now()));
    if (event.kind === "trickle") {
      trickledSince += await trickle(event, ctx, stats);
      if (Date.now() - lastReport > 10_000) report();
      continue;
    }
    report();
    await burst(event, ctx, faults, stats);
  }
  report();
}

async function trickle(event: WorkloadEvent, ctx: RunContext, stats: WorkloadStats): Promise<number> {
  let n = 0;
  for (const op of event.operations) {
    for (const c of op.changes) await ctx.emu.admin(c.method, c.path, c.body);
    stats.count(op.kind, op.changes.length);
    n += op.changes.length;
  }
  stats.trickled += n;
  return n;
}

async function burst(event: WorkloadEvent, ctx: RunContext, faults: FaultRunner, stats: WorkloadStats): Promise<void> {
  const gate = event.faultId === undefined ? undefined : faults.gate(event.faultId);
  if (gate) await until(gate.opened, 120_000);
  try {
    const changes = event.operations.flatMap((op) => op.changes);
    const reply = await ctx.emu.admin<{ stream_id?: string; count: number }>("POST", "/bulk", { changes });
    for (const op of event.operations) stats.count(op.kind, op.changes.length);
    stats.bursts++;
    ctx.timeline.add(
      "load",
      `burst of ${changes.length} changes in one POST /bulk${gate ? " (the datastream is cut)" : ""}, last stream id ${reply.stream_id}`,
    );
  } finally {
    gate?.finish();
  }
}
