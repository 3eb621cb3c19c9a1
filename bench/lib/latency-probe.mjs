// Push → readable latency of stamped changes (docs/performance.md, "Latency"): keyspace notifications for the
// company id keys (one subscription per master), the arrival time of each `set`, then a read of the value for the
// push stamp the emulator put in it (`environment_id` = `{tag}@{ns}`, CLOCK_MONOTONIC). The notification is sent
// after the write is executed, so arrival is never before "readable".
import { nowNs } from "./procs.mjs";
import { percentile, round } from "./stats.mjs";

/**
 * Subscribes (and turns notifications on) until `close()`. `expect(tag)` starts collecting the changes of one
 * run; `seen` counts them; `summary()` gives the percentiles. Open it before starting a replicator that must get
 * changes straight after it is ready, so nothing is set up in between.
 */
export async function openLatencyProbe({ redis, reader, keyPattern, envOf }) {
  const nodes = redis.nodeClients();
  const subs = redis.nodeClients();
  const channelPrefix = "__keyspace@0__:".length;
  let tag;
  let samples = [];
  await Promise.all(nodes.map((c) => c.config("SET", "notify-keyspace-events", "K$")));
  for (const s of subs) {
    s.on("pmessage", (_p, channel, message) => {
      if (message !== "set" || tag === undefined) return;
      const arrived = nowNs();
      const runTag = tag;
      const into = samples;
      reader.getrange(channel.slice(channelPrefix), 0, 255).then((v) => {
        const env = envOf(v);
        if (!env?.startsWith(`${runTag}@`)) return;
        into.push(Number(arrived - BigInt(env.slice(runTag.length + 1))) / 1e6);
      });
    });
    await s.psubscribe(`__keyspace@0__:${keyPattern}`);
  }
  return {
    expect(runTag) {
      tag = runTag;
      samples = [];
    },
    get seen() {
      return samples.length;
    },
    summary() {
      const sorted = [...samples].sort((a, b) => a - b);
      return {
        samples: sorted.length,
        p50_ms: round(percentile(sorted, 50), 3),
        p90_ms: round(percentile(sorted, 90), 3),
        p99_ms: round(percentile(sorted, 99), 3),
        p999_ms: round(percentile(sorted, 99.9), 3),
        max_ms: round(sorted.at(-1), 3),
        mean_ms: round(sorted.reduce((a, b) => a + b, 0) / Math.max(1, sorted.length), 3),
      };
    },
    async close() {
      tag = undefined;
      await Promise.all(nodes.map((c) => c.config("SET", "notify-keyspace-events", "")));
      for (const c of [...subs, ...nodes]) c.disconnect();
    },
  };
}
