import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { type AddressInfo, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, it } from "node:test";
import type { Redis } from "ioredis";
import type { RedisConfig, RedisTopology } from "../src/config/types.js";
import {
  createRedis,
  describeRedis,
  isCluster,
  masters,
  type RedisClient,
  RedisStartupError,
  waitForRedis,
} from "../src/store/connect.js";
import { parseRedisVersion, serverVersions, supportedVersion, versionProblem } from "../src/store/server-version.js";
import { failSocketTwice, freePort, type RedisServer, startRedis, waitFor } from "./helpers/redis.js";
import { runToExit } from "./helpers/replicator.js";
import { parseCommand } from "./helpers/resp.js";

function config(topology: RedisTopology, extra: Partial<RedisConfig> = {}): RedisConfig {
  return {
    topology,
    maxRetries: 1,
    dialTimeoutMs: 2000,
    readTimeoutMs: 2000,
    writeTimeoutMs: 2000,
    maxRedirects: 3,
    routeByLatency: false,
    keyPrefix: "schematic:",
    ...extra,
  };
}

const single = (port: number, db = 0): RedisTopology => ({ kind: "single", host: "127.0.0.1", port, db });

const clients: RedisClient[] = [];
function open(cfg: RedisConfig): RedisClient {
  const c = createRedis(cfg);
  clients.push(c);
  return c;
}

async function startupError(cfg: RedisConfig): Promise<RedisStartupError> {
  const c = open(cfg);
  try {
    await waitForRedis(c, cfg);
  } catch (err) {
    assert.ok(err instanceof RedisStartupError, String(err));
    assert.ok(!err.message.includes("\n"), `one line: ${err.message}`);
    return err;
  }
  assert.fail("waitForRedis should have failed");
}

afterEach(() => {
  for (const c of clients.splice(0)) c.disconnect();
});

describe("createRedis / waitForRedis: single node", () => {
  let server: RedisServer;
  before(async () => {
    server = await startRedis();
  });
  after(async () => {
    await server.stop();
  });

  it("connects to the configured database", async () => {
    const cfg = config(single(server.port, 3));
    const c = open(cfg);
    await waitForRedis(c, cfg);
    assert.equal(isCluster(c), false);
    assert.deepEqual(masters(c), [c]);
    await c.set("in-db-3", "yes");
    const check = server.client();
    await check.select(3);
    assert.equal(await check.get("in-db-3"), "yes");
    assert.equal(describeRedis(cfg), `127.0.0.1:${server.port}`);
  });

  it("a second error on its socket (a TLS alert, then a reset) is caught, and the client connects again", async () => {
    const cfg = config(single(server.port));
    const c = open(cfg) as Redis;
    await waitForRedis(c, cfg);
    const before = c.stream;
    failSocketTwice(c.stream);
    await waitFor(async () => c.stream !== before && (await c.ping()) === "PONG", { what: "a new connection" });
  });

  it("names an unreachable server and the number of attempts", async () => {
    const port = await freePort();
    const err = await startupError(config(single(port), { maxRetries: 2 }));
    assert.equal(err.kind, "unreachable");
    assert.match(
      err.message,
      new RegExp(`^Redis at 127\\.0\\.0\\.1:${port} is unreachable: .*ECONNREFUSED.*\\(after 2 attempts\\)$`),
    );
  });

  it("untilReachable: waits for a server that comes up later, reporting each failed attempt", async () => {
    const port = await freePort();
    const cfg = config(single(port), { maxRetries: 1 });
    const c = open(cfg);
    const failures: { attempt: number; message: string }[] = [];
    const waiting = waitForRedis(c, cfg, { untilReachable: true, onFailure: (f) => failures.push(f) });
    while (failures.length < 3) await new Promise((r) => setTimeout(r, 50));
    assert.match(failures[0]!.message, new RegExp(`^Redis at 127\\.0\\.0\\.1:${port} is unreachable: .*ECONNREFUSED`));
    const late = await startRedis({ port });
    try {
      assert.equal(await waiting, true);
      assert.equal(await c.ping(), "PONG");
    } finally {
      await late.stop();
    }
  });

  it("untilReachable: an aborted wait resolves false", async () => {
    const cfg = config(single(await freePort()));
    const abort = new AbortController();
    const waiting = waitForRedis(open(cfg), cfg, { untilReachable: true, signal: abort.signal });
    setTimeout(() => abort.abort(), 500);
    assert.equal(await waiting, false);
  });
});

describe("createRedis / waitForRedis: authentication", () => {
  let server: RedisServer;
  before(async () => {
    server = await startRedis({ args: ["--requirepass", "pw"] });
    await server.client().call("ACL", "SETUSER", "alice", "on", ">alice-secret", "~*", "+@all");
  });
  after(async () => {
    await server.stop();
  });

  it("works with the right password and with an ACL user", async () => {
    for (const cfg of [
      config(single(server.port), { password: "pw" }),
      config(single(server.port), { username: "alice", password: "alice-secret" }),
    ]) {
      const c = open(cfg);
      await waitForRedis(c, cfg);
      assert.equal(await c.ping(), "PONG");
    }
  });

  it("says the password was rejected, after maxRetries attempts (also with untilReachable)", async () => {
    const cfg = config(single(server.port), { password: "wrong", maxRetries: 3 });
    let attempts = 0;
    const err = await waitForRedis(open(cfg), cfg, { untilReachable: true, onFailure: () => attempts++ }).then(
      () => assert.fail("waitForRedis should have failed"),
      (e: unknown) => e as RedisStartupError,
    );
    assert.equal(err.kind, "auth");
    assert.equal(attempts, 3);
    assert.match(
      err.message,
      /^Redis rejected the password \(WRONGPASS .*\) at 127\.0\.0\.1:\d+ \(after 3 attempts\)$/,
    );
  });

  it("says a password is required", async () => {
    const err = await startupError(config(single(server.port)));
    assert.equal(err.kind, "auth");
    assert.match(err.message, /^Redis requires a password \(NOAUTH /);
  });

  it("names the user when an ACL user is configured", async () => {
    const err = await startupError(config(single(server.port), { username: "alice", password: "nope" }));
    assert.match(err.message, /^Redis rejected the user name or password \(WRONGPASS /);
  });
});

const haveOpenssl = spawnSync("openssl", ["version"]).status === 0;

describe("createRedis / waitForRedis: TLS", { skip: haveOpenssl ? false : "openssl not installed" }, () => {
  let server: RedisServer;
  let tlsPort: number;
  let dir: string;
  let ca: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "redis-tls-"));
    const run = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "ignore" });
    run(
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-keyout",
      "ca.key",
      "-out",
      "ca.crt",
      "-days",
      "2",
      "-subj",
      "/CN=Test CA",
    );
    run(
      "req",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-keyout",
      "server.key",
      "-out",
      "server.csr",
      "-subj",
      "/CN=localhost",
    );
    writeFileSync(join(dir, "ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
    run(
      "x509",
      "-req",
      "-in",
      "server.csr",
      "-CA",
      "ca.crt",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-out",
      "server.crt",
      "-days",
      "2",
      "-extfile",
      "ext.cnf",
    );
    ca = readFileSync(join(dir, "ca.crt"), "utf8");
    tlsPort = await freePort();
    server = await startRedis({
      args: [
        "--tls-port",
        String(tlsPort),
        "--tls-cert-file",
        join(dir, "server.crt"),
        "--tls-key-file",
        join(dir, "server.key"),
        "--tls-ca-cert-file",
        join(dir, "ca.crt"),
        "--tls-auth-clients",
        "no",
      ],
    });
  });
  after(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("connects with the CA and server name", async () => {
    const cfg = config(single(tlsPort), { tls: { ca, serverName: "localhost" } });
    const c = open(cfg);
    await waitForRedis(c, cfg);
    assert.equal(await c.ping(), "PONG");
  });

  it("says the TLS handshake failed when the certificate cannot be verified", async () => {
    const err = await startupError(config(single(tlsPort), { tls: {} }));
    assert.equal(err.kind, "tls");
    assert.match(err.message, /^TLS handshake with Redis at 127\.0\.0\.1:\d+ failed: .*certificate/);
  });

  it("hints at TLS when a plain connection is reset by a TLS port", async () => {
    const err = await startupError(config(single(tlsPort)));
    assert.equal(err.kind, "unreachable");
    assert.match(err.message, /ECONNRESET \(after 1 attempt; if this Redis expects TLS, set REDIS_TLS=true\)$/);
  });

  it("says the TLS handshake failed on a server name mismatch", async () => {
    const err = await startupError(config(single(tlsPort), { tls: { ca, serverName: "other.example" } }));
    assert.equal(err.kind, "tls");
    assert.match(err.message, /^TLS handshake with Redis at .* failed: .*other\.example/);
  });
});

describe("the Redis version is checked at start-up (KEEPTTL, used by the fence, needs 6.0)", () => {
  it("reads redis_version from INFO and accepts 6.0 and newer only", () => {
    assert.deepEqual(parseRedisVersion("# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:0\r\n"), [7, 0, 15]);
    assert.deepEqual(parseRedisVersion("redis_version:6.2\r\n"), [6, 2, 0]);
    assert.equal(parseRedisVersion("# Server\r\nvalkey_release_stage:ga\r\n"), undefined);
    const supported = (v: string) => supportedVersion(v.split(".").map(Number));
    for (const v of ["6.0.0", "6.0.16", "6.2.14", "7.0.15", "7.4.1", "10.0.0"]) assert.equal(supported(v), true, v);
    for (const v of ["5.0.14", "4.0.14", "3.2.12", "5.9.99", "2.8.24"]) assert.equal(supported(v), false, v);
  });

  it("refuses the first server that is too old, in one line naming it", () => {
    const problem = versionProblem([
      { server: "10.0.0.1:7000", version: [7, 2, 4] },
      { server: "10.0.0.2:7000", version: [5, 0, 14] },
      { server: "10.0.0.3:7000", version: undefined },
    ]);
    assert.equal(
      problem,
      "Redis at 10.0.0.2:7000 is version 5.0.14; schematic-replicator needs Redis 6.0 or newer (the writer lease fence uses SET … KEEPTTL)",
    );
    assert.equal(
      versionProblem([
        { server: "a:1", version: [6, 0, 0] },
        { server: "b:1", version: undefined },
      ]),
      undefined,
    );
  });

  it("passes against the real server, whose version it reads", async () => {
    const server = await startRedis();
    try {
      const cfg = config(single(server.port));
      const c = open(cfg);
      await waitForRedis(c, cfg);
      const [only] = await serverVersions(masters(c));
      const installed = /v=(\d+)\.(\d+)\.(\d+)/.exec(execFileSync("redis-server", ["--version"], { encoding: "utf8" }));
      assert.ok(installed);
      assert.deepEqual(only?.version, installed.slice(1).map(Number));
      assert.equal(only?.server, `127.0.0.1:${server.port}`);
    } finally {
      await server.stop();
    }
  });

  it("waitForRedis refuses a server that says it is 5.0 (a stand-in speaking RESP), without retrying", async () => {
    const old = await startFakeRedis("5.0.14");
    try {
      const err = await startupError(config(single(old.port), { maxRetries: 3 }));
      assert.equal(err.kind, "rejected");
      assert.match(
        err.message,
        new RegExp(`^Redis at 127\\.0\\.0\\.1:${old.port} is version 5\\.0\\.14; .*6\\.0 or newer`),
      );
      assert.equal(old.infoServerCalls(), 1, "refused at once: no second attempt");

      // The service exits 1 with that line, as for any fatal Redis error at start-up.
      const out = await runToExit({
        SCHEMATIC_API_KEY: "k",
        REDIS_ADDR: `127.0.0.1:${old.port}`,
        HEALTH_PORT: String(await freePort()),
      });
      assert.equal(out.code, 1, out.lines.join("\n"));
      assert.deepEqual(out.stderr, [`schematic-replicator: ${err.message}`]);
    } finally {
      await old.close();
    }
  });
});

/**
 * A stand-in for a Redis server of another version (only 7.0 is installed): answers PING, CLIENT and INFO over RESP,
 * reporting `version`; refuses every other command.
 */
async function startFakeRedis(
  version: string,
): Promise<{ port: number; infoServerCalls(): number; close(): Promise<void> }> {
  let infoServer = 0;
  const bulk = (s: string) => `$${Buffer.byteLength(s)}\r\n${s}\r\n`;
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    let buffer = Buffer.alloc(0);
    socket.on("error", () => socket.destroy());
    socket.on("data", (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      for (;;) {
        const parsed = parseCommand(buffer);
        if (!parsed) return;
        buffer = buffer.subarray(parsed.length);
        const [name = "", arg = ""] = parsed.args.map((a) => a.toLowerCase());
        if (name === "ping") socket.write("+PONG\r\n");
        else if (name === "client") socket.write("+OK\r\n");
        else if (name === "info") {
          if (arg === "server") infoServer++;
          socket.write(
            bulk(`# Server\r\nredis_version:${version}\r\nredis_mode:standalone\r\n# Persistence\r\nloading:0\r\n`),
          );
        } else socket.write(`-ERR unknown command '${name}'\r\n`);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    infoServerCalls: () => infoServer,
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
