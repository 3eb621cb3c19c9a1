// One initial load (docs/performance.md, "Initial load"): Redis flushed, a replicator with the tuned loader started
// against the emulator, timed from spawning it to the first 200 from /ready; then its memory at rest.
import {
  cpuSecondsOf,
  cpuSnapshot,
  memoryOf,
  nowNs,
  otherLoad,
  rssSampler,
  sleep,
  startReplicator,
  waitFor,
} from "./procs.mjs";
import { mb } from "./stats.mjs";

/** Settings of the load scenarios (issue 6); everything else stays at its default. */
export const LOAD_TUNING = {
  USE_ASYNC_LOADING: "true",
  ASYNC_LOADER_PAGE_SIZE: "500",
  ASYNC_LOADER_MAX_CONCURRENT_REQUESTS: "8",
  ASYNC_LOADER_RATE_LIMIT_RPS: "0",
};

/** V8 heap figures (MB) from the replicator's /metrics (prom-client default metrics). */
export async function heapOf(rep) {
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

/**
 * Loads everything the emulator at `apiUrl` holds into a flushed Redis and waits `restWait` seconds idle. Resolves
 * with the figures and the replicator, still running (the caller stops it).
 */
export async function measureLoad({ redis, apiUrl, restWait, env = {}, nodeArgs = [] }) {
  await redis.flush();
  const m0 = cpuSnapshot();
  const start = nowNs();
  const rep = await startReplicator({
    env: { ...redis.env, SCHEMATIC_API_URL: apiUrl, ...LOAD_TUNING, ...env },
    nodeArgs,
  });
  const sampler = rssSampler(rep.pid);
  await waitFor("the loading replicator to be ready", () => rep.ready(), { timeoutMs: 1_800_000, everyMs: 20 }).catch(
    (err) => {
      throw new Error(`${err.message}\n${rep.stderr()}`);
    },
  );
  const seconds = Number(nowNs() - start) / 1e9;
  const other = otherLoad(m0, cpuSnapshot());
  const complete = await rep.waitLog((e) => /full load complete/.test(e.msg ?? ""));
  const loadPeak = sampler.peak;
  const cpuSeconds = cpuSecondsOf(rep.pid);
  // At rest: no changes for restWait seconds after /ready (V8 gives memory back lazily: its memory reducer runs
  // some tens of seconds after allocation stops); the last sample counts, the curve is kept.
  const atReady = memoryOf(rep.pid).rss;
  const heapAtReady = await heapOf(rep);
  const curve = [mb(atReady)];
  let rest = atReady;
  for (let i = 1; i <= restWait; i++) {
    await sleep(1000);
    rest = memoryOf(rep.pid).rss;
    if (i % 10 === 0 || i === restWait) curve.push(mb(rest));
  }
  const keys = await redis.eachNode((c) => c.dbsize());
  const entities = complete.companies + complete.users;
  sampler.stop();
  return {
    rep,
    figures: {
      seconds,
      entities,
      entities_per_s: entities / seconds,
      replicator_load_ms: complete.ms,
      replicator_cpu_s: cpuSeconds,
      rss_at_rest_bytes: rest,
      peak_rss_bytes: Math.max(loadPeak, memoryOf(rep.pid).hwm),
      redis_keys: keys.reduce((a, b) => a + b, 0),
      redis_used_memory_bytes: await redis.usedMemory(),
      other_load_cores: other,
      heap: await heapOf(rep),
      heap_at_ready: heapAtReady,
      rss_at_ready_bytes: atReady,
      rss_curve_mb: curve,
    },
  };
}
