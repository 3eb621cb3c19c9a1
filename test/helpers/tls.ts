/**
 * TLS for the topology tests: a private CA made with openssl (plus a second, unrelated CA for "wrong CA" cases), a
 * server certificate for `localhost` / 127.0.0.1 and a client certificate, and a redis-server that listens only on a
 * TLS port, requires client certificates and has an ACL user limited to what the replicator needs
 * ({@link REPLICATOR_ACL}) besides a password-protected default user.
 * Every process is SIGKILLed when the test process exits (see procs.ts); `stop()` removes the directory.
 */
import type { ChildProcess } from "node:child_process";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis, type RedisOptions } from "ioredis";
import { spawnTracked, stopProcess, waitForServer } from "./procs.js";
import { freePort } from "./redis.js";

/** ACL rules for the replicator's user, after `user NAME on >PASSWORD`. */
export const REPLICATOR_ACL = ["~schematic:*", "resetchannels", "+@all", "-@dangerous", "+info", "+role"];

export const haveOpenssl = spawnSync("openssl", ["version"]).status === 0;

export interface Certificates {
  dir: string;
  caFile: string;
  /** A CA that signed nothing here (its certificate and key also serve as a client certificate nobody trusts). */
  otherCaFile: string;
  otherCaKeyFile: string;
  serverCertFile: string;
  serverKeyFile: string;
  clientCertFile: string;
  clientKeyFile: string;
  ca: string;
  clientCert: string;
  clientKey: string;
}

/** Makes the certificates in `dir` (EC P-256, valid two days). */
export function makeCertificates(dir: string): Certificates {
  const run = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "ignore" });
  const key = (name: string) => [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-keyout",
    name,
  ];
  for (const ca of ["ca", "other-ca"]) {
    run("req", "-x509", ...key(`${ca}.key`), "-out", `${ca}.crt`, "-days", "2", "-subj", `/CN=Test ${ca}`);
  }
  writeFileSync(join(dir, "server.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
  writeFileSync(join(dir, "client.ext"), "extendedKeyUsage=clientAuth\n");
  for (const [name, cn] of [
    ["server", "localhost"],
    ["client", "schematic-replicator"],
  ] as const) {
    run("req", ...key(`${name}.key`), "-out", `${name}.csr`, "-subj", `/CN=${cn}`);
    run(
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      "ca.crt",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-out",
      `${name}.crt`,
      "-days",
      "2",
      "-extfile",
      `${name}.ext`,
    );
  }
  const f = (name: string) => join(dir, name);
  return {
    dir,
    caFile: f("ca.crt"),
    otherCaFile: f("other-ca.crt"),
    otherCaKeyFile: f("other-ca.key"),
    serverCertFile: f("server.crt"),
    serverKeyFile: f("server.key"),
    clientCertFile: f("client.crt"),
    clientKeyFile: f("client.key"),
    ca: readFileSync(f("ca.crt"), "utf8"),
    clientCert: readFileSync(f("client.crt"), "utf8"),
    clientKey: readFileSync(f("client.key"), "utf8"),
  };
}

export interface TlsRedisServer {
  /** The TLS port (there is no plain-text port). */
  port: number;
  certs: Certificates;
  user: string;
  userPassword: string;
  adminPassword: string;
  process: ChildProcess;
  /** ioredis options for a TLS connection as `user` (override freely). */
  tlsOptions(extra?: RedisOptions): RedisOptions;
  /** A fresh ioredis client over TLS as the ACL user (closed by stop()). */
  client(): Redis;
  /** A fresh ioredis client over TLS as the default user, allowed everything (closed by stop()). */
  adminClient(): Redis;
  stop(): Promise<void>;
}

export interface StartTlsRedisOptions {
  user?: string;
  userPassword?: string;
}

/**
 * redis-server with `--port 0` (no plain port), a TLS port, `--tls-auth-clients yes` (a client certificate signed by
 * the CA is required), a default user with a password and an ACL user `user` with its own password.
 */
export async function startTlsRedis(opts: StartTlsRedisOptions = {}): Promise<TlsRedisServer> {
  const dir = mkdtempSync(join(tmpdir(), "redis-tls-"));
  const user = opts.user ?? "replicator";
  const userPassword = opts.userPassword ?? "replicator-secret";
  const adminPassword = "admin-secret";
  const clients: Redis[] = [];
  let child: ChildProcess | undefined;
  try {
    const certs = makeCertificates(dir);
    const port = await freePort();
    child = spawnTracked("redis-server", [
      "--port",
      "0",
      "--tls-port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--tls-cert-file",
      certs.serverCertFile,
      "--tls-key-file",
      certs.serverKeyFile,
      "--tls-ca-cert-file",
      certs.caFile,
      "--tls-auth-clients",
      "yes",
      "--save",
      "",
      "--appendonly",
      "no",
      "--dir",
      dir,
      "--requirepass",
      adminPassword,
      // The least the replicator needs (the README recommends it): its own keys, no dangerous commands but INFO
      // (ioredis' ready check) and ROLE (replica acknowledgements on Sentinel and Cluster).
      "--user",
      user,
      "on",
      `>${userPassword}`,
      ...REPLICATOR_ACL,
    ]);
    const tlsOptions = (extra: RedisOptions = {}): RedisOptions => ({
      host: "127.0.0.1",
      port,
      username: user,
      password: userPassword,
      tls: { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey, servername: "localhost" },
      ...extra,
    });
    await waitForServer(port, tlsOptions(), `TLS redis-server on port ${port}`);
    const proc = child;
    return {
      port,
      certs,
      user,
      userPassword,
      adminPassword,
      process: proc,
      tlsOptions,
      client() {
        const c = new Redis({ ...tlsOptions(), maxRetriesPerRequest: 3 });
        c.on("error", () => {});
        clients.push(c);
        return c;
      },
      adminClient() {
        const c = new Redis({
          ...tlsOptions({ username: "default", password: adminPassword }),
          maxRetriesPerRequest: 3,
        });
        c.on("error", () => {});
        clients.push(c);
        return c;
      },
      async stop() {
        for (const c of clients) c.disconnect();
        await stopProcess(proc, "SIGKILL");
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    if (child) await stopProcess(child, "SIGKILL");
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
