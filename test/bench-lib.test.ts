/**
 * The benchmark's pure helpers (bench/lib/*.mjs): its command line (scale sizes, lists), and the per-change
 * accounting — Redis commands from `INFO commandstats` without the benchmark's own reads, the writer's round trips
 * from /metrics — and the scale curve's slope. The scenarios themselves run only under `npm run bench`.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";

// The bench is plain JavaScript (no declarations): typed here as the tests use it.
type Size = { companies: number; users: number };
type Options = {
  scenarios: Set<string>;
  sizes: Size[];
  rows: string[];
  freshRates: number[];
  trickleRate: number;
  companies: number;
};
const options = (await import(`${"../bench/lib/options.mjs"}`)) as {
  parseOptions(argv: string[]): Options;
  parseSize(text: string, scaleCompanies: number): Size | undefined;
};
type Snapshot = { cpu: Record<string, number>; commands: Map<string, number>; roundTrips?: Record<string, number> };
const perChange = (await import(`${"../bench/lib/per-change.mjs"}`)) as {
  parseCommandStats(text: string): Map<string, number>;
  parseRoundTrips(text: string): Record<string, number> | undefined;
  perChange(changes: number, before: Snapshot, after: Snapshot): Record<string, unknown>;
};
const scale = (await import(`${"../bench/lib/scale.mjs"}`)) as {
  slopePerMillion(points: { entities: number }[], pick: (p: { entities: number; y: number }) => number): number;
};

describe("bench options", () => {
  test("scale sizes: N splits as issue 16 does (companies ≤ 100k and ≤ half); C+U as given", () => {
    assert.deepEqual(options.parseSize("1M", 100_000), { companies: 100_000, users: 900_000 });
    assert.deepEqual(options.parseSize("200k", 100_000), { companies: 100_000, users: 100_000 });
    assert.deepEqual(options.parseSize("20000", 100_000), { companies: 10_000, users: 10_000 });
    assert.deepEqual(options.parseSize("5k+45k", 100_000), { companies: 5_000, users: 45_000 });
    assert.equal(options.parseSize("lots", 100_000), undefined);
    assert.equal(options.parseSize("0+10", 100_000), undefined);
  });

  test("defaults run every scenario; lists and new scenarios parse; bad values are usage errors", () => {
    const d = options.parseOptions([]);
    assert.deepEqual([...d.scenarios].sort(), [
      "ceilings",
      "fresh",
      "latency",
      "load",
      "scale",
      "throughput",
      "trickle",
    ]);
    assert.deepEqual(d.freshRates, [1000, 5000]);
    assert.deepEqual(d.rows, ["full", "lean"]);
    assert.equal(d.sizes.length, 3);
    const o = options.parseOptions([
      "--scenario=trickle,fresh",
      "--fresh-rates",
      "2000",
      "--sizes",
      "20k,50k",
      "--rows",
      "lean",
      "--companies",
      "2k",
    ]);
    assert.deepEqual([...o.scenarios], ["trickle", "fresh"]);
    assert.deepEqual(o.freshRates, [2000]);
    assert.deepEqual(o.sizes, [
      { companies: 10_000, users: 10_000 },
      { companies: 25_000, users: 25_000 },
    ]);
    assert.equal(o.companies, 2000);
    for (const bad of [
      ["--rows", "huge"],
      ["--sizes", "x"],
      ["--scenario", "soak"],
      ["--fresh-rates", "0"],
    ]) {
      assert.throws(() => options.parseOptions(bad), { name: "UsageError" }, bad.join(" "));
    }
  });
});

describe("per-change accounting", () => {
  const stats = (calls: Record<string, number>) =>
    Object.entries(calls)
      .map(([k, n]) => `cmdstat_${k}:calls=${n},usec=1,usec_per_call=1.00,rejected_calls=0,failed_calls=0`)
      .join("\r\n");

  test("commands per change leave out the benchmark's own (GETRANGE, INFO, CONFIG, PSUBSCRIBE)", () => {
    const before = {
      cpu: { replicator: 1, redis: 2, emulator: 3 },
      commands: perChange.parseCommandStats(`# Commandstats\r\n${stats({ mget: 10, exec: 10, getrange: 5 })}`),
      roundTrips: { read: 10, write: 10 },
    };
    const after = {
      cpu: { replicator: 1.5, redis: 2.1, emulator: 3.2 },
      commands: perChange.parseCommandStats(
        stats({ mget: 60, exec: 110, eval: 100, getrange: 5000, info: 3, "config|set": 2, psubscribe: 1 }),
      ),
      roundTrips: { read: 60, write: 110 },
    };
    const r = perChange.perChange(1000, before, after);
    assert.deepEqual(r.cpu_us_per_change, { replicator: 500, redis: 100, emulator: 200 });
    assert.equal(r.redis_commands_per_change, 0.25); // (50 + 100 + 100) / 1000
    assert.equal(r.redis_transactions_per_change, 0.1);
    assert.deepEqual(r.redis_commands_by_type_per_change, { exec: 0.1, eval: 0.1, mget: 0.05 });
    assert.deepEqual(r.writer_round_trips_per_change, { total: 0.15, read: 0.05, write: 0.1 });
  });

  test("the writer's round trips are read from the replicator's /metrics, by operation", () => {
    const text = [
      "# TYPE schematic_replicator_redis_command_duration_seconds histogram",
      'schematic_replicator_redis_command_duration_seconds_bucket{le="0.001",operation="read"} 3',
      'schematic_replicator_redis_command_duration_seconds_count{operation="read"} 7',
      'schematic_replicator_redis_command_duration_seconds_count{operation="write"} 9',
    ].join("\n");
    assert.deepEqual(perChange.parseRoundTrips(text), { read: 7, write: 9 });
    assert.equal(perChange.parseRoundTrips("nodejs_heap_size_used_bytes 1"), undefined);
  });
});

test("scale: the curve's slope per million entities (least squares)", () => {
  const points = [
    { entities: 100_000, y: 20 },
    { entities: 500_000, y: 60 },
    { entities: 1_000_000, y: 110 },
  ];
  assert.equal(
    scale.slopePerMillion(points, (p) => p.y),
    100,
  );
});
