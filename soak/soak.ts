/**
 * One soak run: start Redis, the emulator and the replicators; watch the invariants all along; then, period after
 * period, run the planned workload and faults and hold a quiet checkpoint. The run stops at the first checkpoint that
 * does not hold (what follows would only repeat it) and returns the summary. docs/reliability.md describes it.
 */
import type { ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadFixtureFile } from "../src/emulator/fixture.js";
import { KeyScheme } from "../src/store/keys.js";
import { freePort, waitFor } from "../test/helpers/redis.js";
import { quietCheckpoint } from "./checkpoint.js";
import { exitViolations, readyViolations, roleOverlap, writerViolations } from "./invariants.js";
import { FAULT_KINDS, type FaultKind, Planner, replayCommand, type SoakOptions } from "./plan.js";
import { Rand } from "./random.js";
import {
  type CheckpointResult,
  formatEntry,
  formatSummary,
  type InvariantSummary,
  type SoakResult,
  Timeline,
} from "./report.js";
import {
  type EmulatorProcess,
  LEASE_TTL_MS,
  MARKER_CHECK_MS,
  type RedisRig,
  ReplicatorSlot,
  replicatorEnv,
  SHUTDOWN_TIMEOUT_MS,
  startEmulatorProcess,
  startRedisRig,
} from "./rig.js";
import { FaultRunner, runWorkload, WorkloadStats } from "./runners.js";
import { startRulesEngine } from "./sdk-check.js";
import { DebugCounters, LeasePoller, ReadySampler, RoleWatch, WriteRecorder } from "./watch.js";
import { anchorIds } from "./workload.js";

const LEASE_KEY = "schematic:datastream:writer_lock";
/** /ready may stay 200 this long beyond the marker check interval while data is missing (timer and sampling slack). */
const READY_ALLOWANCE_MS = 2000;
const READY_LIMIT_MS = MARKER_CHECK_MS + READY_ALLOWANCE_MS;

export interface RunOptions extends SoakOptions {
  /** Where dist/ is (the build the soak runs). */
  root: string;
  /** Where logs and the timeline go (default: a new temporary directory). */
  out?: string;
  print?: (line: string) => void;
}

/** Everything the soak started, killed without ceremony if the soak itself is interrupted. */
const children = new Set<() => (ChildProcess | undefined)[]>();
function killChildren(): void {
  for (const get of children) {
    for (const c of get()) {
      if (c && c.exitCode === null && c.signalCode === null) {
        c.kill("SIGCONT");
        c.kill("SIGKILL");
      }
    }
  }
}
let hooked = false;
function hookExit(): void {
  if (hooked) return;
  hooked = true;
  process.once("exit", killChildren);
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => {
      killChildren();
      process.exit(130);
    });
  }
}

export async function runSoak(options: RunOptions): Promise<SoakResult> {
  const print = options.print ?? ((line: string) => console.log(line));
  const epoch = Date.now();
  const outDir = options.out ?? mkdtempSync(join(tmpdir(), `schematic-soak-${options.seed}-`));
  mkdirSync(outDir, { recursive: true });
  const timeline = new Timeline(epoch, print);
  const planner = new Planner(options, loadFixtureFile(join(options.root, "examples/fixture.json")));
  const fixtureFile = join(outDir, "fixture.json");
  writeFileSync(fixtureFile, JSON.stringify(planner.workload.initial));
  hookExit();
  timeline.add("info", `soak: ${replayCommand(options)}`);

  const checkpoints: CheckpointResult[] = [];
  const stats = new WorkloadStats();
  const planned = new Map<FaultKind, number>();
  const inv: InvariantSummary = {
    readyWorstMs: 0,
    readyLimitMs: READY_LIMIT_MS,
    readyViolations: 0,
    writesJudged: 0,
    writerViolations: 0,
    lostKeyWrites: 0,
    unattributedWrites: 0,
    unattributedSamples: [],
    roleOverlapSamples: 0,
    roleOverlapLongestMs: 0,
    exitViolations: 0,
  };
  let harnessError: string | undefined;
  let rig: RedisRig | undefined;
  let emu: EmulatorProcess | undefined;
  const slots: ReplicatorSlot[] = [];
  let faults: FaultRunner | undefined;
  const watchers: { stop(): Promise<void> }[] = [];
  let counters: DebugCounters | undefined;

  try {
    rig = await startRedisRig(options.topology);
    children.add(rig.processes.bind(rig));
    timeline.add("info", `Redis (${options.topology}) up: ${JSON.stringify(rig.env)}`);
    emu = await startEmulatorProcess(options.root, fixtureFile, options.replayLog);
    const theEmu = emu;
    children.add(() => [theEmu.child]);
    timeline.add("info", `emulator up at ${emu.url} (replay log ${options.replayLog})`);
    const env = replicatorEnv(emu, rig, options.loading);
    for (let i = 0; i < options.replicators; i++) {
      const slot = new ReplicatorSlot(i, env, await freePort(), join(options.root, "dist/cli/replicator.js"));
      slots.push(slot);
      children.add(() => [slot.current?.process]);
    }
    // The first one loads everything; the others join as standbys.
    await slots[0]!.start();
    await waitFor(async () => (await fetch(`${slots[0]!.url}/ready`)).status === 200, {
      timeoutMs: 180_000,
      intervalMs: 250,
      what: "the first replicator's initial load",
    });
    for (const s of slots.slice(1)) await s.start();
    const ready = (await (await fetch(`${slots[0]!.url}/ready`)).json()) as { cache_version: string };
    const keys = new KeyScheme("schematic:", ready.cache_version);
    timeline.add("info", `replicators started (loading ${options.loading}, cache version ${ready.cache_version})`);

    const recorder = new WriteRecorder(rig.dataPorts(), LEASE_KEY);
    await recorder.start();
    const poller = new LeasePoller(rig.client, LEASE_KEY);
    const sampler = new ReadySampler(
      rig.client,
      anchorIds(planner.workload.options.anchors).map((id) => keys.companyId(id)),
      slots,
      epoch,
    );
    counters = new DebugCounters(slots);
    const theRig = rig;
    const roles = new RoleWatch(
      () => theRig.dataPorts(),
      (text) => timeline.add("info", `roles: ${text}`),
    );
    for (const w of [poller, sampler, counters, roles]) w.start();
    watchers.push(sampler, poller, counters, recorder, roles);

    const ctx = { rig, emu, slots, timeline };
    faults = new FaultRunner(ctx);
    const checkCtx = {
      ...ctx,
      root: options.root,
      keys,
      cacheVersion: ready.cache_version,
      engine: await startRulesEngine(),
      workload: planner.workload,
      rand: new Rand(options.seed).fork("checkpoints"),
      epoch,
      outDir,
    };

    let exitsSeen = 0;
    let readySeen = 0;
    // Cluster writes have no server-side fence: see writerViolations.
    const lostKeyGraceMs = options.topology === "cluster" ? LEASE_TTL_MS : 0;
    /** The continuous invariants over what was recorded since the last checkpoint. */
    const judge = (): string[] => {
      const out: string[] = [];
      const ready = readyViolations(sampler.samples, READY_LIMIT_MS);
      inv.readyWorstMs = ready.worstMs;
      for (const v of ready.violations.slice(readySeen)) {
        out.push(
          `/ready of replicator ${v.slot} (pid ${v.pid}) was 200 for ${((v.to - v.from) / 1000).toFixed(1)} s ` +
            `(+${(v.from / 1000).toFixed(1)} s to +${(v.to / 1000).toFixed(1)} s) while anchor keys were missing from Redis`,
        );
      }
      readySeen = ready.violations.length;
      inv.readyViolations = ready.violations.length;
      const overlap = roleOverlap(sampler.samples);
      inv.roleOverlapSamples = overlap.samples;
      inv.roleOverlapLongestMs = overlap.longestMs;

      recorder.resolve();
      const lastPoll = poller.polls.at(-1);
      if (lastPoll) {
        const judgeable = recorder.writes.filter((w) => w.time < lastPoll.sent - 1);
        const rest = recorder.writes.filter((w) => w.time >= lastPoll.sent - 1);
        const { violations, excused } = writerViolations(judgeable, poller.polls, lostKeyGraceMs);
        inv.lostKeyWrites += excused.length;
        for (const v of violations.slice(0, 5)) {
          out.push(
            `pid ${v.write.pid} wrote (${v.write.command}) on port ${v.write.port} at ${new Date(v.write.time).toISOString()} ` +
              `while ${v.holderPid === undefined ? "nobody" : `pid ${v.holderPid}`} held the lease (polls answered ` +
              `${new Date(v.polls[0].received).toISOString()} and sent ${new Date(v.polls[1].sent).toISOString()} ` +
              `both saw ${v.holderPid === undefined ? "no lease key" : "its token"})`,
          );
        }
        inv.writerViolations += violations.length;
        inv.writesJudged += judgeable.length;
        recorder.writes.splice(0, recorder.writes.length, ...rest);
        poller.forgetBefore(Math.min(lastPoll.sent, ...rest.map((w) => w.time)));
      }
      inv.unattributedWrites = recorder.unattributed;
      inv.unattributedSamples = [...recorder.unattributedSamples];

      const exits = slots.flatMap((s) => s.exits);
      const bad = exitViolations(exits, SHUTDOWN_TIMEOUT_MS + 5000);
      out.push(...bad.slice(exitsSeen));
      exitsSeen = bad.length;
      inv.exitViolations = bad.length;
      return out;
    };

    const checkpoint = async (index: number, label: string): Promise<boolean> => {
      const result = await quietCheckpoint(checkCtx, index, label);
      result.failures.push(...judge());
      result.held = result.failures.length === 0;
      checkpoints.push(result);
      timeline.add(
        result.held ? "check" : "FAIL",
        `checkpoint #${index} (${label}) ${result.held ? "held" : "FAILED"} after ${(result.settleMs / 1000).toFixed(1)} s` +
          (result.held ? "" : `:\n      ${result.failures.join("\n      ")}`),
      );
      return result.held;
    };

    if (await checkpoint(0, "initial")) {
      for (let p = 0; p < planner.periods; p++) {
        const plan = planner.period();
        for (const f of plan.faults) planned.set(f.kind, (planned.get(f.kind) ?? 0) + 1);
        timeline.add(
          "info",
          `period ${p + 1}/${planner.periods}: ${(plan.durationMs / 1000).toFixed(0)} s, ` +
            `${plan.workload.reduce((n, e) => n + e.operations.reduce((m, o) => m + o.changes.length, 0), 0)} changes, ` +
            `${plan.faults.length} faults (plan ${planner.fingerprint()})`,
        );
        const startAt = Date.now();
        for (const f of plan.faults) faults.schedule(f, startAt);
        await runWorkload(plan, startAt, ctx, faults, stats);
        await faults.idle();
        if (!(await checkpoint(p + 1, p + 1 === planner.periods ? "final" : `period ${p + 1}`))) break;
      }
    }
  } catch (err) {
    harnessError = (err as Error).stack ?? String(err);
    timeline.add("FAIL", `harness error: ${(err as Error).message}`);
  } finally {
    await faults?.idle().catch(() => undefined);
    for (const w of watchers) await w.stop().catch(() => undefined);
    for (const s of slots) await s.shutdown().catch(() => undefined);
    for (const s of slots) writeFileSync(join(outDir, `replicator-${s.index}.log`), `${s.allLogs().join("\n")}\n`);
    await emu?.stop().catch(() => undefined);
    await rig?.stop().catch(() => undefined);
  }

  const byKind: Record<string, number> = {};
  for (const [k, n] of stats.byKind) byKind[k] = n;
  const outcomes = faults?.outcomes ?? [];
  const result: SoakResult = {
    options: {
      minutes: options.minutes,
      seed: options.seed,
      topology: options.topology,
      replicators: options.replicators,
      loading: options.loading,
      checkpointEvery: options.checkpointEvery,
      replayLog: options.replayLog,
      without: options.without,
    },
    fingerprint: planner.fingerprint(),
    replay: replayCommand(options),
    durationMs: Date.now() - epoch,
    faults: FAULT_KINDS.map((kind) => ({
      kind,
      planned: planned.get(kind) ?? 0,
      injected: outcomes.filter((o) => o.kind === kind && o.done).length,
      skipped: outcomes.filter((o) => o.kind === kind && !o.done).length,
    })),
    changes: { total: stats.changes, bursts: stats.bursts, trickled: stats.trickled, byKind },
    replicated: counters?.total() ?? { received: 0, applied: 0, coalesced: 0, retried: 0, skipped: 0, dropped: 0 },
    invariants: inv,
    checkpoints,
    harnessError,
    held: harnessError === undefined && checkpoints.length === planner.periods + 1 && checkpoints.every((c) => c.held),
    outDir,
  };
  writeFileSync(join(outDir, "timeline.txt"), `${timeline.entries.map(formatEntry).join("\n")}\n`);
  writeFileSync(join(outDir, "summary.txt"), `${formatSummary(result)}\n`);
  writeFileSync(join(outDir, "summary.json"), `${JSON.stringify(result, null, 2)}\n`);
  return result;
}
