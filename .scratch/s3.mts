import { startSentinelGroup } from "../test/helpers/sentinel.ts";
import { runUntilExit } from "../test/helpers/topology.ts";
const g = await startSentinelGroup({ password: "pw", sentinelPassword: "spw", servers: 2 });
const base = { SCHEMATIC_API_KEY: "k", SCHEMATIC_API_URL: "http://127.0.0.1:9", REDIS_MAX_RETRIES: "1", REDIS_SENTINEL_ADDRS: g.sentinelAddrs, REDIS_SENTINEL_MASTER: "mymaster", REDIS_SENTINEL_PASSWORD: "spw", REDIS_PASSWORD: "pw" };
for (const extra of [{ REDIS_PASSWORD: "nope" }, { REDIS_SENTINEL_MASTER: "nosuch" }, { REDIS_SENTINEL_PASSWORD: "nope" }, { REDIS_SENTINEL_MASTER: "nosuch", REDIS_DIAL_TIMEOUT: "1s", REDIS_READ_TIMEOUT: "1s", REDIS_WRITE_TIMEOUT: "1s" }]) {
  const t = Date.now();
  const r = await runUntilExit({ ...base, ...extra });
  console.log(Date.now() - t, r.code, r.stderr);
}
await g.stop(); process.exit(0);
