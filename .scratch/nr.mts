import { createCluster } from "redis";
import { startCluster } from "/work/main/test/helpers/cluster.ts";
const c = await startCluster();
const rc = createCluster({ rootNodes: c.seeds.split(",").map((a) => ({ url: `redis://${a}` })) });
rc.on("error", (e) => console.log("err", e.message));
await rc.connect();
for (let i = 0; i < 100; i++) await rc.set(`k${i}`, "v");
const m = (await c.masters())[0]!;
console.log("killing", m.addr);
await c.killMaster(m.addr);
console.log("promoted");
const t = Date.now();
const timeout = (ms: number) => new Promise((_, rej) => setTimeout(() => rej(new Error("timeout")), ms));
for (let round = 0; round < 5; round++) {
  try {
    await Promise.race([Promise.all(Array.from({ length: 100 }, (_, i) => rc.get(`k${i}`))), timeout(5000)]);
    console.log("gets ok after", Date.now() - t);
    break;
  } catch (e) { console.log("round", round, (e as Error).message, Date.now() - t); }
}
await rc.disconnect().catch(() => {});
await c.stop();
process.exit(0);
