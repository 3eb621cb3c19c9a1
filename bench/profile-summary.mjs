#!/usr/bin/env node
// Summarises a V8 .cpuprofile (from `node --cpu-prof`, e.g. `npm run bench -- --profile DIR`): self time by
// function and by module, and total (inclusive) time of the heaviest frames, as plain text.
// Usage: node bench/profile-summary.mjs FILE.cpuprofile [--top N] [--from-ms A --to-ms B]
import { readFileSync } from "node:fs";

const args = process.argv.slice(2);
const file = args.find((a) => !a.startsWith("--") && !/^\d+$/.test(a));
const opt = (name, def) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : def;
};
if (!file) {
  process.stderr.write("usage: node bench/profile-summary.mjs FILE.cpuprofile [--top N] [--from-ms A --to-ms B]\n");
  process.exit(2);
}
const top = opt("--top", 30);
const fromMs = opt("--from-ms", 0);
const toMs = opt("--to-ms", Number.POSITIVE_INFINITY);

const profile = JSON.parse(readFileSync(file, "utf8"));
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

// Self time per node from the samples (optionally within a time window).
const self = new Map();
let t = profile.startTime;
let total = 0;
for (let i = 0; i < profile.samples.length; i++) {
  const dt = profile.timeDeltas[i] ?? 0;
  t += dt;
  const ms = (t - profile.startTime) / 1000;
  if (ms < fromMs || ms > toMs) continue;
  self.set(profile.samples[i], (self.get(profile.samples[i]) ?? 0) + dt);
  total += dt;
}

function moduleOf(url) {
  if (!url) return "(native/vm)";
  const nm = url.lastIndexOf("node_modules/");
  if (nm >= 0) {
    const rest = url.slice(nm + 13).split("/");
    return rest[0].startsWith("@") ? `${rest[0]}/${rest[1]}` : rest[0];
  }
  if (url.startsWith("node:")) return url;
  const dist = url.indexOf("/dist/");
  if (dist >= 0) return url.slice(dist + 1);
  return url.replace(/^file:\/\//, "");
}

const label = (n) => {
  const f = n.callFrame;
  const name = f.functionName || "(anonymous)";
  return `${name} ${moduleOf(f.url)}${f.url ? `:${f.lineNumber + 1}` : ""}`;
};

const fnSelf = new Map();
const modSelf = new Map();
const incl = new Map();
for (const [id, us] of self) {
  const n = byId.get(id);
  const key = label(n);
  fnSelf.set(key, (fnSelf.get(key) ?? 0) + us);
  const mod = n.callFrame.url ? moduleOf(n.callFrame.url) : n.callFrame.functionName || "(native)";
  modSelf.set(mod, (modSelf.get(mod) ?? 0) + us);
  // Inclusive: charge every distinct frame label on the stack once.
  const seen = new Set();
  for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
    const k = label(byId.get(cur));
    if (seen.has(k)) continue;
    seen.add(k);
    incl.set(k, (incl.get(k) ?? 0) + us);
  }
}

const pct = (us) => `${((100 * us) / total).toFixed(1).padStart(5)}%`;
const ms = (us) => `${(us / 1000).toFixed(0).padStart(7)} ms`;
const print = (title, map, n) => {
  process.stdout.write(`\n${title}\n`);
  for (const [k, us] of [...map].sort((a, b) => b[1] - a[1]).slice(0, n))
    process.stdout.write(`${ms(us)} ${pct(us)}  ${k}\n`);
};
process.stdout.write(`${file}: ${(total / 1000).toFixed(0)} ms sampled\n`);
print("self time by module", modSelf, 20);
print("self time by function", fnSelf, top);
print("total (inclusive) time by function", incl, top);
