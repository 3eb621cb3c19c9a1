import { startTlsRedis } from "../test/helpers/tls.ts";
import { runUntilExit } from "../test/helpers/topology.ts";
const s = await startTlsRedis();
const tlsEnv = (over: Record<string, string> = {}) => ({ SCHEMATIC_API_KEY: "k", SCHEMATIC_API_URL: "http://127.0.0.1:9", REDIS_MAX_RETRIES: "1", REDIS_DIAL_TIMEOUT: "2s", REDIS_ADDR: `127.0.0.1:${s.port}`, REDIS_TLS: "true", REDIS_TLS_CA_FILE: s.certs.caFile, REDIS_TLS_CERT_FILE: s.certs.clientCertFile, REDIS_TLS_KEY_FILE: s.certs.clientKeyFile, REDIS_TLS_SERVER_NAME: "localhost", REDIS_USERNAME: s.user, REDIS_PASSWORD: s.userPassword, ...over });
const noCert = Object.fromEntries(Object.entries(tlsEnv()).filter(([k]) => k !== "REDIS_TLS_CERT_FILE" && k !== "REDIS_TLS_KEY_FILE"));
for (const env of [tlsEnv({ REDIS_PASSWORD: "wrong" }), tlsEnv({ REDIS_TLS_CA_FILE: s.certs.otherCaFile }), tlsEnv({ REDIS_TLS_SERVER_NAME: "redis.example.com" }), noCert, tlsEnv({ REDIS_TLS_CERT_FILE: s.certs.otherCaFile.replace("other-ca.crt", "other-ca.crt"), REDIS_TLS_KEY_FILE: s.certs.dir + "/other-ca.key" }), { ...tlsEnv(), REDIS_TLS: "false", REDIS_TLS_CA_FILE: "", REDIS_TLS_CERT_FILE: "", REDIS_TLS_KEY_FILE: "", REDIS_TLS_SERVER_NAME: "" }]) {
  const t = Date.now();
  const r = await runUntilExit(env);
  console.log(Date.now() - t, r.code, r.stderr);
}
await s.stop(); process.exit(0);
