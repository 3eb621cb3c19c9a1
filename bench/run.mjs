#!/usr/bin/env node
import { existsSync, mkdirSync } from "node:fs";
// `npm run bench` (issues 6, 15, 16): starts its own Redis, emulator and replicators from dist/ and measures
//   1. stream throughput: 100k company updates of ~2 KB pushed as fast as the replicator takes them, until the
//      last one is readable in Redis (every setting at its default);
//   2. latency: changes at a fixed 5,000/s for 20 s, push → readable in Redis (defaults);
//   3. initial load: 100k companies + 100k users over REST until /ready (loader tuned);
//   4. memory: replicator RSS at rest after the load, and peak during 1–3;
//   5. ceilings in the same run: the same feed into a bare WebSocket client, and a bare pipelined SET loop with
//      the same keys and values; and the ratio of 1 to the lower ceiling;
//   6. trickle: lone changes at 50/s for 10 s to the warm replicator of 1–2, push → readable;
//   7. fresh: a replicator started fresh (resuming from the cursor) gets 1,000/s and 5,000/s straight after /ready;
//   8. scale: the initial load at several sizes and row shapes, as a curve, each beside a fetch-and-parse ceiling.
// Every stream scenario (1, 2, 6, 7) also reports CPU µs per change (replicator, Redis, emulator) and Redis
// commands and transactions per change. Prints a table, then the JSON object (last on stdout). How it measures:
// docs/performance.md. Options: bench/lib/options.mjs (`--help`).
import { availableParallelism, cpus, loadavg, totalmem } from "node:os";
import { join } from "node:path";
import { openLatencyProbe } from "./lib/latency-probe.mjs";
import { LOAD_TUNING, measureLoad } from "./lib/load.mjs";
import { optionsOrExit } from "./lib/options.mjs";
import { medianPerChange, openWindow } from "./lib/per-change.mjs";
import {
  cpuSecondsOf,
  cpuSnapshot,
  droppedEnv,
  killAllChildren,
  memoryOf,
  nowNs,
  otherLoad,
  ROOT,
  rssSampler,
  runJsonScript,
  setProductRoot,
  sleep,
  startChild,
  startEmulator,
  startRedis,
  startReplicator,
  waitFor,
} from "./lib/procs.mjs";
import { runScale } from "./lib/scale.mjs";
import { mb, median, round, summarise } from "./lib/stats.mjs";

const opts = optionsOrExit(process.argv.slice(2));
const has = (s) => opts.scenarios.has(s);
const runsOf = (scenario) => opts.runs ?? (scenario === "throughput" || scenario === "ceilings" ? 3 : 1);
const say = (line) => {
  if (!opts.jsonOnly) process.stderr.write(`[bench] ${line}\n`);
};
const usage = (message) => {
  process.stderr.write(`bench: ${message}\n`);
  process.exit(2);
};

const PRODUCT = opts.root ?? ROOT;
if (!existsSync(join(PRODUCT, "dist/cli/replicator.js")))
  usage(`${PRODUCT}/dist is missing: run \`npm run build\` first (npm run bench does)`);
setProductRoot(PRODUCT);

const N = opts.companies;
const WIDTH = Math.max(6, String(N).length);
const companyId = (i) => `comp_${String(i + 1).padStart(WIDTH, "0")}`;
const GENERATE = `companies=${N},users=${opts.users},flags=200,seed=1`;
const PREFIX = "schematic:";
const STREAM = ["throughput", "latency", "trickle"];

// ---- shared state ------------------------------------------------------------------------------------------------

let redis;
let emulator;
let version;
const result = {
  benchmark: "schematic-replicator issue 6",
  started_at: new Date().toISOString(),
  machine: {
    cpus: availableParallelism(),
    cpu_model: cpus()[0]?.model ?? "unknown",
    memory_gb: round(totalmem() / 1024 ** 3, 1),
    node: process.version,
  },
  setup: {
    redis: opts.cluster ? "cluster (3 masters, no replicas)" : "single node",
    data_set: GENERATE,
    stream_settings: "all defaults",
    load_settings: LOAD_TUNING,
    replicator_env: opts.env ?? {},
    replicator_node_args: opts.nodeArgs ?? [],
    inherited_env_not_passed_on: droppedEnv,
    runs: Object.fromEntries([...opts.scenarios].map((s) => [s, runsOf(s)])),
  },
};
const peaks = {};

async function admin(path, body) {
  const res = await fetch(`${emulator.url}/_emulator${path}`, {
    method: body === undefined ? "GET" : "POST",
    headers: { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await res.json();
  if (res.status !== 200) throw new Error(`emulator ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

/**
 * With --wait-quiet S: before a measured run, wait (at most S seconds) until processes outside the benchmark use
 * less than 0.25 cores over 2 s, so that other work on the host disturbs the run less. Returns the seconds waited.
 */
async function quiet() {
  if (!opts.waitQuiet) return 0;
  const t0 = Date.now();
  for (;;) {
    const a = cpuSnapshot();
    await sleep(2000);
    const load = otherLoad(a, cpuSnapshot());
    if (load < 0.25 || Date.now() - t0 > opts.waitQuiet * 1000) {
      if (load >= 0.25) say(`the host is still busy (${round(load, 2)} cores of other work); measuring anyway`);
      return Math.round((Date.now() - t0) / 1000);
    }
  }
}

const feed = (spec) => admin("/bulk", { generate: { kind: "company", ...spec } });
const idKey = (id) => `${PREFIX}company:${version}:${id}`;
const envOf = (value) => (value ? /"environment_id":"([^"]*)"/.exec(value)?.[1] : undefined);

// ---- 5. ceilings -----------------------------------------------------------------------------------------------

async function ceilingWs(run) {
  const tag = `ceil-ws-${run}-${Date.now()}`;
  const warmTag = `${tag}-warm`;
  const warmCount = Math.min(N, 20_000);
  let subscribed;
  let warmed;
  let line;
  const ready = new Promise((r) => {
    subscribed = r;
  });
  const warm = new Promise((r) => {
    warmed = r;
  });
  const done = new Promise((resolveLine) => {
    let buf = "";
    line = (d) => {
      buf += d;
      if (buf.includes("subscribed\n")) subscribed();
      if (buf.includes("warmed\n")) warmed();
      const m = /(\{.*\})\n/.exec(buf);
      if (m) resolveLine(JSON.parse(m[1]));
    };
  });
  const child = startChild(
    "ceiling-ws",
    process.execPath,
    [
      "bench/ceiling-ws.mjs",
      `${emulator.url.replace("http", "ws")}/datastream`,
      String(N),
      tag,
      warmTag,
      String(warmCount),
    ],
    {
      onStdout: (d) => line(String(d)),
    },
  );
  const failed = child.exited.then(() => Promise.reject(new Error(`ceiling-ws exited: ${child.stderr()}`)));
  await Promise.race([ready, failed]);
  // Warm-up (not timed): the client's code gets optimised, as the long-lived replicator's is.
  await feed({ count: warmCount, offset: N - warmCount, tag: warmTag });
  await Promise.race([warm, failed]);
  await quiet();
  const m0 = cpuSnapshot();
  const pushed = await feed({ count: N, tag });
  const out = await Promise.race([
    done,
    child.exited.then(() => Promise.reject(new Error(`ceiling-ws: ${child.stderr()}`))),
  ]);
  await child.exited;
  const seconds = Number(BigInt(out.last_ns) - BigInt(pushed.push_started_ns)) / 1e9;
  return {
    changes_per_s: N / seconds,
    seconds,
    push_s: Number(BigInt(pushed.push_ended_ns) - BigInt(pushed.push_started_ns)) / 1e9,
    client_cpu_s: out.cpu_s,
    other_load_cores: otherLoad(m0, cpuSnapshot()),
  };
}

async function ceilingSet(run, { chunk = 500, depth = 2 } = {}) {
  const tag = `ceil-set-${run}`;
  const options = {
    addrs: redis.addrs,
    cluster: redis.cluster,
    count: N,
    version,
    tag,
    seed: 1,
    flags: 200,
    chunk,
    depth,
  };
  const m0 = cpuSnapshot();
  const out = await runJsonScript("ceiling-set", "bench/ceiling-set.mjs", options);
  const seconds = Number(BigInt(out.end_ns) - BigInt(out.start_ns)) / 1e9;
  return {
    changes_per_s: N / seconds,
    commands_per_s: out.commands / seconds,
    seconds,
    commands: out.commands,
    client_cpu_s: out.cpu_s,
    other_load_cores: otherLoad(m0, cpuSnapshot()),
  };
}

async function runCeilings() {
  const runs = runsOf("ceilings");
  const ws = [];
  const set = [];
  // An untimed SET pass first: the timed ones overwrite existing keys, as the replicator's updates do (a first write
  // into an empty Redis also pays for its memory growth).
  await ceilingSet(0);
  for (let r = 1; r <= runs; r++) {
    ws.push(await ceilingWs(r));
    say(`ceiling ws   run ${r}/${runs}: ${Math.round(ws.at(-1).changes_per_s)} changes/s`);
    await quiet();
    set.push(await ceilingSet(r));
    say(`ceiling SET  run ${r}/${runs}: ${Math.round(set.at(-1).changes_per_s)} changes/s`);
  }
  await redis.flush();
  const wsRate = summarise(ws.map((x) => x.changes_per_s));
  const setRate = summarise(set.map((x) => x.changes_per_s));
  const lower = wsRate.median <= setRate.median ? "ws" : "set";
  result.ceilings = {
    ws: { ...roundAll(wsRate), runs: ws.map(roundAll) },
    set: { ...roundAll(setRate), runs: set.map(roundAll) },
    lower,
    lower_changes_per_s: Math.round(Math.min(wsRate.median, setRate.median)),
  };
}

function roundAll(o) {
  const out = {};
  for (const [k, v] of Object.entries(o))
    out[k] = typeof v === "number" ? (Math.abs(v) >= 100 ? Math.round(v) : round(v, 3)) : v;
  return out;
}

// ---- 3. initial load ---------------------------------------------------------------------------------------------

function profileArgs(name) {
  if (!opts.profile) return opts.nodeArgs ?? [];
  mkdirSync(opts.profile, { recursive: true });
  return [
    ...(opts.nodeArgs ?? []),
    "--cpu-prof",
    `--cpu-prof-dir=${opts.profile}`,
    `--cpu-prof-name=${name}-${Date.now()}.cpuprofile`,
  ];
}

async function loadRun(run, measured) {
  const { figures, rep } = await measureLoad({
    redis,
    apiUrl: emulator.url,
    restWait: measured ? opts.restWait : 0,
    env: opts.env,
    nodeArgs: profileArgs("load"),
  });
  // Give the writer one stream change so that it persists a replay cursor: the next replicator resumes from it
  // instead of loading everything again.
  const tag = `load-cursor-${run}`;
  await feed({ count: 1, offset: N - 1, tag });
  await waitFor("the cursor change to land", async () => envOf(await reader.get(idKey(companyId(N - 1)))) === tag);
  await sleep(50);
  await rep.stop();
  if (measured) {
    say(
      `load run ${run}: ${round(figures.seconds)} s to /ready (${figures.entities} entities), RSS at rest ${mb(figures.rss_at_rest_bytes)} MB`,
    );
  }
  return figures;
}

async function runLoad() {
  const runs = has("load") ? runsOf("load") : 1;
  const list = [];
  for (let r = 1; r <= runs; r++) {
    await quiet();
    list.push(await loadRun(r, has("load")));
  }
  const s = summarise(list.map((x) => x.seconds));
  peaks.load = Math.max(...list.map((x) => x.peak_rss_bytes));
  result.load = {
    ...roundAll(s),
    entities: list[0].entities,
    rss_at_rest_mb: mb(median(list.map((x) => x.rss_at_rest_bytes))),
    peak_rss_mb: mb(peaks.load),
    redis_keys: list[0].redis_keys,
    redis_used_memory_mb: mb(list[0].redis_used_memory_bytes),
    runs: list.map((x) => ({
      seconds: round(x.seconds, 2),
      replicator_load_ms: x.replicator_load_ms,
      entities_per_s: Math.round(x.entities_per_s),
      replicator_cpu_s: round(x.replicator_cpu_s, 2),
      rss_at_rest_mb: mb(x.rss_at_rest_bytes),
      peak_rss_mb: mb(x.peak_rss_bytes),
      other_load_cores: round(x.other_load_cores, 2),
      heap_at_rest_mb: x.heap,
      rss_at_ready_mb: mb(x.rss_at_ready_bytes),
      heap_at_ready_mb: x.heap_at_ready,
      rss_every_10s_mb: x.rss_curve_mb,
    })),
  };
}

// ---- 1. throughput -------------------------------------------------------------------------------------------------

let reader;

/** Every company's id key carries `tag`? Returns the ids that do not yet. */
async function missingTag(ids, tag) {
  const missing = [];
  for (let i = 0; i < ids.length; i += 2000) {
    const slice = ids.slice(i, i + 2000);
    const pipe = reader.pipeline();
    if (redis.cluster) {
      const values = await Promise.all(slice.map((id) => reader.getrange(idKey(id), 0, 255)));
      values.forEach((v, j) => {
        if (envOf(v) !== tag) missing.push(slice[j]);
      });
      continue;
    }
    for (const id of slice) pipe.getrange(idKey(id), 0, 255);
    const res = await pipe.exec();
    res.forEach(([err, v], j) => {
      if (err || envOf(v) !== tag) missing.push(slice[j]);
    });
  }
  return missing;
}

async function throughputRun(rep, run) {
  const tag = `tp-${run}-${Date.now()}`;
  const sentinel = idKey(companyId(N - 1));
  const sampler = rssSampler(rep.pid, 25);
  const before = (await rep.debug()).messages;
  const window = await openWindow({ rep, redis, emulator });
  const m0 = cpuSnapshot();
  const poll = (async () => {
    for (;;) {
      const v = await reader.getrange(sentinel, 0, 255);
      if (envOf(v) === tag) return nowNs();
      await sleep(1);
    }
  })();
  const pushed = await feed({ count: N, tag });
  const found = await poll;
  // Lanes run independently: check that every change, not only the last, is readable.
  let missing = await missingTag(
    Array.from({ length: N }, (_, i) => companyId(i)),
    tag,
  );
  const laggingAtSentinel = missing.length;
  let end = found;
  while (missing.length > 0) {
    missing = await missingTag(missing, tag);
    end = nowNs();
  }
  const other = otherLoad(m0, cpuSnapshot());
  const costs = await window.close(N);
  const started = BigInt(pushed.push_started_ns);
  const seconds = Number(end - started) / 1e9;
  const after = (await rep.debug()).messages;
  sampler.stop();
  const out = {
    changes_per_s: N / seconds,
    seconds,
    lagging_at_sentinel: laggingAtSentinel,
    emulator_push_s: Number(BigInt(pushed.push_ended_ns) - started) / 1e9,
    ...costs,
    peak_rss_bytes: sampler.peak,
    applied: (after.applied ?? 0) - (before.applied ?? 0),
    coalesced: (after.coalesced ?? 0) - (before.coalesced ?? 0),
    other_load_cores: other,
  };
  const us = costs.cpu_us_per_change;
  say(
    `throughput run ${run}: ${Math.round(out.changes_per_s)} changes/s (${round(seconds)} s; CPU per change: replicator ${us.replicator} µs, ` +
      `Redis ${us.redis} µs, emulator ${us.emulator} µs; ${costs.redis_commands_per_change} Redis commands per change; peak RSS ${mb(out.peak_rss_bytes)} MB)`,
  );
  return out;
}

async function runThroughput(rep) {
  const runs = runsOf("throughput");
  const list = [];
  for (let r = 1; r <= runs; r++) {
    await quiet();
    list.push(await throughputRun(rep, r));
  }
  const s = summarise(list.map((x) => x.changes_per_s));
  peaks.throughput = Math.max(...list.map((x) => x.peak_rss_bytes));
  const perChange = medianPerChange(list);
  result.throughput = {
    ...roundAll(s),
    changes: N,
    replicator_cpu_us_per_change: perChange.cpu_us_per_change.replicator,
    redis_cpu_us_per_change: perChange.cpu_us_per_change.redis,
    ...perChange,
    peak_rss_mb: mb(peaks.throughput),
    runs: list.map((x) => ({ ...roundAll(x), peak_rss_bytes: undefined, peak_rss_mb: mb(x.peak_rss_bytes) })),
  };
}

// ---- 2, 6, 7. latency: at 5,000/s, trickle, fresh process ----------------------------------------------------------

const latencyProbe = () => openLatencyProbe({ redis, reader, keyPattern: idKey("comp_*"), envOf });

/**
 * One stamped feed at `rate` for `seconds`, waited for until every change is readable; latency percentiles, and
 * (when measured) what each change cost. `readyAt`: when the replicator reported ready (fresh runs).
 */
async function latencyRun(rep, probe, { rate, seconds, offset = 0, tag, measured = true, readyAt }) {
  const count = rate * seconds;
  probe.expect(tag);
  const sampler = rssSampler(rep.pid, 50);
  const window = measured
    ? await openWindow({ rep, redis, emulator }, { freshProcess: readyAt !== undefined })
    : undefined;
  const m0 = cpuSnapshot();
  const pushed = await feed({ count, offset, tag, rate, stamp: true });
  const other = otherLoad(m0, cpuSnapshot());
  await waitFor("every latency sample", () => probe.seen >= count, {
    timeoutMs: 60_000 + seconds * 1000,
    everyMs: 20,
  }).catch(() => undefined);
  sampler.stop();
  const costs = await window?.close(count);
  return {
    rate,
    seconds,
    changes: count,
    ...probe.summary(),
    ...(readyAt === undefined
      ? {}
      : { feed_started_after_ready_ms: round(Number(BigInt(pushed.push_started_ns) - readyAt) / 1e6, 2) }),
    ...costs,
    peak_rss_bytes: sampler.peak,
    other_load_cores: round(other, 2),
  };
}

function sayLatency(what, x) {
  const us = x.cpu_us_per_change;
  say(
    `${what}: p50 ${x.p50_ms} ms, p90 ${x.p90_ms} ms, p99 ${x.p99_ms} ms, max ${x.max_ms} ms (${x.samples} samples); ` +
      `CPU per change: replicator ${us.replicator} µs, Redis ${us.redis} µs, emulator ${us.emulator} µs; ` +
      `${x.redis_commands_per_change} Redis commands, ${x.redis_transactions_per_change} transactions per change`,
  );
}

/** A scenario's summary: median percentiles over its runs, per-change medians, the runs. */
function latencySummary(list) {
  const med = (k) => round(median(list.map((x) => x[k])), 3);
  const spread = (k) => roundAll(summarise(list.map((x) => x[k])));
  return {
    rate: list[0].rate,
    seconds: list[0].seconds,
    p50_ms: med("p50_ms"),
    p90_ms: med("p90_ms"),
    p99_ms: med("p99_ms"),
    p999_ms: med("p999_ms"),
    max_ms: med("max_ms"),
    spread: list.length > 1 ? { p50: spread("p50_ms"), p99: spread("p99_ms") } : undefined,
    ...medianPerChange(list),
    peak_rss_mb: mb(Math.max(...list.map((x) => x.peak_rss_bytes))),
    runs: list.map((x) => ({ ...x, peak_rss_bytes: undefined, peak_rss_mb: mb(x.peak_rss_bytes) })),
  };
}

/** Untimed: one second at the latency rate on the last companies of the set, so that the code is warm. */
async function warmUp(rep, probe) {
  await latencyRun(rep, probe, {
    rate: opts.rate,
    seconds: 1,
    offset: Math.max(0, N - opts.rate),
    tag: `warm-${Date.now()}`,
    measured: false,
  });
}

async function runLatency(rep, probe) {
  await warmUp(rep, probe);
  const runs = runsOf("latency");
  const list = [];
  for (let r = 1; r <= runs; r++) {
    await quiet();
    list.push(await latencyRun(rep, probe, { rate: opts.rate, seconds: opts.duration, tag: `lat-${r}-${Date.now()}` }));
    sayLatency(`latency run ${r}`, list.at(-1));
  }
  result.latency = latencySummary(list);
  peaks.latency = Math.max(...list.map((x) => x.peak_rss_bytes));
}

/** The replicator's CPU seconds per second while it receives nothing (its timers: lease, cursor, marker checks). */
async function idleCpuPerSecond(rep, ms) {
  const cpu0 = cpuSecondsOf(rep.pid);
  const t0 = nowNs();
  await sleep(ms);
  return (cpuSecondsOf(rep.pid) - cpu0) / (Number(nowNs() - t0) / 1e9);
}

/**
 * Lone changes (one every 1/rate s) to the warm replicator: the latency of a change that waits for nothing. At this
 * rate the replicator's idle work weighs in its CPU per change, so that is measured first and reported apart.
 */
async function runTrickle(rep, probe, warm) {
  if (!warm) await warmUp(rep, probe);
  const idle = await idleCpuPerSecond(rep, 5000);
  const runs = runsOf("trickle");
  const list = [];
  for (let r = 1; r <= runs; r++) {
    await quiet();
    const tag = `trickle-${r}-${Date.now()}`;
    list.push(await latencyRun(rep, probe, { rate: opts.trickleRate, seconds: opts.trickleDuration, tag }));
    sayLatency(`trickle run ${r}`, list.at(-1));
  }
  const summary = latencySummary(list);
  summary.replicator_idle_cpu_ms_per_s = round(idle * 1000, 2);
  summary.replicator_cpu_us_per_change_above_idle = round(
    summary.cpu_us_per_change.replicator - (idle * 1e6) / opts.trickleRate,
    1,
  );
  result.trickle = summary;
  peaks.trickle = Math.max(...list.map((x) => x.peak_rss_bytes));
}

/**
 * Per rate: a replicator started fresh (every setting default; it resumes from the cursor the previous one left),
 * and the stamped feed started the moment /ready answers 200 with the datastream connected: no warm-up.
 */
async function runFresh() {
  const probe = await latencyProbe();
  const byRate = [];
  for (const rate of opts.freshRates) {
    const list = [];
    for (let r = 1; r <= runsOf("fresh"); r++) {
      await quiet();
      const spawned = nowNs();
      const rep = await startReplicator({
        env: { ...redis.env, SCHEMATIC_API_URL: emulator.url, ...opts.env },
        nodeArgs: profileArgs(`fresh-${rate}`),
      });
      await waitFor("the fresh replicator to be ready", async () => (await rep.ready())?.connected === true, {
        timeoutMs: 600_000,
        everyMs: 10,
      }).catch((err) => {
        throw new Error(`${err.message}\n${rep.stderr()}`);
      });
      const readyAt = nowNs();
      const startup = {
        ready_ms: round(Number(readyAt - spawned) / 1e6, 1),
        startup_cpu_s: cpuSecondsOf(rep.pid),
        rss_at_ready_mb: mb(memoryOf(rep.pid).rss),
      };
      const tag = `fresh-${rate}-${r}-${Date.now()}`;
      const run = await latencyRun(rep, probe, { rate, seconds: opts.freshDuration, tag, readyAt });
      const resumed = !rep.logs.some((e) => /starting a full load/.test(e.msg ?? ""));
      if (!resumed) say("warning: the fresh replicator loaded everything instead of resuming from the cursor");
      await rep.stop();
      list.push({ ...run, ...startup, resumed });
      sayLatency(`fresh ${rate}/s run ${r} (ready after ${startup.ready_ms} ms)`, run);
    }
    byRate.push({
      ...latencySummary(list),
      ready_ms: round(median(list.map((x) => x.ready_ms)), 1),
      resumed: list.every((x) => x.resumed),
    });
    peaks[`fresh_${rate}`] = Math.max(...list.map((x) => x.peak_rss_bytes));
  }
  await probe.close();
  result.fresh = { seconds: opts.freshDuration, by_rate: byRate };
}

// ---- report ------------------------------------------------------------------------------------------------------

/** Targets of issues 6, 15 and 16 (docs/performance.md). */
function verdicts() {
  const t = {};
  if (result.throughput) {
    t.throughput_ge_30000 = result.throughput.median >= 30_000;
    t.throughput_replicator_cpu_le_50us = result.throughput.cpu_us_per_change.replicator <= 50;
  }
  if (result.ratio_to_lower_ceiling !== undefined) t.ratio_ge_0_6 = result.ratio_to_lower_ceiling >= 0.6;
  if (result.latency) {
    t.latency_p50_le_1ms = result.latency.p50_ms <= 1;
    t.latency_p99_le_10ms = result.latency.p99_ms <= 10;
  }
  if (result.trickle) {
    t.trickle_p50_le_1ms = result.trickle.p50_ms <= 1;
    t.trickle_p99_le_5ms = result.trickle.p99_ms <= 5;
  }
  for (const f of result.fresh?.by_rate ?? []) {
    t[`fresh_${f.rate}_p50_le_1ms`] = f.p50_ms <= 1;
    t[`fresh_${f.rate}_p99_le_10ms`] = f.p99_ms <= 10;
  }
  if (result.load) t.load_le_10s = result.load.median <= 10;
  if (result.memory?.rss_at_rest_mb !== undefined) {
    t.rss_at_rest_le_150mb = result.memory.rss_at_rest_mb <= 150;
    t.rss_at_rest_le_120mb = result.memory.rss_at_rest_mb <= 120;
  }
  const curve = result.scale?.curve ?? [];
  if (curve.length) {
    t.scale_ratio_to_ceiling_ge_0_7 = curve.every((p) => p.ratio_to_ceiling >= 0.7);
    t.scale_peak_rss_le_250mb = curve.every((p) => p.peak_rss_mb <= 250);
    t.scale_rss_at_rest_le_120mb = curve.every((p) => p.rss_at_rest_mb <= 120);
    const lean1m = curve.filter((p) => p.rows === "lean" && p.entities >= 1_000_000);
    if (lean1m.length) t.scale_lean_1m_le_60s = lean1m.every((p) => p.seconds <= 60);
  }
  return t;
}

function formatTable(rows) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => String(c).padEnd(widths[i]))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

const costsText = (x) => {
  const us = x.cpu_us_per_change;
  return `${us.replicator} / ${us.redis} / ${us.emulator}`;
};
const redisText = (x) => `${x.redis_commands_per_change} / ${x.redis_transactions_per_change}`;

function table() {
  const rows = [["scenario", "median", "spread (min–max)", "target", "ok"]];
  const mark = (ok) => (ok === undefined ? "" : ok ? "yes" : "NO");
  const v = result.targets;
  const fmt = (n) => (n === null || n === undefined ? "-" : Math.round(n).toLocaleString("en-US"));
  const range = (s) => (s && s.runs > 1 ? `${fmt(s.min)}–${fmt(s.max)} (±${round((s.spread * 100) / 2, 1)}%)` : "");
  const perChangeRows = (n, x, target = "", ok = undefined) => {
    rows.push([`${n} CPU µs per change: replicator / Redis / emulator`, costsText(x), "", target, mark(ok)]);
    rows.push([`${n} Redis commands / transactions per change`, redisText(x), "", "", ""]);
  };
  const latencyRows = (n, name, l, p50, p99) => {
    rows.push([`${n} ${name} p50 / p90 (ms)`, `${l.p50_ms} / ${l.p90_ms}`, "", p50[0], mark(p50[1])]);
    rows.push([`${n} ${name} p99 / max (ms)`, `${l.p99_ms} / ${l.max_ms}`, "", p99[0], mark(p99[1])]);
    perChangeRows(n, l);
  };
  if (result.throughput) {
    const t = result.throughput;
    rows.push(["1 stream throughput (changes/s)", fmt(t.median), range(t), "≥ 30,000", mark(v.throughput_ge_30000)]);
    perChangeRows(1, t, "≤ 50 (replicator)", v.throughput_replicator_cpu_le_50us);
  }
  if (result.ceilings) {
    const c = result.ceilings;
    rows.push(["5 ceiling: bare WS client (changes/s)", fmt(c.ws.median), range(c.ws), "", ""]);
    rows.push(["5 ceiling: bare SET loop (changes/s)", fmt(c.set.median), range(c.set), "", ""]);
    if (result.ratio_to_lower_ceiling !== undefined) {
      rows.push([
        `5 ratio 1 / lower ceiling (${c.lower})`,
        String(result.ratio_to_lower_ceiling),
        "",
        "≥ 0.6",
        mark(v.ratio_ge_0_6),
      ]);
    }
  }
  if (result.latency) {
    const l = result.latency;
    latencyRows(2, `latency @${l.rate}/s`, l, ["≤ 1", v.latency_p50_le_1ms], ["≤ 10", v.latency_p99_le_10ms]);
  }
  if (result.trickle) {
    const l = result.trickle;
    latencyRows(6, `trickle @${l.rate}/s`, l, ["≤ 1", v.trickle_p50_le_1ms], ["≤ 5", v.trickle_p99_le_5ms]);
    rows.push([
      "6 replicator CPU µs per change above idle (idle ms/s)",
      `${l.replicator_cpu_us_per_change_above_idle} (${l.replicator_idle_cpu_ms_per_s})`,
      "",
      "",
      "",
    ]);
  }
  for (const f of result.fresh?.by_rate ?? []) {
    latencyRows(
      7,
      `fresh @${f.rate}/s`,
      f,
      ["≤ 1", v[`fresh_${f.rate}_p50_le_1ms`]],
      ["≤ 10", v[`fresh_${f.rate}_p99_le_10ms`]],
    );
  }
  if (result.load) {
    const l = result.load;
    const r = l.runs > 1 ? `${l.min}–${l.max}` : "";
    rows.push([
      `3 initial load ${l.entities.toLocaleString("en-US")} entities (s)`,
      String(round(l.median, 2)),
      r,
      "≤ 10",
      mark(v.load_le_10s),
    ]);
  }
  if (result.memory) {
    const m = result.memory;
    if (m.rss_at_rest_mb !== undefined)
      rows.push([
        "4 RSS at rest after the load (MB)",
        String(m.rss_at_rest_mb),
        "",
        "≤ 150 (≤ 120)",
        `${mark(v.rss_at_rest_le_150mb)} (${mark(v.rss_at_rest_le_120mb)})`,
      ]);
    rows.push([
      "4 peak RSS (MB)",
      String(m.peak_rss_mb),
      Object.entries(m.peak_by_scenario_mb)
        .map(([k, x]) => `${k} ${x}`)
        .join(", "),
      "bounded",
      "",
    ]);
  }
  let out = rows.length > 1 ? formatTable(rows) : "";
  const curve = result.scale?.curve ?? [];
  if (curve.length) {
    const scale = [
      [
        "8 scale: rows",
        "entities",
        "s to /ready",
        "entities/s",
        "ceiling/s",
        "ratio",
        "peak RSS MB",
        "at rest MB",
        "Redis MB",
        "emulator MB",
      ],
    ];
    for (const p of curve) {
      scale.push([
        p.rows,
        fmt(p.entities),
        p.seconds,
        fmt(p.entities_per_s),
        fmt(p.ceiling.entities_per_s),
        p.ratio_to_ceiling,
        p.peak_rss_mb,
        p.rss_at_rest_mb,
        p.redis_used_memory_mb,
        p.emulator.peak_rss_mb,
      ]);
    }
    const targets = ["ratio_to_ceiling_ge_0_7", "peak_rss_le_250mb", "rss_at_rest_le_120mb", "lean_1m_le_60s"]
      .filter((k) => v[`scale_${k}`] !== undefined)
      .map((k) => `${k} ${mark(v[`scale_${k}`])}`)
      .join(", ");
    out += `${out ? "\n\n" : ""}${formatTable(scale)}\n8 scale targets: ${targets}`;
  }
  return out;
}

// ---- main ----------------------------------------------------------------------------------------------------------

async function startMainEmulator() {
  emulator = await startEmulator(GENERATE);
  const { engineVersionKey } = await import(join(ROOT, "dist/model/engine-version.js"));
  version = await engineVersionKey();
  const lastRow = await (
    await fetch(`${emulator.url}/companies?limit=1&offset=${N - 1}`, {
      headers: { "X-Schematic-Api-Key": "bench-key" },
    })
  ).json();
  if (lastRow.data?.[0]?.id !== companyId(N - 1))
    throw new Error(`unexpected company ids: ${JSON.stringify(lastRow.data?.[0]?.id)}`);
}

/** Scenarios 1, 2 and 6 on one replicator with every setting at its default, resumed from the load's cursor. */
async function runStream() {
  const rep = await startReplicator({
    env: { ...redis.env, SCHEMATIC_API_URL: emulator.url, ...opts.env },
    nodeArgs: profileArgs("stream"),
  });
  await waitFor("the replicator (defaults) to be ready", () => rep.ready(), { timeoutMs: 600_000, everyMs: 50 });
  const reloaded = rep.logs.some((e) => /starting a full load/.test(e.msg ?? ""));
  if (reloaded) say("warning: the stream replicator loaded everything instead of resuming from the cursor");
  result.setup.stream_replicator_resumed = !reloaded;
  if (has("throughput")) await runThroughput(rep);
  if (has("latency") || has("trickle")) {
    // Keyspace notifications only from here on: they cost Redis CPU on every write.
    const probe = await latencyProbe();
    if (has("latency")) await runLatency(rep, probe);
    if (has("trickle")) await runTrickle(rep, probe, has("throughput") || has("latency"));
    await probe.close();
  }
  peaks.stream_process_hwm = memoryOf(rep.pid).hwm;
  result.setup.stream_replicator_debug = (await rep.debug()).messages;
  await rep.stop();
}

async function main() {
  const t0 = Date.now();
  const stream = STREAM.some(has);
  const needsMain = stream || has("fresh") || has("load") || has("ceilings");
  say(
    `starting Redis (${opts.cluster ? "cluster" : "single node"})${needsMain ? ` and the emulator (--generate ${GENERATE})` : ""}`,
  );
  redis = await startRedis({ cluster: opts.cluster });
  result.machine.loadavg_at_start = loadavg().map((x) => round(x, 2));
  result.setup.redis_version = (await redis.eachNode((c) => c.info("server")))[0].match(/redis_version:(\S+)/)?.[1];
  reader = redis.client();
  if (needsMain) await startMainEmulator();
  else delete result.setup.data_set;

  if (has("ceilings") || (has("throughput") && !opts.noCeilings)) await runCeilings();
  if (has("load") || stream || has("fresh")) await runLoad();
  if (!has("load")) delete result.load;
  if (stream) await runStream();
  if (has("fresh")) await runFresh();
  if (result.throughput && result.ceilings)
    result.ratio_to_lower_ceiling = round(result.throughput.median / result.ceilings.lower_changes_per_s, 2);
  if (has("scale")) {
    // Each size has its own emulator; the stream one would only take memory from them.
    await emulator?.stop();
    emulator = undefined;
    result.scale = await runScale({
      opts,
      redis,
      runs: runsOf("scale"),
      say,
      quiet,
      nodeArgs: profileArgs,
    });
  }

  const byScenario = {};
  for (const [k, bytes] of Object.entries(peaks)) if (k !== "stream_process_hwm") byScenario[k] = mb(bytes);
  if (Object.keys(byScenario).length) {
    result.memory = {
      rss_at_rest_mb: result.load?.rss_at_rest_mb,
      peak_rss_mb: Math.max(...Object.values(byScenario)),
      peak_by_scenario_mb: byScenario,
    };
  }
  result.machine.loadavg_at_end = loadavg().map((x) => round(x, 2));
  result.targets = verdicts();
  result.elapsed_s = Math.round((Date.now() - t0) / 1000);
  if (!opts.jsonOnly) process.stdout.write(`\n${table()}\n\n`);
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}

process.on("SIGINT", () => {
  killAllChildren();
  process.exit(130);
});
main()
  .then(async () => {
    await emulator?.stop();
    await redis?.stop();
    process.exit(0);
  })
  .catch(async (err) => {
    process.stderr.write(`bench: ${err.stack ?? err.message}\n`);
    killAllChildren();
    await redis?.stop().catch(() => undefined);
    process.exit(1);
  });
