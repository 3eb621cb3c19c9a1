// Ceiling 1: the benchmark feed into a bare WebSocket client that parses each message and does nothing else.
// Usage (by bench/run.mjs): node bench/ceiling-ws.mjs WS_URL COUNT TAG [WARM_TAG WARM_COUNT]
// Prints "subscribed" once the Companies subscription is answered, "warmed" once WARM_COUNT frames carrying
// WARM_TAG have been parsed (a warm-up, so that the client runs optimised code like the long-lived replicator),
// then one JSON line when COUNT company frames carrying TAG have arrived: {"last_ns": "...", "count": N, "cpu_s": x}.
import WebSocket from "ws";

const [url, countText, tag, warmTag, warmText] = process.argv.slice(2);
const count = Number(countText);
const warmCount = Number(warmText ?? 0);
let warmed = 0;
const ws = new WebSocket(url, {
  headers: { "X-Schematic-Api-Key": "bench-key", "X-Schematic-Datastream-Mode": "replicator" },
  perMessageDeflate: false,
  maxPayload: 256 * 1024 * 1024,
});
let seen = 0;
let cpu0 = process.cpuUsage();
ws.on("open", () => {
  ws.send(JSON.stringify({ data: { action: "start", entity_type: "rulesengine.Companies" } }));
});
ws.on("message", (data) => {
  const msg = JSON.parse(data.toString());
  if (msg.data?.subscribed === true) {
    process.stdout.write("subscribed\n");
    return;
  }
  if (warmCount > 0 && msg.data?.environment_id === warmTag && ++warmed === warmCount) {
    process.stdout.write("warmed\n");
    return;
  }
  if (msg.entity_type !== "rulesengine.Company" || msg.data?.environment_id !== tag) return;
  if (seen === 0) cpu0 = process.cpuUsage();
  if (++seen === count) {
    const last = process.hrtime.bigint();
    const cpu = process.cpuUsage(cpu0);
    process.stdout.write(
      `${JSON.stringify({ last_ns: String(last), count: seen, cpu_s: (cpu.user + cpu.system) / 1e6 })}\n`,
    );
    ws.terminate();
    process.exit(0);
  }
});
ws.on("error", (err) => {
  process.stderr.write(`ceiling-ws: ${err.message}\n`);
  process.exit(1);
});
