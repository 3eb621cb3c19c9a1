/**
 * `npm run soak -- [options]`: builds the project (the npm script does), then runs a seeded chaos soak against the
 * build and exits 0 only if every checkpoint held. See docs/reliability.md.
 */
import { existsSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { defaultLoading, FAULT_KINDS, type FaultKind, type Loading, type SoakOptions, type Topology } from "./plan.js";
import { formatSummary } from "./report.js";
import { runSoak } from "./soak.js";

const USAGE = `Usage: npm run soak -- [--minutes 30] [--seed N] [--topology single|sentinel|cluster] [--replicators 1|2]
                       [--loading sync|async] [--checkpoint-every SECONDS] [--replay-log N] [--without KIND,…]
                       [--root DIR] [--out DIR] [--json FILE]

Runs Redis (the topology asked), the emulator and the replicators from the build, drives a seeded random workload
through the emulator's admin API while a seeded schedule injects faults, and holds a quiet checkpoint every
--checkpoint-every seconds (default 60) and at the end: verify = 0 differences, the official SDK reading a sample
correctly, /ready honest and one writer throughout. Prints a timeline and a summary; exits 0 only if every
checkpoint held, 1 otherwise (the summary names the seed and the command that replays the run), 2 on bad usage.

  --minutes N           workload and faults, checkpoints excluded (default 30)
  --seed N              the plan's seed (default: drawn at random, printed)
  --topology T          single (default), sentinel or cluster
  --replicators N       1 or 2 (default 2)
  --loading L           USE_ASYNC_LOADING of the replicators: sync or async (default: drawn from the seed)
  --checkpoint-every S  seconds between quiet checkpoints (default 60)
  --replay-log N        the emulator's replay log (default 2000)
  --without KIND,…      leave these fault kinds out of the schedule (e.g. redis.flushall while a known defect
                        is being fixed); kinds: ${FAULT_KINDS.join(", ")}
  --root DIR            the project whose dist/ runs (default: this one)
  --out DIR             where logs, the timeline and the summary go (default: a new temporary directory)
  --json FILE           also write the summary as JSON
`;

class UsageError extends Error {}

function int(name: string, value: string | undefined, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value) || Number(value) < min || Number(value) > max) {
    throw new UsageError(`--${name}: expected an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  }
  return Number(value);
}

function oneOf<T extends string>(name: string, value: string | undefined, allowed: readonly T[], fallback: T): T {
  if (value === undefined) return fallback;
  if (!allowed.includes(value as T))
    throw new UsageError(`--${name}: expected ${allowed.join(" or ")}, got ${JSON.stringify(value)}`);
  return value as T;
}

function faultKinds(value: string | undefined): FaultKind[] {
  if (value === undefined) return [];
  const kinds = value.split(",").filter((k) => k !== "");
  for (const k of kinds) {
    if (!(FAULT_KINDS as readonly string[]).includes(k)) {
      throw new UsageError(`--without: unknown fault kind ${JSON.stringify(k)} (expected ${FAULT_KINDS.join(", ")})`);
    }
  }
  return kinds as FaultKind[];
}

function parse(argv: string[]): SoakOptions & { root: string; out?: string; json?: string } {
  const { values } = parseArgs({
    args: argv,
    options: {
      minutes: { type: "string" },
      seed: { type: "string" },
      topology: { type: "string" },
      replicators: { type: "string" },
      loading: { type: "string" },
      "checkpoint-every": { type: "string" },
      "replay-log": { type: "string" },
      without: { type: "string" },
      root: { type: "string" },
      out: { type: "string" },
      json: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const seed = int("seed", values.seed, Math.floor(Math.random() * 1_000_000), 0, 2 ** 31 - 1);
  const root = values.root ?? fileURLToPath(new URL("..", import.meta.url));
  if (!existsSync(`${root}/dist/cli/replicator.js`)) {
    throw new UsageError(`${root}/dist/cli/replicator.js is missing: build first (npm run soak builds the project)`);
  }
  return {
    minutes: int("minutes", values.minutes, 30, 1, 24 * 60),
    seed,
    topology: oneOf<Topology>("topology", values.topology, ["single", "sentinel", "cluster"], "single"),
    replicators: oneOf("replicators", values.replicators, ["1", "2"], "2") === "1" ? 1 : 2,
    loading: oneOf<Loading>("loading", values.loading, ["sync", "async"], defaultLoading(seed)),
    checkpointEvery: int("checkpoint-every", values["checkpoint-every"], 60, 10, 3600),
    replayLog: int("replay-log", values["replay-log"], 2000, 100, 1_000_000),
    without: faultKinds(values.without),
    root,
    out: values.out,
    json: values.json,
  };
}

async function main(): Promise<number> {
  let options: ReturnType<typeof parse>;
  try {
    options = parse(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`soak: ${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const result = await runSoak(options);
  process.stdout.write(`${formatSummary(result)}\n`);
  if (options.json) writeFileSync(options.json, `${JSON.stringify(result, null, 2)}\n`);
  return result.held ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`soak: ${(err as Error).stack ?? err}\n`);
    process.exit(1);
  },
);
