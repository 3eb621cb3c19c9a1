// The scale scenario (docs/performance.md, "Scale"): the initial load at several sizes and row shapes, as a curve
// of time, entities/s, peak RSS, RSS at rest and Redis memory, each point beside a same-run ceiling (a bare client
// fetching and parsing the same pages). Each point has its own emulator (`--generate …,rows=SHAPE`), stopped
// before the next one, and a flushed Redis.
import { LOAD_TUNING, measureLoad } from "./load.mjs";
import { cpuSnapshot, memoryOf, otherLoad, rssSampler, runJsonScript, startEmulator } from "./procs.mjs";
import { mb, median, round } from "./stats.mjs";

/** The ceiling of a load from `url`: its own process, the loader's page size and concurrency. */
async function restCeiling(url) {
  const m0 = cpuSnapshot();
  const out = await runJsonScript("ceiling-rest", "bench/ceiling-rest.mjs", {
    url,
    pageSize: Number(LOAD_TUNING.ASYNC_LOADER_PAGE_SIZE),
    concurrency: Number(LOAD_TUNING.ASYNC_LOADER_MAX_CONCURRENT_REQUESTS),
  });
  const seconds = Number(BigInt(out.end_ns) - BigInt(out.start_ns)) / 1e9;
  const entities = out.rows.companies + out.rows.users;
  return {
    seconds,
    entities_per_s: entities / seconds,
    client_cpu_s: out.cpu_s,
    requests: out.requests,
    row_bytes: {
      company: out.rows.companies ? Math.round(out.bytes.companies / out.rows.companies) : undefined,
      user: out.rows.users ? Math.round(out.bytes.users / out.rows.users) : undefined,
    },
    other_load_cores: otherLoad(m0, cpuSnapshot()),
  };
}

/** Least-squares slope of y over x (per million entities), or undefined with fewer than two sizes. */
export function slopePerMillion(points, pick) {
  const xs = points.map((p) => p.entities / 1e6);
  const ys = points.map(pick);
  if (xs.length < 2 || ys.some((y) => typeof y !== "number")) return undefined;
  const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
  const my = ys.reduce((a, b) => a + b, 0) / ys.length;
  const sxx = xs.reduce((a, x) => a + (x - mx) ** 2, 0);
  if (sxx === 0) return undefined;
  return round(xs.reduce((a, x, i) => a + (x - mx) * (ys[i] - my), 0) / sxx, 1);
}

function summarisePoint(rows, size, emulatorFigures, list) {
  const med = (pick) => median(list.map(pick));
  const entities = list[0].load.entities;
  const seconds = med((x) => x.load.seconds);
  const ceilingRate = med((x) => x.ceiling.entities_per_s);
  const loadRate = med((x) => x.load.entities_per_s);
  const loadMsRate = med((x) => x.load.entities / (x.load.replicator_load_ms / 1000));
  return {
    rows,
    companies: size.companies,
    users: size.users,
    entities,
    seconds: round(seconds, 2),
    seconds_min_max: list.length > 1 ? list.map((x) => round(x.load.seconds, 2)) : undefined,
    entities_per_s: Math.round(loadRate),
    replicator_load_ms: Math.round(med((x) => x.load.replicator_load_ms)),
    replicator_cpu_s: round(
      med((x) => x.load.replicator_cpu_s),
      2,
    ),
    peak_rss_mb: mb(Math.max(...list.map((x) => x.load.peak_rss_bytes))),
    rss_at_rest_mb: mb(med((x) => x.load.rss_at_rest_bytes)),
    redis_used_memory_mb: mb(list[0].load.redis_used_memory_bytes),
    redis_bytes_per_entity: Math.round(list[0].load.redis_used_memory_bytes / entities),
    redis_keys: list[0].load.redis_keys,
    ceiling: {
      seconds: round(
        med((x) => x.ceiling.seconds),
        2,
      ),
      entities_per_s: Math.round(ceilingRate),
      client_cpu_s: round(
        med((x) => x.ceiling.client_cpu_s),
        2,
      ),
      row_bytes: list[0].ceiling.row_bytes,
    },
    // Spawn → /ready 200 against the ceiling's first request → last page parsed; and the replicator's own load time.
    ratio_to_ceiling: round(loadRate / ceilingRate, 2),
    ratio_to_ceiling_of_load_ms: round(loadMsRate / ceilingRate, 2),
    emulator: emulatorFigures,
    runs: list.map((x) => ({
      seconds: round(x.load.seconds, 2),
      replicator_load_ms: x.load.replicator_load_ms,
      peak_rss_mb: mb(x.load.peak_rss_bytes),
      rss_at_rest_mb: mb(x.load.rss_at_rest_bytes),
      rss_every_10s_mb: x.load.rss_curve_mb,
      heap_at_rest_mb: x.load.heap,
      ceiling_seconds: round(x.ceiling.seconds, 2),
      ceiling_client_cpu_s: round(x.ceiling.client_cpu_s, 2),
      other_load_cores: round(Math.max(x.load.other_load_cores, x.ceiling.other_load_cores), 2),
    })),
  };
}

/**
 * Runs the curve. `ctx`: { opts, redis, runs, say, quiet, nodeArgs(name) }. Returns the `scale` section of the
 * results.
 */
export async function runScale({ opts, redis, runs, say, quiet, nodeArgs }) {
  const curve = [];
  for (const rows of opts.rows) {
    for (const size of opts.sizes) {
      const spec = `companies=${size.companies},users=${size.users},flags=200,seed=1,rows=${rows}`;
      say(`scale: starting an emulator with --generate ${spec}`);
      const emulator = await startEmulator(spec);
      const emulatorSampler = rssSampler(emulator.pid, 200);
      const rssAfterGenerate = memoryOf(emulator.pid).rss;
      const list = [];
      try {
        for (let r = 1; r <= runs; r++) {
          await quiet();
          const ceiling = await restCeiling(emulator.url);
          await quiet();
          const { figures, rep } = await measureLoad({
            redis,
            apiUrl: emulator.url,
            restWait: opts.restWait,
            env: opts.env,
            nodeArgs: nodeArgs(`scale-${rows}-${size.companies + size.users}`),
          });
          await rep.stop();
          list.push({ ceiling, load: figures });
          say(
            `scale ${rows} ${figures.entities.toLocaleString("en-US")} run ${r}/${runs}: ${round(figures.seconds)} s to /ready ` +
              `(${Math.round(figures.entities_per_s)}/s; ceiling ${Math.round(ceiling.entities_per_s)}/s), ` +
              `peak RSS ${mb(figures.peak_rss_bytes)} MB, at rest ${mb(figures.rss_at_rest_bytes)} MB, ` +
              `Redis ${mb(figures.redis_used_memory_bytes)} MB`,
          );
        }
      } finally {
        emulatorSampler.stop();
      }
      const emulatorFigures = {
        generate_s: Number(/ in ([\d.]+) s/.exec(emulator.stderr())?.[1] ?? Number.NaN),
        rss_after_generate_mb: mb(rssAfterGenerate),
        peak_rss_mb: mb(Math.max(emulatorSampler.peak, memoryOf(emulator.pid).hwm)),
      };
      await emulator.stop();
      curve.push(summarisePoint(rows, size, emulatorFigures, list));
    }
  }
  await redis.flush();
  const growth = {};
  for (const rows of opts.rows) {
    const points = curve.filter((p) => p.rows === rows);
    growth[rows] = {
      seconds_per_million: slopePerMillion(points, (p) => p.seconds),
      peak_rss_mb_per_million: slopePerMillion(points, (p) => p.peak_rss_mb),
      redis_mb_per_million: slopePerMillion(points, (p) => p.redis_used_memory_mb),
    };
  }
  return { load_settings: LOAD_TUNING, rest_wait_s: opts.restWait, curve, growth_per_million_entities: growth };
}
