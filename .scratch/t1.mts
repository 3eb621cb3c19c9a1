import { startTlsRedis } from "../test/helpers/tls.ts";
import { Redis } from "ioredis";
import tls from "node:tls";
const s = await startTlsRedis();
const c = new Redis({ host: "127.0.0.1", port: s.port, username: s.user, password: s.userPassword, tls: { ca: s.certs.ca, servername: "localhost" }, lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: (t) => (t > 2 ? null : 100) });
c.on("error", (e) => console.log("error event:", e.message, (e as any).code));
c.on("close", () => console.log("close"));
try { await c.connect(); console.log("connected"); console.log(await c.ping()); } catch (e) { console.log("cmd err:", (e as Error).message); }
c.disconnect();
// raw tls
await new Promise<void>((resolve) => {
  const sock = tls.connect({ host: "127.0.0.1", port: s.port, ca: s.certs.ca, servername: "localhost" }, () => { console.log("raw secureConnect", sock.getProtocol()); sock.write("PING\r\n"); });
  sock.on("data", (d) => console.log("raw data", d.toString()));
  sock.on("error", (e) => { console.log("raw error", e.message, (e as any).code); });
  sock.on("close", () => { console.log("raw close"); resolve(); });
});
await s.stop(); process.exit(0);
