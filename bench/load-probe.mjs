#!/usr/bin/env node
// One initial load per run, measured (issue 16), until `npm run bench -- --scenario scale` exists: its own Redis, the
// rows of bench/lean-feed.mjs (the emulator serving only the datastream) or, with --full, the emulator's full rows,
// and a replicator from dist/ with the tuned loader (async, page 500, 8 requests in flight, no rate limit). Prints
// one JSON line per run: time to /ready, entities/s, replicator CPU s (/proc), peak RSS (VmHWM and samples), RSS
// after --rest seconds idle, Redis used_memory and CPU s, the feed's CPU s, other load (cores used by processes
// outside the probe), and with --ceiling a same-run ceiling (a bare client fetching the same pages, 8 at once, and
// JSON.parse-ing them) and the ratio. --reload: runs after the first load into the Redis the previous run filled
// (marker and cursor deleted, --ghosts N users added that the source does not have, to be evicted).
// Usage: node bench/load-probe.mjs --companies N --users N [--full] [--ceiling] [--rest S] [--runs N] [--reload]
//        [--ghosts N] [--root DIR] [--env K=V,…] [--node-args "…"]        (npm run build first)
import {
  cpuSecondsOf,
  cpuSnapshot,
  killAllChildren,
  memoryOf,
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

const args = {};
for (let i = 2; i < process.argv.length; i++) {
  const [k, ...v] = process.argv[i].replace(/^--/, "").split("=");
  const next = process.argv[i + 1];
  if (v.length > 0) args[k] = v.join("=");
  else if (next !== undefined && !next.startsWith("--")) args[k] = process.argv[++i];
  else args[k] = "1";
}
const companies = Number(args.companies ?? 100_000);
const users = Number(args.users ?? 100_000);
const PAGE = 500;
const IN_FLIGHT = 8;
const mb = (b) => Math.round(b / 1048576);
setProductRoot(args.root ?? ROOT);
process.on("exit", killAllChildren);
process.on("SIGINT", () => process.exit(1));

const redis = await startRedis();
let apiUrl;
let datastreamUrl;
let feed;
if (args.full) {
  const emulator = await startEmulator(`companies=${companies},users=${users},flags=50,seed=1`);
  apiUrl = emulator.url;
  datastreamUrl = emulator.url;
} else {
  datastreamUrl = (await startEmulator("companies=10,users=10,flags=50,seed=1")).url;
  let out = "";
  let listening;
  const url = new Promise((resolve) => (listening = resolve));
  feed = startChild(
    "lean-feed",
    process.execPath,
    [`${ROOT}/bench/lean-feed.mjs`, "--companies", String(companies), "--users", String(users)],
    {
      onStdout: (d) => {
        out += d;
        const m = /listening on (\S+)/.exec(out);
        if (m) listening(m[1]);
      },
    },
  );
  apiUrl = await url;
}
const version = await (async () => {
  const probe = await startReplicator({ env: { ...redis.env, SCHEMATIC_API_URL: apiUrl } });
  const body = await waitFor("the version", () => fetch(`${probe.base}/health`).then((r) => r.json()), {
    everyMs: 50,
  });
  await probe.stop();
  return body.cache_version;
})();

async function ceiling() {
  const t0 = process.hrtime.bigint();
  const c0 = process.cpuUsage();
  const f0 = feed ? cpuSecondsOf(feed.pid) : 0;
  let rows = 0;
  for (const [kind, n] of [
    ["companies", companies],
    ["users", users],
  ]) {
    const offsets = [];
    for (let o = 0; o < n; o += PAGE - 2) offsets.push(o);
    let next = 0;
    await Promise.all(
      Array.from({ length: IN_FLIGHT }, async () => {
        while (next < offsets.length) {
          const res = await fetch(`${apiUrl}/${kind}?limit=${PAGE}&offset=${offsets[next++]}`, {
            headers: { "X-Schematic-Api-Key": "bench-key" },
          });
          const page = JSON.parse(await res.text());
          rows += page.data.length;
        }
      }),
    );
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(c0);
  return {
    seconds: +seconds.toFixed(2),
    rows,
    rows_per_s: Math.round(rows / seconds),
    cpu_s: +((cpu.user + cpu.system) / 1e6).toFixed(2),
    feed_cpu_s: feed ? +(cpuSecondsOf(feed.pid) - f0).toFixed(2) : undefined,
  };
}

const env = {
  ...redis.env,
  SCHEMATIC_API_URL: apiUrl,
  SCHEMATIC_DATASTREAM_URL: datastreamUrl,
  USE_ASYNC_LOADING: "true",
  ASYNC_LOADER_PAGE_SIZE: String(PAGE),
  ASYNC_LOADER_MAX_CONCURRENT_REQUESTS: String(IN_FLIGHT),
  ASYNC_LOADER_RATE_LIMIT_RPS: "0",
};
for (const kv of String(args.env ?? "")
  .split(",")
  .filter(Boolean)) {
  const [k, ...v] = kv.split("=");
  env[k] = v.join("=");
}
const nodeArgs = args["node-args"] ? String(args["node-args"]).split(/\s+/).filter(Boolean) : [];

for (let run = 1; run <= Number(args.runs ?? 1); run++) {
  const ceil = args.ceiling ? await ceiling() : undefined;
  const c = redis.client();
  if (args.reload && run > 1) {
    for (const key of await c.keys("schematic:datastream:*")) await c.del(key);
    for (let g = 0; g < Number(args.ghosts ?? 0); g++) {
      const ghost = { id: `ghost_${g}`, account_id: "", environment_id: "e", keys: { email: `ghost_${g}` } };
      await c.set(`schematic:user:${version}:ghost_${g}`, JSON.stringify({ ...ghost, traits: [], rules: [] }));
    }
  } else {
    await redis.flush();
  }
  const m0 = cpuSnapshot();
  const redisCpu0 = redis.pids.reduce((a, pid) => a + cpuSecondsOf(pid), 0);
  const feedCpu0 = feed ? cpuSecondsOf(feed.pid) : 0;
  const t0 = process.hrtime.bigint();
  const rep = await startReplicator({ env, nodeArgs });
  const sampler = rssSampler(rep.pid, 25);
  await waitFor("/ready", () => rep.ready(), { timeoutMs: 1_800_000, everyMs: 20 }).catch((err) => {
    throw new Error(`${err.message}\n${rep.stderr()}`);
  });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = cpuSecondsOf(rep.pid);
  const other = otherLoad(m0, cpuSnapshot());
  const redisCpu = redis.pids.reduce((a, pid) => a + cpuSecondsOf(pid), 0) - redisCpu0;
  const feedCpu = feed ? cpuSecondsOf(feed.pid) - feedCpu0 : undefined;
  const done = await rep.waitLog((e) => /full load complete/.test(e.msg ?? ""));
  const peak = Math.max(sampler.peak, memoryOf(rep.pid).hwm);
  sampler.stop();
  const redisBytes = await redis.usedMemory();
  await sleep(Number(args.rest ?? 10) * 1000);
  const atRest = memoryOf(rep.pid).rss;
  const entities = done.companies + done.users;
  const result = {
    run,
    shape: args.full ? "full" : "lean",
    entities,
    seconds: +seconds.toFixed(2),
    entities_per_s: Math.round(entities / seconds),
    replicator_cpu_s: cpu,
    cpu_us_per_entity: +((cpu * 1e6) / entities).toFixed(1),
    peak_rss_mb: mb(peak),
    rss_at_rest_mb: mb(atRest),
    redis_used_memory_mb: mb(redisBytes),
    redis_cpu_s: +redisCpu.toFixed(2),
    feed_cpu_s: feedCpu === undefined ? undefined : +feedCpu.toFixed(2),
    evicted: done.evicted,
    other_load_cores: +other.toFixed(2),
    ceiling: ceil,
    ratio: ceil ? +(entities / seconds / ceil.rows_per_s).toFixed(2) : undefined,
  };
  console.log(JSON.stringify(result));
  await rep.stop();
}
await redis.stop();
process.exit(0);
