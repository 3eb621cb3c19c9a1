// Where a change's time goes inside the replicator, stage by stage: a preload for the replicator process that
// timestamps each change stamped by the benchmark feed (`generate` with `stamp`, environment_id `{tag}@{ns}`) as it
// is received, queued, taken by its lane, and written, and at exit writes the percentiles of each stage to
// TRACE_CHANGE_OUT (default /tmp/trace-change-<pid>.txt). Only batches of one change are traced (a lone change; at
// higher rates, the batches that happen to hold one). Timestamps are CLOCK_MONOTONIC, as the feed's stamps.
// Usage: npm run bench -- --scenario latency --rate 50 --duration 10 --node-args "--import $PWD/bench/trace-change.mjs"
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const dist = (path) => pathToFileURL(join(process.cwd(), "dist", path)).href;
const { Pipeline } = await import(dist("replication/pipeline.js"));
const { EntityLane } = await import(dist("replication/entity-lane.js"));
const { StoreWriter } = await import(dist("store/writer.js"));

const now = () => process.hrtime.bigint();
const STAMP = /"environment_id":"[^"@]*@(\d+)"/;
const traces = [];
let current;

const handleFrame = Pipeline.prototype.handleFrame;
Pipeline.prototype.handleFrame = function (text, bytes) {
  const received = now();
  handleFrame.call(this, text, bytes);
  const stamp = STAMP.exec(text)?.[1];
  if (!stamp) return;
  current = { pushed: BigInt(stamp), received, queued: now() };
  traces.push(current);
};
const applyBatch = EntityLane.prototype.applyBatch;
EntityLane.prototype.applyBatch = async function (batch) {
  const trace = batch.length === 1 ? current : undefined;
  if (trace) trace.taken = now();
  await applyBatch.call(this, batch);
};
for (const name of ["readMany", "apply"]) {
  const call = StoreWriter.prototype[name];
  StoreWriter.prototype[name] = async function (...args) {
    const trace = current;
    const start = now();
    const result = await call.apply(this, args);
    if (trace?.taken && trace[name] === undefined) trace[name] = [start, now()];
    return result;
  };
}

const STAGES = [
  ["pushed → received (feed, network, WebSocket)", (t) => t.received - t.pushed],
  ["received → queued (parse, validate, route)", (t) => t.queued - t.received],
  ["queued → taken by its lane", (t) => t.taken - t.queued],
  ["taken → read sent (batches that read)", (t) => (t.readMany ? t.readMany[0] - t.taken : undefined)],
  ["read round trip", (t) => (t.readMany ? t.readMany[1] - t.readMany[0] : undefined)],
  ["taken → write sent", (t) => t.apply[0] - t.taken],
  ["write round trip", (t) => t.apply[1] - t.apply[0]],
  ["pushed → write answered", (t) => t.apply[1] - t.pushed],
];

process.on("exit", () => {
  const done = traces.filter((t) => t.taken !== undefined && t.apply !== undefined);
  const pct = (xs, p) => xs[Math.min(xs.length - 1, Math.ceil((p / 100) * xs.length) - 1)];
  const lines = [`${done.length} lone changes traced; ms at p50 / p90 / p99`];
  for (const [name, of] of STAGES) {
    const xs = done
      .map(of)
      .filter((x) => x !== undefined)
      .map((x) => Number(x) / 1e6)
      .sort((a, b) => a - b);
    if (xs.length > 0) lines.push(`${name.padEnd(48)} ${[50, 90, 99].map((p) => pct(xs, p).toFixed(3)).join(" / ")}`);
  }
  writeFileSync(process.env.TRACE_CHANGE_OUT ?? `/tmp/trace-change-${process.pid}.txt`, `${lines.join("\n")}\n`);
});
