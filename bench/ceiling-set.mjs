// Ceiling 2: a bare pipelined SET loop writing what the replicator writes for COUNT company changes — each
// company's rules-engine body under its id key and the id under each lookup key (the same keys and values, built
// before the clock starts), with no reads, no scripts and no per-change logic.
// Usage (by bench/run.mjs): node bench/ceiling-set.mjs JSON_OPTIONS
//   {"addrs": ["127.0.0.1:6379"], "cluster": false, "count": N, "version": "...", "tag": "...", "seed": 1,
//    "flags": 200, "chunk": 1000, "depth": 2}
// Prints one JSON line: {"start_ns", "end_ns", "changes", "commands", "cpu_s"}.
import { Cluster, Redis } from "ioredis";
import { generateFixture } from "../dist/emulator/generate.js";
import { parseCompany } from "../dist/model/entities.js";
import { groupBySlotOwner } from "../dist/store/cluster.js";
import { KeyScheme } from "../dist/store/keys.js";

const o = JSON.parse(process.argv[2]);
const nodes = o.addrs.map((a) => ({ host: a.split(":")[0], port: Number(a.split(":")[1]) }));
const client = o.cluster ? new Cluster(nodes) : new Redis(nodes[0]);
await client.ping();

const scheme = new KeyScheme("schematic:", o.version);
const { companies } = generateFixture({ companies: o.count, users: 0, flags: o.flags, seed: o.seed });
// One change = the list of [key, value] SETs the replicator issues for it.
const changes = companies.map((c) => {
  const body = JSON.stringify(parseCompany({ ...c, environment_id: o.tag }, "engine"));
  const idValue = JSON.stringify(c.id);
  const sets = [[scheme.companyId(c.id), body]];
  for (const [name, value] of Object.entries(c.keys)) for (const k of scheme.companyLookups(name, value)) sets.push([k, idValue]);
  return sets;
});
const commands = changes.reduce((n, s) => n + s.length, 0);

async function writeChunk(chunk) {
  const sets = chunk.flat();
  const groups = o.cluster ? groupBySlotOwner(client, sets, (s) => s[0]) : [sets];
  await Promise.all(
    groups.map(async (group) => {
      const pipe = client.pipeline();
      for (const [k, v] of group) pipe.set(k, v);
      const res = await pipe.exec();
      for (const [err] of res) if (err) throw err;
    }),
  );
}

const cpu0 = process.cpuUsage();
const start = process.hrtime.bigint();
let next = 0;
const lane = async () => {
  while (next < changes.length) {
    const from = next;
    next += o.chunk;
    await writeChunk(changes.slice(from, from + o.chunk));
  }
};
await Promise.all(Array.from({ length: o.depth }, lane));
const end = process.hrtime.bigint();
const cpu = process.cpuUsage(cpu0);
process.stdout.write(
  `${JSON.stringify({ start_ns: String(start), end_ns: String(end), changes: changes.length, commands, cpu_s: (cpu.user + cpu.system) / 1e6 })}\n`,
);
client.disconnect();
