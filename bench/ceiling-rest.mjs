// Ceiling of the initial load: a bare client that fetches the same REST pages as the tuned loader (the counts, then
// every page of companies and users, PAGE rows each, CONCURRENCY requests in flight across both kinds, through
// Node's fetch) and JSON.parses each body, doing nothing else.
// Usage (by bench/run.mjs): node bench/ceiling-rest.mjs '{"url": "http://…", "pageSize": 500, "concurrency": 8}'
// Prints one JSON line: {"start_ns", "end_ns", "rows": {"companies", "users"}, "bytes": {"companies", "users"},
// "requests", "cpu_s"}.
const o = JSON.parse(process.argv[2]);
const headers = { "X-Schematic-Api-Key": "bench-key", Accept: "application/json" };

/** The body's text and its size (from Content-Length, which the emulator always sends). */
async function get(path) {
  const res = await fetch(`${o.url}${path}`, { headers });
  const text = await res.text();
  if (!res.ok) throw new Error(`GET ${path}: HTTP ${res.status} ${text.slice(0, 200)}`);
  return { text, size: Number(res.headers.get("content-length") ?? 0) };
}

const cpu0 = process.cpuUsage();
const start = process.hrtime.bigint();
const kinds = ["companies", "users"];
const counts = await Promise.all(kinds.map(async (k) => JSON.parse((await get(`/${k}/count`)).text).data.count));
const pages = kinds.flatMap((kind, i) =>
  Array.from({ length: Math.ceil(counts[i] / o.pageSize) }, (_, n) => ({ kind, offset: n * o.pageSize })),
);
const rows = { companies: 0, users: 0 };
const bytes = { companies: 0, users: 0 };
let next = 0;
const worker = async () => {
  while (next < pages.length) {
    const { kind, offset } = pages[next++];
    const { text, size } = await get(`/${kind}?limit=${o.pageSize}&offset=${offset}`);
    bytes[kind] += size;
    rows[kind] += JSON.parse(text).data.length;
  }
};
await Promise.all(Array.from({ length: o.concurrency }, worker));
const end = process.hrtime.bigint();
const cpu = process.cpuUsage(cpu0);
if (rows.companies !== counts[0] || rows.users !== counts[1]) {
  process.stderr.write(`ceiling-rest: got ${JSON.stringify(rows)} rows for counts ${counts}\n`);
  process.exit(1);
}
process.stdout.write(
  `${JSON.stringify({ start_ns: String(start), end_ns: String(end), rows, bytes, requests: pages.length + 2, cpu_s: (cpu.user + cpu.system) / 1e6 })}\n`,
);
