/**
 * A quiet checkpoint: once the period's faults are over (their recoveries included) and the workload has stopped,
 * undo what faults left behind (emulator faults cleared, paused nodes resumed, dead ones started, the topology whole,
 * every replicator running), let the system settle — every /ready 200 with exactly one writer, Redis equal to the
 * emulator — within generous bounds, then prove it: `schematic-replicator verify --source <emulator>/_emulator/dump`
 * (the built CLI, as an operator runs it) exits 0, and the official SDK in replicator mode reads a seeded sample of
 * checks exactly as the rules engine evaluates the emulator's state.
 */
import { join } from "node:path";
import type { Fixture } from "../src/model/wire.js";
import type { KeyScheme } from "../src/store/keys.js";
import { type Difference, diffRedis } from "../src/verify/diff.js";
import { formatDifferences } from "../test/helpers/e2e.js";
import { waitFor } from "../test/helpers/redis.js";
import { runNode } from "../test/ops-helpers.js";
import type { Rand } from "./random.js";
import type { CheckpointResult } from "./report.js";
import type { RunContext } from "./runners.js";
import { checkSdkSample, type RulesEngine } from "./sdk-check.js";
import type { Workload } from "./workload.js";

/** Bounds of settling: generous, a loaded 2-core machine must not fail a checkpoint by being slow. */
const READY_WITHIN_MS = 180_000;
const EQUAL_WITHIN_MS = 120_000;
const SDK_CHECKS = 60;

export interface CheckpointContext extends RunContext {
  root: string;
  keys: KeyScheme;
  cacheVersion: string;
  engine: RulesEngine;
  workload: Workload;
  rand: Rand;
  epoch: number;
}

interface ReadyView {
  slot: number;
  status: number;
  role?: string;
  reason?: string;
}

async function readyViews(ctx: RunContext): Promise<ReadyView[]> {
  return await Promise.all(
    ctx.slots.map(async (s) => {
      try {
        const res = await fetch(`${s.url}/ready`, { signal: AbortSignal.timeout(3000) });
        const body = (await res.json()) as { role?: string; reason?: string };
        return { slot: s.index, status: res.status, role: body.role, reason: body.reason };
      } catch (err) {
        return { slot: s.index, status: 0, reason: (err as Error).message };
      }
    }),
  );
}

/** Undoes what the faults left behind; a failure here is the harness's, not the replicator's. */
async function restore(ctx: RunContext): Promise<void> {
  await ctx.emu.admin("POST", "/faults", {});
  await ctx.rig.restore();
  for (const s of ctx.slots) if (!s.alive()) await s.start();
}

export async function quietCheckpoint(ctx: CheckpointContext, index: number, label: string): Promise<CheckpointResult> {
  const started = Date.now();
  const failures: string[] = [];
  ctx.timeline.add("check", `checkpoint #${index} (${label}): restoring, then settling`);
  await restore(ctx);

  let views: ReadyView[] = [];
  try {
    await waitFor(
      async () => {
        views = await readyViews(ctx);
        return views.every((v) => v.status === 200) && views.filter((v) => v.role === "writer").length === 1;
      },
      { timeoutMs: READY_WITHIN_MS, intervalMs: 500, what: "every replicator ready, exactly one writer" },
    );
  } catch {
    failures.push(
      `not every replicator was ready with exactly one writer within ${READY_WITHIN_MS / 1000} s: ${views
        .map((v) => `#${v.slot} ${v.status} ${v.role ?? "?"}${v.reason ? ` (${v.reason})` : ""}`)
        .join("; ")}`,
    );
  }

  const dump = await ctx.emu.admin<Fixture>("GET", "/dump");
  let diffs: Difference[] = [];
  try {
    await waitFor(
      async () => {
        diffs = (await diffRedis(ctx.rig.client, ctx.keys, dump)).differences;
        return diffs.length === 0;
      },
      { timeoutMs: failures.length ? 10_000 : EQUAL_WITHIN_MS, intervalMs: 500, what: "Redis to equal the emulator" },
    );
  } catch {
    // verify below reports the differences as an operator would see them
  }

  const verify = await runNode(
    [join(ctx.root, "dist/cli/replicator.js"), "verify", "--source", `${ctx.emu.url}/_emulator/dump`],
    ctx.root,
    ctx.rig.env,
    120_000,
  );
  if (verify.code !== 0) {
    const out = `${verify.stdout}${verify.stderr}`.trim().split("\n");
    failures.push(
      `verify exited ${verify.code}: ${out.at(-1)}\n        ${out.slice(0, 12).join("\n        ")}` +
        (diffs.length ? `\n        (the soak's own diff: ${formatDifferences(diffs, 5).replaceAll("\n", "; ")})` : ""),
    );
  }

  let sdkChecks = 0;
  if (failures.length === 0) {
    const slot = ctx.slots[index % ctx.slots.length]!;
    const sample = await checkSdkSample({
      rig: ctx.rig,
      healthUrl: `${slot.url}/ready`,
      cacheVersion: ctx.cacheVersion,
      dump,
      retired: { company: ctx.workload.retiredKeys("company"), user: ctx.workload.retiredKeys("user") },
      rand: ctx.rand,
      count: SDK_CHECKS,
      engine: ctx.engine,
    });
    sdkChecks = sample.checks;
    if (sample.mismatches.length > 0) {
      failures.push(
        `the SDK read ${sample.mismatches.length} of ${sample.checks} checks wrong, e.g.:\n        ${sample.mismatches.slice(0, 5).join("\n        ")}`,
      );
    }
    if (sample.apiCalls.length > 0)
      failures.push(`the SDK fell back to the API: ${sample.apiCalls.slice(0, 5).join(", ")}`);
  }

  return {
    index,
    label,
    at: started - ctx.epoch,
    held: failures.length === 0,
    failures,
    settleMs: Date.now() - started,
    verifyCode: verify.code,
    sdkChecks,
  };
}
