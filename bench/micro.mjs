#!/usr/bin/env node
// Micro-benchmarks of the replicator's per-change CPU work on the benchmark's own data (~2 KB companies), using the
// built code in dist/. Each stage runs over 20,000 companies, five times; the best round counts (least disturbed by
// other processes). Prints µs per change. Used to cost the changes in docs/performance.md.
// Usage: node bench/micro.mjs [--redis HOST:PORT]  (with --redis, also the Redis round trips of one batch)
import { generateFixture } from "../dist/emulator/generate.js";
import { parseCompany, parseEngineEntity } from "../dist/model/entities.js";
import { LookupClaims } from "../dist/replication/claims.js";
import { entityOps, foldEntity, parseStored, storedKeys } from "../dist/replication/fold.js";
import { KeyScheme } from "../dist/store/keys.js";
import { memberText } from "../dist/util/json-span.js";

const COUNT = 20_000;
const ROUNDS = 5;
const { companies } = generateFixture({ companies: COUNT, users: 0, flags: 200, seed: 1 });
const keys = new KeyScheme("schematic:", "4b54a537");
const frames = companies.map(
  (c, i) =>
    `{"entity_type":"rulesengine.Company","message_type":"full","entity_id":${JSON.stringify(c.id)},"stream_id":"1700000000000-${i}","data":${JSON.stringify(c)}}`,
);
const stored = companies.map((c) => JSON.stringify(parseCompany(c, "engine")));
const bytes = frames.reduce((n, f) => n + f.length, 0) / COUNT;

const results = [];
function stage(name, fn) {
  let best = Number.POSITIVE_INFINITY;
  let sink = 0;
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = process.cpuUsage();
    for (let i = 0; i < COUNT; i++) sink ^= fn(i) ? 1 : 0;
    const t = process.cpuUsage(t0);
    best = Math.min(best, (t.user + t.system) / COUNT);
  }
  results.push([name, best, sink]);
}

const parsedFrames = frames.map((f) => JSON.parse(f));
const previous = stored.map((s) => parseStored("company", s));
const jobs = parsedFrames.map((m) => ({
  kind: "company",
  id: m.entity_id,
  op: "full",
  data: m.data,
  tracked: [],
  source: "stream",
}));
const folds = jobs.map((job, i) => foldEntity("company", previous[i], [job]));

stage("JSON.parse(frame)", (i) => JSON.parse(frames[i]));
stage("parseCompany(data, engine) (validate + copy)", (i) => parseCompany(parsedFrames[i].data, "engine"));
stage("parseEngineEntity(data) (validate + copy + exactness)", (i) =>
  parseEngineEntity("company", parsedFrames[i].data),
);
stage("memberText(frame, data) (received text)", (i) => memberText(frames[i], "data"));
stage("storedKeys (keys of a stored body)", (i) => storedKeys("company", stored[i]));
stage("JSON.stringify(entity)", (i) => JSON.stringify(folds[i].next).length);
stage("JSON.parse(stored body)", (i) => JSON.parse(stored[i]));
stage("parseStored (JSON.parse + validate)", (i) => parseStored("company", stored[i]));
stage("foldEntity (full: parse new)", (i) => foldEntity("company", previous[i], [jobs[i]]));
stage("entityOps (incl. JSON.stringify)", (i) => entityOps(keys, "company", jobs[i].id, previous[i], folds[i]).length);
stage("key strings (id + 2 lookups)", (i) => {
  const c = companies[i];
  return (
    keys.companyId(c.id).length +
    keys.companyLookups("id", c.keys.id).length +
    keys.companyLookups("domain", c.keys.domain).length
  );
});
stage("Buffer.byteLength(body) (utf8 encode size)", (i) => Buffer.byteLength(stored[i]));
// Lookup-key claims across lanes: every change applied at once (pruning keeps the map small, as in a steady stream).
const lookups = companies.map((c) => [
  ...keys.companyLookups("id", c.keys.id),
  ...keys.companyLookups("domain", c.keys.domain),
]);
const owners = companies.map((c) => JSON.stringify(c.id));
let order = 0;
const claims = new LookupClaims(() => order);
stage("LookupClaims.admit (2 lookups)", (i) => {
  order++;
  let admitted = 0;
  for (const key of lookups[i]) if (claims.admit(key, owners[i], order)) admitted++;
  return admitted;
});

let redisLine = "";
const redisArg = process.argv.indexOf("--redis");
if (redisArg > 0) {
  const { Redis } = await import("ioredis");
  const { StoreWriter } = await import("../dist/store/writer.js");
  const [host, port] = process.argv[redisArg + 1].split(":");
  const client = new Redis({ host, port: Number(port) });
  const writer = new StoreWriter(client, { ttlMs: 0 });
  for (const batch of [5, 50, 500]) {
    const opsFor = (from) => {
      const ops = [];
      for (let i = from; i < from + batch; i++) ops.push(...entityOps(keys, "company", jobs[i].id, null, folds[i]));
      return ops;
    };
    let best = Number.POSITIVE_INFINITY;
    let bestWall = Number.POSITIVE_INFINITY;
    for (let r = 0; r < 3; r++) {
      const t0 = process.cpuUsage();
      const w0 = performance.now();
      for (let from = 0; from + batch <= COUNT; from += batch) {
        const ids = [];
        for (let i = from; i < from + batch; i++) ids.push(keys.companyId(jobs[i].id));
        await writer.readMany(ids);
        await writer.apply(opsFor(from));
      }
      const t = process.cpuUsage(t0);
      best = Math.min(best, (t.user + t.system) / COUNT);
      bestWall = Math.min(bestWall, ((performance.now() - w0) * 1000) / COUNT);
    }
    redisLine += `  batch ${String(batch).padStart(3)}: read + write round trips, client CPU ${best.toFixed(1)} µs/change, wall ${bestWall.toFixed(1)} µs/change\n`;
  }
  client.disconnect();
}

process.stdout.write(`frames of ${Math.round(bytes)} bytes, ${COUNT} companies, best of ${ROUNDS} rounds\n`);
for (const [name, us] of results) process.stdout.write(`${us.toFixed(2).padStart(8)} µs/change  ${name}\n`);
if (redisLine) process.stdout.write(`Redis (StoreWriter, single node):\n${redisLine}`);
