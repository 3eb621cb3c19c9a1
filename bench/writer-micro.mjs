#!/usr/bin/env node
// Redis CPU per change of StoreWriter.apply (single node), the cost the fenced write path puts on Redis. Starts its
// own redis-server (no persistence) on a free port and writes `--changes` changes (default 20,000) of one ~2.7 KB
// body and two lookup keys each (3 SETs, no expiry), `--batches` changes per apply() call, through the built code
// (`--dist`, default dist/ of this checkout: run `npm run build` first). Redis CPU is read from INFO cpu
// (used_cpu_user + used_cpu_sys, µs resolution) around each round and cross-checked with /proc/<pid>/stat
// (utime + stime, 10 ms ticks); the client's own CPU (process.cpuUsage) and wall time are shown too. Each mode and
// batch size runs one warm-up round then `--rounds` rounds (default 5) over the same keys (overwrites, as in steady
// state); the table gives the median and the minimum.
//
// Modes: fenced (StoreWriter with a lease that holds our token), checked (the same, each body's SET carrying the
// `ifStoredKeys` check that lets a batch skip reading the bodies first: docs/design/lookup-keys.md), unfenced
// (StoreWriter without a lease, as with WRITER_LOCK_DISABLED), and references that do not use StoreWriter: pipeline
// (plain pipelined SETs), multi (the same SETs in one MULTI/EXEC per batch) and mset (one plain MSET per batch, no
// transaction).
//
// Usage: node bench/writer-micro.mjs [--dist DIR] [--changes N] [--rounds N] [--batches 5,320]
//                                    [--modes fenced,checked,unfenced,pipeline,multi,mset] [--json]
// A/B: copy a build of the other version somewhere (with a package.json saying {"type":"module"} and this
// checkout's node_modules reachable) and pass it as --dist.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { Redis } from "ioredis";
import { freePort, ROOT, sleep, waitFor } from "./lib/procs.mjs";

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
}
const DIST = resolve(option("dist", join(ROOT, "dist")));
const CHANGES = Number(option("changes", "20000"));
const ROUNDS = Number(option("rounds", "5"));
const BATCHES = option("batches", "5,320").split(",").map(Number);
const MODES = option("modes", "fenced,checked,unfenced,pipeline,multi,mset").split(",");
const JSON_ONLY = process.argv.includes("--json");

const { StoreWriter } = await import(pathToFileURL(join(DIST, "store/writer.js")).href);

// ---- data: one body of ~2.7 KB and two lookup keys per change ------------------------------------------------------
const PREFIX = "schematic:";
const filler = "x".repeat(2560);
const changes = Array.from({ length: CHANGES }, (_, i) => {
  const id = `comp_${String(i).padStart(8, "0")}`;
  const keys = `{"id":"${id.toLowerCase()}","domain":"${i}.example.com"}`;
  return [
    {
      op: "set",
      key: `${PREFIX}company:4b54a537:${id}`,
      value: `{"id":"${id}","n":${i},"keys":${keys},"pad":"${filler}"}`,
      keys,
    },
    { op: "set", key: `${PREFIX}company:4b54a537:id:${id.toLowerCase()}`, value: JSON.stringify(id) },
    { op: "set", key: `${PREFIX}company:4b54a537:domain:${i}.example.com`, value: JSON.stringify(id) },
  ];
});
const bodyBytes = changes[0][0].value.length;

// ---- Redis ----------------------------------------------------------------------------------------------------------
const dir = mkdtempSync(join(tmpdir(), "writer-micro-redis-"));
const port = await freePort();
const server = spawn(
  "redis-server",
  ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir],
  { stdio: "ignore" },
);
const stopServer = () => {
  if (server.exitCode === null) server.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
};
process.on("exit", stopServer);
const client = new Redis({ port, host: "127.0.0.1", lazyConnect: true });
client.on("error", () => undefined);
await waitFor("redis-server", async () => {
  if (client.status !== "ready") await client.connect().catch(() => undefined);
  return (await client.ping()) === "PONG";
});
const admin = new Redis({ port, host: "127.0.0.1" });

async function redisCpuUs() {
  const info = await admin.info("cpu");
  const field = (name) => Number(new RegExp(`^${name}:([\\d.]+)`, "m").exec(info)?.[1] ?? Number.NaN);
  return (field("used_cpu_user") + field("used_cpu_sys")) * 1e6;
}
function procTicks(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

const LEASE_KEY = `${PREFIX}datastream:writer_lock`;
const TOKEN = "bench-token";

/** apply(ops) for one mode. */
function applier(mode) {
  if (mode === "fenced" || mode === "checked") {
    const w = new StoreWriter(client, { ttlMs: 0, lease: { key: LEASE_KEY, token: () => TOKEN } });
    if (mode === "fenced") return (ops) => w.apply(ops.map(({ keys: _, ...op }) => op));
    return (ops) => w.apply(ops.map(({ keys, ...op }) => (keys ? { ...op, ifStoredKeys: [keys] } : op)));
  }
  if (mode === "unfenced") {
    const w = new StoreWriter(client, { ttlMs: 0 });
    return (ops) => w.apply(ops);
  }
  const transaction = mode === "multi";
  const mset = mode === "mset";
  if (!transaction && !mset && mode !== "pipeline") throw new Error(`unknown mode ${mode}`);
  return async (ops) => {
    const pipe = client.pipeline();
    if (transaction) pipe.call("multi");
    if (mset) pipe.mset(...ops.flatMap((op) => [op.key, op.value]));
    else for (const op of ops) pipe.set(op.key, op.value);
    if (transaction) pipe.call("exec");
    for (const [err] of (await pipe.exec()) ?? []) if (err) throw err;
  };
}

async function round(apply, batch) {
  const cpu0 = await redisCpuUs();
  const ticks0 = procTicks(server.pid);
  const client0 = process.cpuUsage();
  const wall0 = performance.now();
  for (let from = 0; from < CHANGES; from += batch) {
    await apply(changes.slice(from, from + batch).flat());
  }
  const wall = performance.now() - wall0;
  const own = process.cpuUsage(client0);
  const ticks = procTicks(server.pid) - ticks0;
  const cpu = (await redisCpuUs()) - cpu0;
  return {
    redis: cpu / CHANGES,
    redisProc: (ticks * 10_000) / CHANGES,
    client: (own.user + own.system) / CHANGES,
    wall: (wall * 1000) / CHANGES,
  };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const rows = [];
for (const batch of BATCHES) {
  for (const mode of MODES) {
    await admin.flushall();
    await admin.set(LEASE_KEY, TOKEN, "PX", 3_600_000);
    const apply = applier(mode);
    await round(apply, batch); // warm-up: creates the keys; the measured rounds overwrite them
    const runs = [];
    for (let r = 0; r < ROUNDS; r++) runs.push(await round(apply, batch));
    const last = changes.at(-1);
    if ((await admin.get(last[0].key)) !== last[0].value) throw new Error(`${mode}: the last body was not written`);
    const stat = (k) => ({ median: median(runs.map((x) => x[k])), min: Math.min(...runs.map((x) => x[k])) });
    rows.push({
      batch,
      ops: batch * 3,
      mode,
      redis: stat("redis"),
      redisProc: stat("redisProc"),
      client: stat("client"),
      wall: stat("wall"),
    });
    await sleep(50);
  }
}
client.disconnect();
admin.disconnect();
stopServer();

const result = { dist: DIST, changes: CHANGES, rounds: ROUNDS, bodyBytes, rows };
if (!JSON_ONLY) {
  const f = (s) => `${s.median.toFixed(1).padStart(6)} (${s.min.toFixed(1).padStart(5)})`;
  process.stdout.write(
    `StoreWriter from ${DIST}\n${CHANGES} changes of a ${bodyBytes}-byte body + 2 lookup keys (3 SETs), ` +
      `${ROUNDS} rounds; µs per change, median (min)\n` +
      `batch (changes/ops)  mode       Redis INFO cpu   Redis /proc      client CPU       wall\n`,
  );
  for (const r of rows) {
    process.stdout.write(
      `${`${r.batch}/${r.ops}`.padEnd(20)} ${r.mode.padEnd(10)} ${f(r.redis)}   ${f(r.redisProc)}   ${f(r.client)}   ${f(r.wall)}\n`,
    );
  }
}
process.stdout.write(`${JSON.stringify(result)}\n`);
