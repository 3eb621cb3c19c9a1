/**
 * What the soak prints: a timeline of workload, faults and checkpoints as they happen (`+mm:ss.s kind text`), and at
 * the end a summary table (seed, faults injected by kind, changes sent, invariants, checkpoints) with, on failure,
 * the command that replays the run.
 */
import { FAULT_KINDS, type FaultKind, type SoakOptions } from "./plan.js";
import type { MessageCounts } from "./watch.js";

export type TimelineKind = "info" | "load" | "fault" | "check" | "FAIL";

export interface TimelineEntry {
  t: number;
  kind: TimelineKind;
  text: string;
}

export class Timeline {
  readonly entries: TimelineEntry[] = [];

  constructor(
    private readonly epoch: number,
    private readonly print: (line: string) => void,
  ) {}

  add(kind: TimelineKind, text: string): void {
    const entry = { t: Date.now() - this.epoch, kind, text };
    this.entries.push(entry);
    this.print(formatEntry(entry));
  }
}

export function formatEntry(e: TimelineEntry): string {
  const s = e.t / 1000;
  const clock = `${String(Math.floor(s / 60)).padStart(2, "0")}:${(s % 60).toFixed(1).padStart(4, "0")}`;
  return `+${clock} ${e.kind.padEnd(5)} ${e.text}`;
}

export interface CheckpointResult {
  index: number;
  label: string;
  /** Milliseconds since the start. */
  at: number;
  held: boolean;
  failures: string[];
  /** From the end of the faults to every check passed (or given up). */
  settleMs: number;
  verifyCode: number | null;
  sdkChecks: number;
}

export interface InvariantSummary {
  readyWorstMs: number;
  readyLimitMs: number;
  readyViolations: number;
  writesJudged: number;
  writerViolations: number;
  /** Writes by the last holder after a fault removed its lease key, within its TTL (Cluster only, not violations). */
  lostKeyWrites: number;
  unattributedWrites: number;
  /** The first few of them: command, node, time and connection. */
  unattributedSamples: string[];
  roleOverlapSamples: number;
  roleOverlapLongestMs: number;
  exitViolations: number;
}

export interface SoakResult {
  options: SoakOptions;
  fingerprint: string;
  replay: string;
  durationMs: number;
  faults: { kind: FaultKind; planned: number; injected: number; skipped: number }[];
  changes: { total: number; bursts: number; trickled: number; byKind: Record<string, number> };
  replicated: MessageCounts;
  invariants: InvariantSummary;
  checkpoints: CheckpointResult[];
  harnessError?: string;
  held: boolean;
  outDir: string;
}

function row(cells: (string | number)[], widths: number[]): string {
  return cells.map((c, i) => (i === 0 ? String(c).padEnd(widths[i]!) : String(c).padStart(widths[i]!))).join("  ");
}

export function formatSummary(r: SoakResult): string {
  const o = r.options;
  const lines: string[] = [];
  const held = r.checkpoints.filter((c) => c.held).length;
  lines.push("", "==== soak summary ====");
  lines.push(
    `seed ${o.seed} · topology ${o.topology} · ${o.replicators} replicator(s) · loading ${o.loading} · ${o.minutes} min · ` +
      `checkpoint every ${o.checkpointEvery} s · replay log ${o.replayLog}${o.without.length ? ` · without ${o.without.join(",")}` : ""} · ` +
      `plan ${r.fingerprint} · ran ${(r.durationMs / 1000).toFixed(0)} s`,
  );
  lines.push("(the workload and the fault schedule follow from the seed; the timing of processes does not)", "");
  const w = [24, 8, 9, 8];
  lines.push(row(["fault", "planned", "injected", "skipped"], w));
  for (const kind of FAULT_KINDS) {
    const f = r.faults.find((x) => x.kind === kind);
    if (f && f.planned > 0) lines.push(row([kind, f.planned, f.injected, f.skipped], w));
  }
  const totals = r.faults.reduce((a, f) => [a[0]! + f.planned, a[1]! + f.injected, a[2]! + f.skipped], [0, 0, 0]);
  lines.push(row(["total", ...totals], w), "");
  lines.push(
    `changes sent: ${r.changes.total} (${r.changes.bursts} bursts, ${r.changes.trickled} trickled one by one)`,
    `  ${Object.entries(r.changes.byKind)
      .map(([k, n]) => `${k} ${n}`)
      .join(" · ")}`,
    `replicators: received ${r.replicated.received}, applied ${r.replicated.applied}, coalesced ${r.replicated.coalesced}, ` +
      `retried ${r.replicated.retried}, skipped ${r.replicated.skipped}, dropped ${r.replicated.dropped} (sum over processes)`,
    "",
  );
  const inv = r.invariants;
  lines.push(
    "invariants (throughout):",
    `  /ready honest: longest ready-while-data-missing ${(inv.readyWorstMs / 1000).toFixed(1)} s ` +
      `(limit ${(inv.readyLimitMs / 1000).toFixed(1)} s), violations ${inv.readyViolations}`,
    `  one writer: ${inv.writesJudged} writes attributed, ${inv.writerViolations} executed while another process (or nobody) held the lease ` +
      `(${inv.unattributedWrites} writes from unnamed connections not judged)`,
    ...inv.unattributedSamples.map((w) => `    not judged: ${w}`),
    ...(inv.lostKeyWrites > 0
      ? [
          `  (info) ${inv.lostKeyWrites} writes by the last holder after a fault removed its lease key, within its lease TTL ` +
            "(Cluster: docs/design/cluster-fencing.md)",
        ]
      : []),
    `  clean exits: ${inv.exitViolations} violations`,
    `  (info) two processes reporting role writer: ${inv.roleOverlapSamples} samples, longest ${(inv.roleOverlapLongestMs / 1000).toFixed(1)} s`,
    "",
    `checkpoints held: ${held} / ${r.checkpoints.length}`,
  );
  for (const c of r.checkpoints) {
    lines.push(
      `  #${c.index} ${c.label.padEnd(8)} ${c.held ? "held  " : "FAILED"} at +${(c.at / 1000).toFixed(0)} s, settled in ${(c.settleMs / 1000).toFixed(1)} s, ` +
        `verify exit ${c.verifyCode ?? "-"}, ${c.sdkChecks} SDK checks`,
    );
    for (const f of c.failures) lines.push(`      ${f}`);
  }
  if (r.harnessError) lines.push("", `HARNESS ERROR: ${r.harnessError}`);
  lines.push("");
  if (r.held) lines.push(`RESULT: every checkpoint held (logs: ${r.outDir})`);
  else lines.push(`RESULT: FAILED (seed ${o.seed}). Replay with:`, `  ${r.replay}`, `logs and timeline: ${r.outDir}`);
  return lines.join("\n");
}
