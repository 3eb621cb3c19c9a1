// Ceiling 2: a bare pipelined SET loop writing what the replicator writes for COUNT company changes — each
// company's rules-engine body under its id key and the id under each of its lookup keys (the same keys and values;
// built before the clock starts) — with no reads, no scripts and no per-change logic. Commands are written as raw
// RESP on one socket per Redis node (a client library's per-command cost would make the ceiling lower than what
// the replicator's batched scripts reach); replies are only counted.
// Usage (by bench/run.mjs): node bench/ceiling-set.mjs JSON_OPTIONS
//   {"addrs": ["127.0.0.1:6379", ...], "cluster": false, "count": N, "version": "...", "tag": "...", "seed": 1,
//    "flags": 200, "chunk": 500, "depth": 2}
// Prints one JSON line: {"start_ns", "end_ns", "changes", "commands", "cpu_s"}.
import { connect } from "node:net";
import { generateFixture } from "../dist/emulator/generate.js";
import { parseCompany } from "../dist/model/entities.js";
import { keySlot } from "../dist/store/cluster.js";
import { KeyScheme } from "../dist/store/keys.js";

const o = JSON.parse(process.argv[2]);

/** A raw RESP connection: write command bytes, resolve when `n` more replies have arrived. */
function node(addr) {
  const [host, port] = addr.split(":");
  const socket = connect({ host, port: Number(port) });
  socket.setNoDelay(true);
  let replies = 0;
  let errors = "";
  const waiters = [];
  let partial = "";
  socket.on("data", (buf) => {
    // Every reply of these commands is one line ("+OK", "-ERR ...", or an integer/bulk header for INFO-less use).
    for (let i = 0; i < buf.length; i++) {
      if (buf[i] === 10) {
        if (partial.startsWith("-") && errors.length < 500) errors += `${partial.trim()}; `;
        partial = "";
        replies++;
      } else if (partial.length < 100 && (partial.length > 0 || buf[i] === 45)) partial += String.fromCharCode(buf[i]);
    }
    while (waiters.length && waiters[0].at <= replies) waiters.shift().resolve();
  });
  let expected = 0;
  return {
    ready: new Promise((r) => socket.once("connect", r)),
    send(bytes, n) {
      expected += n;
      const at = expected;
      socket.write(bytes);
      return new Promise((resolve) => waiters.push({ at, resolve }));
    },
    errors: () => errors,
    close: () => socket.destroy(),
  };
}

function resp(args) {
  let s = `*${args.length}\r\n`;
  for (const a of args) s += `$${Buffer.byteLength(a)}\r\n${a}\r\n`;
  return s;
}

async function clusterOwners() {
  // CLUSTER SLOTS through a throwaway raw connection is awkward to parse; ask with redis-cli-like ioredis instead.
  const { Redis } = await import("ioredis");
  const c = new Redis({ host: o.addrs[0].split(":")[0], port: Number(o.addrs[0].split(":")[1]) });
  const slots = await c.cluster("SLOTS");
  c.disconnect();
  const owner = new Array(16384);
  for (const [from, to, [host, port]] of slots) for (let s = from; s <= to; s++) owner[s] = `${host}:${port}`;
  return owner;
}

const scheme = new KeyScheme("schematic:", o.version);
const { companies } = generateFixture({ companies: o.count, users: 0, flags: o.flags, seed: o.seed });
const changes = companies.map((c) => {
  const body = JSON.stringify(parseCompany({ ...c, environment_id: o.tag }, "engine"));
  const idValue = JSON.stringify(c.id);
  const sets = [[scheme.companyId(c.id), body]];
  for (const [name, value] of Object.entries(c.keys)) {
    for (const k of scheme.companyLookups(name, value)) sets.push([k, idValue]);
  }
  return sets;
});
const commands = changes.reduce((n, s) => n + s.length, 0);
const owner = o.cluster ? await clusterOwners() : null;
const nodes = new Map(o.addrs.map((a) => [a, node(a)]));
await Promise.all([...nodes.values()].map((n) => n.ready));

/** Writes one chunk of changes: one pipelined write per node, resolved when all its replies are in. */
function writeChunk(chunk) {
  const perNode = new Map();
  for (const sets of chunk) {
    for (const [k, v] of sets) {
      const addr = owner ? owner[keySlot(k)] : o.addrs[0];
      let g = perNode.get(addr);
      if (!g) {
        g = { text: "", n: 0 };
        perNode.set(addr, g);
      }
      g.text += resp(["SET", k, v]);
      g.n++;
    }
  }
  return Promise.all([...perNode].map(([addr, g]) => nodes.get(addr).send(Buffer.from(g.text), g.n)));
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
const errors = [...nodes.values()].map((n) => n.errors()).join("");
for (const n of nodes.values()) n.close();
if (errors) {
  process.stderr.write(`ceiling-set: Redis errors: ${errors}\n`);
  process.exit(1);
}
process.stdout.write(
  `${JSON.stringify({ start_ns: String(start), end_ns: String(end), changes: changes.length, commands, cpu_s: (cpu.user + cpu.system) / 1e6 })}\n`,
);
