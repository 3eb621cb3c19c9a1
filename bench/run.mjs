#!/usr/bin/env node
import { existsSync, mkdirSync } from "node:fs";
// `npm run bench` (issue 6): starts its own Redis, emulator and replicator from dist/ and measures
//   1. stream throughput: 100k company updates of ~2 KB pushed as fast as the replicator takes them, until the
//      last one is readable in Redis (every setting at its default);
//   2. latency: changes at a fixed 5,000/s for 20 s, push → readable in Redis (defaults);
//   3. initial load: 100k companies + 100k users over REST until /ready (loader tuned);
//   4. memory: replicator RSS at rest after the load, and peak during 1–3;
//   5. ceilings in the same run: the same feed into a bare WebSocket client, and a bare pipelined SET loop with
//      the same keys and values; and the ratio of 1 to the lower ceiling.
// Prints a table, then the JSON object (last on stdout). How it measures: docs/performance.md.
//
// Options: --runs N (default: 3 for throughput and the ceilings, 1 for the others), --scenario NAME (throughput,
// latency, load, ceilings; repeatable or comma-separated; default all), --cluster (3-master Redis Cluster),
// --json-only, --profile DIR (CPU profiles of the replicators into DIR), --companies N / --users N (data set size,
// default 100000 each), --rate N / --duration S (latency scenario, default 5000/s for 20 s).
import { availableParallelism, cpus, loadavg, totalmem } from "node:os";
import { join, resolve } from "node:path";
import {
  cpuSecondsOf,
  cpuSnapshot,
  killAllChildren,
  memoryOf,
  nowNs,
  otherLoad,
  ROOT,
  rssSampler,
  setProductRoot,
  sleep,
  startChild,
  startEmulator,
  startRedis,
  startReplicator,
  waitFor,
} from "./lib/procs.mjs";
import { mb, median, percentile, round, summarise } from "./lib/stats.mjs";

// ---- options ---------------------------------------------------------------------------------------------------

const SCENARIOS = ["throughput", "latency", "load", "ceilings"];

function usage(message) {
  process.stderr.write(
    `${message ? `bench: ${message}\n` : ""}Usage: npm run bench -- [--runs N] [--scenario ${SCENARIOS.join("|")}] [--cluster] [--json-only]\n` +
      '                        [--profile DIR] [--node-args "--flag …"] [--env K=V] [--companies N] [--users N] [--rate N] [--duration S] [--root DIR]\n' +
      "                        [--wait-quiet S] [--no-ceilings] [--rest-wait S]\n",
  );
  process.exit(2);
}

function parseArgs(argv) {
  const o = { runs: undefined, scenarios: new Set(), cluster: false, jsonOnly: false, profile: undefined };
  o.companies = 100_000;
  o.users = 100_000;
  o.rate = 5000;
  o.duration = 20;
  o.restWait = 60;
  const int = (name, v, min = 1) => {
    if (!/^\d+$/.test(v ?? "") || Number(v) < min) usage(`${name}: expected an integer ≥ ${min}, got ${v}`);
    return Number(v);
  };
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let value;
    const eq = arg.indexOf("=");
    if (arg.startsWith("--") && eq > 0) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    const next = () => value ?? argv[++i];
    switch (arg) {
      case "--runs":
        o.runs = int(arg, next());
        break;
      case "--scenario":
        for (const s of String(next()).split(",")) {
          if (s === "all") for (const x of SCENARIOS) o.scenarios.add(x);
          else if (SCENARIOS.includes(s)) o.scenarios.add(s);
          else usage(`unknown scenario ${JSON.stringify(s)} (expected ${SCENARIOS.join(", ")} or all)`);
        }
        break;
      case "--cluster":
        o.cluster = true;
        break;
      case "--rest-wait":
        o.restWait = int(arg, next(), 0);
        break;
      case "--no-ceilings":
        o.noCeilings = true;
        break;
      case "--json-only":
        o.jsonOnly = true;
        break;
      case "--env": {
        const [k, ...v] = String(next()).split("=");
        o.env = { ...o.env, [k]: v.join("=") };
        break;
      }
      case "--node-args":
        o.nodeArgs = String(next()).split(/\s+/).filter(Boolean);
        break;
      case "--profile":
        o.profile = resolve(String(next()));
        break;
      case "--wait-quiet":
        o.waitQuiet = int(arg, next(), 0);
        break;
      case "--root":
        o.root = resolve(String(next()));
        break;
      case "--companies":
        o.companies = int(arg, next(), 10);
        break;
      case "--users":
        o.users = int(arg, next(), 0);
        break;
      case "--rate":
        o.rate = int(arg, next());
        break;
      case "--duration":
        o.duration = int(arg, next());
        break;
      case "-h":
      case "--help":
        usage();
        break;
      default:
        usage(`unknown argument ${JSON.stringify(argv[i])}`);
    }
  }
  if (o.scenarios.size === 0) for (const x of SCENARIOS) o.scenarios.add(x);
  return o;
}

const opts = parseArgs(process.argv.slice(2));
const has = (s) => opts.scenarios.has(s);
const runsOf = (scenario) => opts.runs ?? (scenario === "throughput" || scenario === "ceilings" ? 3 : 1);
const say = (line) => {
  if (!opts.jsonOnly) process.stderr.write(`[bench] ${line}\n`);
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
/** Settings of the load scenario (issue 6); everything else stays at its default. */
const LOAD_TUNING = {
  USE_ASYNC_LOADING: "true",
  ASYNC_LOADER_PAGE_SIZE: "500",
  ASYNC_LOADER_MAX_CONCURRENT_REQUESTS: "8",
  ASYNC_LOADER_RATE_LIMIT_RPS: "0",
};

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
    runs: {
      throughput: runsOf("throughput"),
      ceilings: runsOf("ceilings"),
      latency: runsOf("latency"),
      load: runsOf("load"),
    },
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
  let out;
  const m0 = cpuSnapshot();
  const child = startChild("ceiling-set", process.execPath, ["bench/ceiling-set.mjs", JSON.stringify(options)], {
    onStdout: (d) => {
      const m = /(\{.*\})/.exec(String(d));
      if (m) out = JSON.parse(m[1]);
    },
  });
  const { code } = await child.exited;
  if (code !== 0 || !out) throw new Error(`ceiling-set failed: ${child.stderr()}`);
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

/** V8 heap figures (MB) from the replicator's /metrics (prom-client default metrics). */
async function heapOf(rep) {
  try {
    const text = await (await fetch(`${rep.base}/metrics`)).text();
    const pick = (name) => {
      const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "m").exec(text);
      return m ? mb(Number(m[1])) : undefined;
    };
    return {
      heap_used: pick("nodejs_heap_size_used_bytes"),
      heap_total: pick("nodejs_heap_size_total_bytes"),
      external: pick("nodejs_external_memory_bytes"),
    };
  } catch {
    return undefined;
  }
}

async function loadRun(run, measured) {
  await redis.flush();
  const m0 = cpuSnapshot();
  const start = nowNs();
  const rep = await startReplicator({
    env: { ...redis.env, SCHEMATIC_API_URL: emulator.url, ...LOAD_TUNING, ...opts.env },
    nodeArgs: profileArgs("load"),
  });
  const sampler = rssSampler(rep.pid);
  const cpu0 = Date.now();
  await waitFor("the loading replicator to be ready", () => rep.ready(), { timeoutMs: 600_000, everyMs: 20 }).catch(
    (err) => {
      throw new Error(`${err.message}\n${rep.stderr()}`);
    },
  );
  const readyAt = nowNs();
  const other = otherLoad(m0, cpuSnapshot());
  const seconds = Number(readyAt - start) / 1e9;
  const complete = await rep.waitLog((e) => /full load complete/.test(e.msg ?? ""));
  const loadPeak = sampler.peak;
  const cpuSeconds = cpuSecondsOf(rep.pid);
  void cpu0;
  // At rest: no changes for --rest-wait seconds after /ready (V8 gives memory back lazily: its memory reducer
  // runs some tens of seconds after allocation stops); the last sample counts, the curve is kept.
  const atReady = memoryOf(rep.pid).rss;
  const heapAtReady = await heapOf(rep);
  const curve = [mb(atReady)];
  let rest = atReady;
  const restWait = measured ? opts.restWait : 0;
  for (let i = 1; i <= restWait; i++) {
    await sleep(1000);
    rest = memoryOf(rep.pid).rss;
    if (i % 10 === 0 || i === restWait) curve.push(mb(rest));
  }
  const heap = await heapOf(rep);
  const keys = await redis.eachNode((c) => c.dbsize());
  const out = {
    seconds,
    entities: complete.companies + complete.users,
    entities_per_s: (complete.companies + complete.users) / seconds,
    replicator_load_ms: complete.ms,
    replicator_cpu_s: cpuSeconds,
    rss_at_rest_bytes: rest,
    peak_rss_bytes: Math.max(loadPeak, memoryOf(rep.pid).hwm),
    redis_keys: keys.reduce((a, b) => a + b, 0),
    redis_used_memory_bytes: await redis.usedMemory(),
    other_load_cores: other,
    heap,
    heap_at_ready: heapAtReady,
    rss_at_ready_bytes: atReady,
    rss_curve_mb: curve,
  };
  // Give the writer one stream change so that it persists a replay cursor: the next replicator resumes from it
  // instead of loading everything again.
  const tag = `load-cursor-${run}`;
  await feed({ count: 1, offset: N - 1, tag });
  await waitFor("the cursor change to land", async () => envOf(await reader.get(idKey(companyId(N - 1)))) === tag);
  await sleep(50);
  sampler.stop();
  await rep.stop();
  if (measured)
    say(`load run ${run}: ${round(seconds)} s to /ready (${out.entities} entities), RSS at rest ${mb(rest)} MB`);
  return out;
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
  const cpu = {
    rep: cpuSecondsOf(rep.pid),
    redis: redis.pids.reduce((a, p) => a + cpuSecondsOf(p), 0),
    emu: cpuSecondsOf(emulator.pid),
  };
  const before = (await rep.debug()).messages;
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
  const started = BigInt(pushed.push_started_ns);
  const seconds = Number(end - started) / 1e9;
  const after = (await rep.debug()).messages;
  sampler.stop();
  const out = {
    changes_per_s: N / seconds,
    seconds,
    lagging_at_sentinel: laggingAtSentinel,
    emulator_push_s: Number(BigInt(pushed.push_ended_ns) - started) / 1e9,
    replicator_cpu_s: cpuSecondsOf(rep.pid) - cpu.rep,
    redis_cpu_s: redis.pids.reduce((a, p) => a + cpuSecondsOf(p), 0) - cpu.redis,
    emulator_cpu_s: cpuSecondsOf(emulator.pid) - cpu.emu,
    peak_rss_bytes: sampler.peak,
    applied: (after.applied ?? 0) - (before.applied ?? 0),
    coalesced: (after.coalesced ?? 0) - (before.coalesced ?? 0),
    other_load_cores: other,
  };
  say(
    `throughput run ${run}: ${Math.round(out.changes_per_s)} changes/s (${round(seconds)} s; replicator CPU ${round(out.replicator_cpu_s)} s, ` +
      `Redis CPU ${round(out.redis_cpu_s)} s; peak RSS ${mb(out.peak_rss_bytes)} MB)`,
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
  result.throughput = {
    ...roundAll(s),
    changes: N,
    replicator_cpu_us_per_change: round((median(list.map((x) => x.replicator_cpu_s)) / N) * 1e6, 1),
    redis_cpu_us_per_change: round((median(list.map((x) => x.redis_cpu_s)) / N) * 1e6, 1),
    peak_rss_mb: mb(peaks.throughput),
    runs: list.map((x) => ({ ...roundAll(x), peak_rss_bytes: undefined, peak_rss_mb: mb(x.peak_rss_bytes) })),
  };
}

// ---- 2. latency ------------------------------------------------------------------------------------------------------

async function latencyRun(rep, run, { rate, seconds, offset = 0, measured = true }) {
  const count = rate * seconds;
  const tag = `lat-${run}-${Date.now()}`;
  const nodes = redis.nodeClients();
  const subs = redis.nodeClients();
  const samples = [];
  let seen = 0;
  const pattern = `__keyspace@0__:${idKey("comp_*")}`;
  const channelPrefix = "__keyspace@0__:".length;
  await Promise.all(nodes.map((c) => c.config("SET", "notify-keyspace-events", "K$")));
  for (const s of subs) {
    s.on("pmessage", (_p, channel, message) => {
      if (message !== "set") return;
      const arrived = nowNs();
      reader.getrange(channel.slice(channelPrefix), 0, 255).then((v) => {
        const env = envOf(v);
        if (!env?.startsWith(`${tag}@`)) return;
        seen++;
        samples.push(Number(arrived - BigInt(env.slice(tag.length + 1))) / 1e6);
      });
    });
    await s.psubscribe(pattern);
  }
  const sampler = rssSampler(rep.pid, 50);
  const cpu0 = cpuSecondsOf(rep.pid);
  const m0 = cpuSnapshot();
  await feed({ count, offset, tag, rate, stamp: true });
  const other = otherLoad(m0, cpuSnapshot());
  await waitFor("every latency sample", () => seen >= count, { timeoutMs: 30_000, everyMs: 20 }).catch(() => undefined);
  sampler.stop();
  const cpu = cpuSecondsOf(rep.pid) - cpu0;
  await Promise.all(nodes.map((c) => c.config("SET", "notify-keyspace-events", "")));
  for (const c of [...subs, ...nodes]) c.disconnect();
  samples.sort((a, b) => a - b);
  const out = {
    rate,
    seconds,
    changes: count,
    samples: samples.length,
    p50_ms: round(percentile(samples, 50), 3),
    p90_ms: round(percentile(samples, 90), 3),
    p99_ms: round(percentile(samples, 99), 3),
    p999_ms: round(percentile(samples, 99.9), 3),
    max_ms: round(samples.at(-1), 3),
    mean_ms: round(samples.reduce((a, b) => a + b, 0) / Math.max(1, samples.length), 3),
    replicator_cpu_s: round(cpu, 2),
    peak_rss_bytes: sampler.peak,
    other_load_cores: round(other, 2),
  };
  if (measured) {
    say(
      `latency run ${run}: p50 ${out.p50_ms} ms, p90 ${out.p90_ms} ms, p99 ${out.p99_ms} ms, p99.9 ${out.p999_ms} ms (${out.samples} samples)`,
    );
  }
  return out;
}

async function runLatency(rep) {
  // Warm-up (not measured): one second at the same rate on the last companies of the set.
  await latencyRun(rep, 0, { rate: opts.rate, seconds: 1, offset: Math.max(0, N - opts.rate), measured: false });
  const runs = runsOf("latency");
  const list = [];
  for (let r = 1; r <= runs; r++) {
    await quiet();
    list.push(await latencyRun(rep, r, { rate: opts.rate, seconds: opts.duration }));
  }
  peaks.latency = Math.max(...list.map((x) => x.peak_rss_bytes));
  const med = (k) => round(median(list.map((x) => x[k])), 3);
  const spread = (k) => roundAll(summarise(list.map((x) => x[k])));
  result.latency = {
    rate: opts.rate,
    seconds: opts.duration,
    p50_ms: med("p50_ms"),
    p90_ms: med("p90_ms"),
    p99_ms: med("p99_ms"),
    p999_ms: med("p999_ms"),
    max_ms: med("max_ms"),
    spread: runs > 1 ? { p50: spread("p50_ms"), p99: spread("p99_ms") } : undefined,
    peak_rss_mb: mb(peaks.latency),
    runs: list.map((x) => ({ ...x, peak_rss_bytes: undefined })),
  };
}

// ---- report ------------------------------------------------------------------------------------------------------

function verdicts() {
  const t = {};
  if (result.throughput) t.throughput_ge_30000 = result.throughput.median >= 30_000;
  if (result.ratio_to_lower_ceiling !== undefined) t.ratio_ge_0_6 = result.ratio_to_lower_ceiling >= 0.6;
  if (result.latency) {
    t.latency_p50_le_1ms = result.latency.p50_ms <= 1;
    t.latency_p99_le_10ms = result.latency.p99_ms <= 10;
  }
  if (result.load) t.load_le_10s = result.load.median <= 10;
  if (result.memory?.rss_at_rest_mb !== undefined) t.rss_at_rest_le_150mb = result.memory.rss_at_rest_mb <= 150;
  return t;
}

function table() {
  const rows = [["scenario", "median", "spread (min–max)", "target", "ok"]];
  const mark = (ok) => (ok === undefined ? "" : ok ? "yes" : "NO");
  const v = result.targets;
  const fmt = (n) => (n === null || n === undefined ? "-" : Math.round(n).toLocaleString("en-US"));
  const range = (s) => (s && s.runs > 1 ? `${fmt(s.min)}–${fmt(s.max)} (±${round((s.spread * 100) / 2, 1)}%)` : "");
  if (result.throughput) {
    const t = result.throughput;
    rows.push(["1 stream throughput (changes/s)", fmt(t.median), range(t), "≥ 30,000", mark(v.throughput_ge_30000)]);
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
    rows.push([`2 latency @${l.rate}/s p50 (ms)`, String(l.p50_ms), "", "≤ 1", mark(v.latency_p50_le_1ms)]);
    rows.push(["2 latency p90 (ms)", String(l.p90_ms), "", "", ""]);
    rows.push(["2 latency p99 (ms)", String(l.p99_ms), "", "≤ 10", mark(v.latency_p99_le_10ms)]);
    rows.push(["2 latency p99.9 (ms)", String(l.p999_ms), "", "", ""]);
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
        "≤ 150",
        mark(v.rss_at_rest_le_150mb),
      ]);
    rows.push([
      "4 peak RSS during 1–3 (MB)",
      String(m.peak_rss_mb),
      Object.entries(m.peak_by_scenario_mb)
        .map(([k, x]) => `${k} ${x}`)
        .join(", "),
      "bounded",
      "",
    ]);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

// ---- main ----------------------------------------------------------------------------------------------------------

async function main() {
  const t0 = Date.now();
  say(`starting Redis (${opts.cluster ? "cluster" : "single node"}) and the emulator (--generate ${GENERATE})`);
  redis = await startRedis({ cluster: opts.cluster });
  result.machine.loadavg_at_start = loadavg().map((x) => round(x, 2));
  result.setup.redis_version = (await redis.eachNode((c) => c.info("server")))[0].match(/redis_version:(\S+)/)?.[1];
  reader = redis.client();
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

  const stream = has("throughput") || has("latency");
  if (has("ceilings") || (has("throughput") && !opts.noCeilings)) await runCeilings();
  if (has("load") || stream) await runLoad();
  if (!has("load")) delete result.load;

  if (stream) {
    const rep = await startReplicator({
      env: { ...redis.env, SCHEMATIC_API_URL: emulator.url, ...opts.env },
      nodeArgs: profileArgs("stream"),
    });
    await waitFor("the replicator (defaults) to be ready", () => rep.ready(), { timeoutMs: 600_000, everyMs: 50 });
    const reloaded = rep.logs.some((e) => /starting a full load/.test(e.msg ?? ""));
    if (reloaded) say("warning: the stream replicator loaded everything instead of resuming from the cursor");
    result.setup.stream_replicator_resumed = !reloaded;
    if (has("throughput")) await runThroughput(rep);
    if (has("latency")) await runLatency(rep);
    peaks.stream_process_hwm = memoryOf(rep.pid).hwm;
    result.setup.stream_replicator_debug = (await rep.debug()).messages;
    await rep.stop();
  }
  if (result.throughput && result.ceilings)
    result.ratio_to_lower_ceiling = round(result.throughput.median / result.ceilings.lower_changes_per_s, 2);

  const byScenario = {};
  if (peaks.throughput) byScenario.throughput = mb(peaks.throughput);
  if (peaks.latency) byScenario.latency = mb(peaks.latency);
  if (peaks.load) byScenario.load = mb(peaks.load);
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
