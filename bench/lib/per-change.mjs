// What one change costs, measured over a window of a stream scenario (docs/performance.md, "Per change"):
//   - CPU time of the replicator, of Redis (every node) and of the emulator, from /proc, per change;
//   - Redis commands per change, from `INFO commandstats` on every node (commands run by scripts included), with the
//     benchmark's own commands left out — it reads with GETRANGE and sets up with INFO/CONFIG/PSUBSCRIBE, which the
//     replicator never sends — and transactions (EXEC) per change;
//   - the replicator's own count of its writer's Redis round trips (`redis_command_duration_seconds_count` on
//     /metrics, by operation), when it exposes one.
import { cpuSecondsOf } from "./procs.mjs";
import { median, round } from "./stats.mjs";

/** Command names (as `INFO commandstats` spells them) that only the benchmark sends. */
const BENCH_COMMAND =
  /^(getrange|info|config\|.*|psubscribe|punsubscribe|subscribe|unsubscribe|flushall|dbsize|cluster\|.*|client\|.*|command.*|hello)$/;

/** `INFO commandstats` text → Map(command → calls). */
export function parseCommandStats(text) {
  const calls = new Map();
  for (const m of String(text).matchAll(/^cmdstat_(\S+?):calls=(\d+)/gm)) calls.set(m[1], Number(m[2]));
  return calls;
}

/** `/metrics` text → { operation: round trips } of the writer's Redis round-trip histogram, or undefined. */
export function parseRoundTrips(text) {
  const out = {};
  for (const m of String(text).matchAll(
    /^schematic_replicator_redis_command_duration_seconds_count\{[^}]*operation="([^"]+)"[^}]*\} (\S+)$/gm,
  )) {
    out[m[1]] = (out[m[1]] ?? 0) + Number(m[2]);
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

async function commandCalls(redis) {
  const texts = await redis.infoAll("commandstats");
  const sum = new Map();
  for (const text of texts) for (const [k, n] of parseCommandStats(text)) sum.set(k, (sum.get(k) ?? 0) + n);
  return sum;
}

async function roundTrips(rep) {
  try {
    return parseRoundTrips(await (await fetch(`${rep.base}/metrics`)).text());
  } catch {
    return undefined;
  }
}

function cpuOf({ rep, redis, emulator }) {
  return {
    replicator: cpuSecondsOf(rep.pid),
    redis: redis.pids.reduce((a, p) => a + cpuSecondsOf(p), 0),
    emulator: emulator ? cpuSecondsOf(emulator.pid) : 0,
  };
}

/** The per-change figures from two snapshots (pure, for the report and its test). */
export function perChange(changes, before, after) {
  const n = Math.max(1, changes);
  const us = (k) => round(((after.cpu[k] - before.cpu[k]) / n) * 1e6, 1);
  const byType = {};
  let total = 0;
  for (const [name, calls] of after.commands) {
    if (BENCH_COMMAND.test(name)) continue;
    const d = calls - (before.commands.get(name) ?? 0);
    if (d <= 0) continue;
    total += d;
    byType[name] = d;
  }
  const sorted = Object.entries(byType)
    .sort((a, b) => b[1] - a[1])
    .map(([k, d]) => [k, round(d / n, 3)]);
  const out = {
    changes,
    replicator_cpu_s: round(after.cpu.replicator - before.cpu.replicator, 3),
    redis_cpu_s: round(after.cpu.redis - before.cpu.redis, 3),
    emulator_cpu_s: round(after.cpu.emulator - before.cpu.emulator, 3),
    cpu_us_per_change: { replicator: us("replicator"), redis: us("redis"), emulator: us("emulator") },
    redis_commands_per_change: round(total / n, 3),
    redis_transactions_per_change: round((byType.exec ?? 0) / n, 3),
    redis_commands_by_type_per_change: Object.fromEntries(sorted),
  };
  if (before.roundTrips && after.roundTrips) {
    const rt = {};
    let sum = 0;
    for (const [op, count] of Object.entries(after.roundTrips)) {
      const d = count - (before.roundTrips[op] ?? 0);
      rt[op] = round(d / n, 3);
      sum += d;
    }
    out.writer_round_trips_per_change = { total: round(sum / n, 3), ...rt };
  }
  return out;
}

/**
 * Opens a measurement window; `close(changes)` returns the figures above. The replicator's /metrics is read
 * outside the CPU snapshots, so that rendering it is not counted. `freshProcess`: the replicator has only just
 * reported ready, so its round trips are counted from its start (its start-up made a few, against thousands of
 * changes) instead of rendering /metrics first, which takes a cold process ~10 ms: the feed starts at once.
 */
export async function openWindow(procs, { freshProcess = false } = {}) {
  const [roundTripsBefore, commandsBefore] = await Promise.all([
    freshProcess ? {} : roundTrips(procs.rep),
    commandCalls(procs.redis),
  ]);
  const before = { cpu: cpuOf(procs), commands: commandsBefore, roundTrips: roundTripsBefore };
  return {
    async close(changes) {
      const cpu = cpuOf(procs);
      const [commands, roundTripsAfter] = await Promise.all([commandCalls(procs.redis), roundTrips(procs.rep)]);
      return perChange(changes, before, { cpu, commands, roundTrips: roundTripsAfter });
    },
  };
}

/** The median of each per-change figure over runs (a scenario's summary). */
export function medianPerChange(list) {
  const med = (pick) => {
    const xs = list.map(pick).filter((x) => typeof x === "number");
    return xs.length ? round(median(xs), 3) : undefined;
  };
  const keysOf = (pick) => [...new Set(list.flatMap((x) => Object.keys(pick(x) ?? {})))];
  const medianMap = (pick) => Object.fromEntries(keysOf(pick).map((k) => [k, med((x) => pick(x)?.[k] ?? 0)]));
  const out = {
    cpu_us_per_change: medianMap((x) => x.cpu_us_per_change),
    redis_commands_per_change: med((x) => x.redis_commands_per_change),
    redis_transactions_per_change: med((x) => x.redis_transactions_per_change),
    redis_commands_by_type_per_change: medianMap((x) => x.redis_commands_by_type_per_change),
  };
  if (list.some((x) => x.writer_round_trips_per_change))
    out.writer_round_trips_per_change = medianMap((x) => x.writer_round_trips_per_change);
  return out;
}
