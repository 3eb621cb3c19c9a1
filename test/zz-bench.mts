import { WebSocket } from "ws";
import { spawn } from "node:child_process";
import { generateFixture } from "../src/emulator/index.js";
const N = Number(process.env.N ?? 100000);
const child = spawn(process.execPath, [...(process.env.PROF ? ["--cpu-prof", "--cpu-prof-dir=/tmp/prof"] : []), "--import", "tsx", "src/cli/emulator.ts", "--port", "0"], { stdio: ["ignore", "pipe", "inherit"] });
const url: string = await new Promise((r) => child.stdout!.once("data", (d) => r(/http:\/\/\S+/.exec(d.toString())![0])));
const src = generateFixture({ companies: N, users: 0, flags: 0, seed: 3 }).companies;
const CH = 10_000;
const bodies: string[] = [];
for (let i = 0; i < N; i += CH) bodies.push(JSON.stringify({ changes: src.slice(i, i + CH).map((c) => ({ method: "PUT", path: `/companies/${c.id}`, body: c })) }));
const subs = await Promise.all([0, 1].map(() => new Promise<{ ws: WebSocket; count: () => number }>((resolve) => {
  const ws = new WebSocket(url.replace("http", "ws") + "/datastream", { headers: { "X-Schematic-Api-Key": "k" }, perMessageDeflate: false });
  let n = 0;
  ws.on("message", () => { n++; });
  ws.on("open", () => { ws.send(JSON.stringify({ data: { action: "start", entity_type: "rulesengine.Companies" } })); setTimeout(() => resolve({ ws, count: () => n }), 100); });
})));
const t0 = performance.now();
for (const body of bodies) {
  const res = await fetch(`${url}/_emulator/bulk`, { method: "POST", body });
  if (res.status !== 200) throw new Error(await res.text());
  await res.json();
}
const t1 = performance.now();
while (subs.some((s) => s.count() < N + 1)) await new Promise((r) => setTimeout(r, 20));
const t2 = performance.now();
console.log(`bulk accepted ${N} in ${((t1 - t0) / 1000).toFixed(2)} s; delivered to 2 subscribers after ${((t2 - t0) / 1000).toFixed(2)} s`);
for (const s of subs) s.ws.terminate();
child.kill("SIGTERM");
await new Promise((r) => child.on("exit", r));
