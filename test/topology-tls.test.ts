/**
 * TLS and ACL, end to end with real processes: a redis-server listening only on a TLS port, requiring a client
 * certificate from a CA the test makes with openssl, with an ACL user limited to the replicator's keys and no
 * dangerous commands (the README's recommendation); the emulator (examples/fixture.json); the
 * replicator with REDIS_TLS, REDIS_TLS_CA_FILE, REDIS_TLS_CERT_FILE, REDIS_TLS_KEY_FILE, REDIS_TLS_SERVER_NAME,
 * REDIS_USERNAME and REDIS_PASSWORD; the official TypeScript SDK over TLS too.
 *
 * - The keyspace equals the fixture and the SDK table of test/e2e-sdk.test.ts passes unchanged.
 * - The README's form (`rediss://user@host` URL, REDIS_PASSWORD_FILE) works as well.
 * - Wrong password, wrong CA, wrong server name, no client certificate, a client certificate the server does not
 *   trust, plain text to the TLS port: exit 1 with one line naming the cause.
 */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import type { Redis } from "ioredis";
import { createClient } from "redis";
import { loadFixtureFile, type RunningEmulator, startEmulator } from "../src/emulator/index.js";
import type { Fixture } from "../src/model/wire.js";
import { DEFAULT_CACHE_VERSION, type SdkClient, startDirectSdk } from "./helpers/e2e.js";
import { waitFor } from "./helpers/redis.js";
import {
  assertWaitsForRedis,
  type ReplicatorProcess,
  runToExit,
  startReplicator,
  testEnv,
} from "./helpers/replicator.js";
import { haveOpenssl, startTlsRedis, type TlsRedisServer } from "./helpers/tls.js";
import { assertSdkTable, type SdkOnRedis, startSdkOn, waitEqual } from "./helpers/topology.js";

const FIXTURE_FILE = fileURLToPath(new URL("../examples/fixture.json", import.meta.url));

describe("TLS with a private CA, client certificates and an ACL user", {
  skip: haveOpenssl ? false : "openssl not installed",
}, () => {
  const fixture: Fixture = loadFixtureFile(FIXTURE_FILE);
  let server: TlsRedisServer;
  let db: Redis;
  let emu: RunningEmulator;
  let rep: ReplicatorProcess;
  let second: ReplicatorProcess | undefined;
  let sdkR: SdkOnRedis | undefined;
  let direct: SdkClient | undefined;
  const logs = () => rep?.logs ?? [];
  /** The TLS settings, as files. */
  const tlsEnv = (over: Record<string, string> = {}) => ({
    REDIS_ADDR: `127.0.0.1:${server.port}`,
    REDIS_TLS: "true",
    REDIS_TLS_CA_FILE: server.certs.caFile,
    REDIS_TLS_CERT_FILE: server.certs.clientCertFile,
    REDIS_TLS_KEY_FILE: server.certs.clientKeyFile,
    REDIS_TLS_SERVER_NAME: "localhost",
    REDIS_USERNAME: server.user,
    REDIS_PASSWORD: server.userPassword,
    ...over,
  });

  before(async () => {
    [server, emu] = await Promise.all([startTlsRedis(), startEmulator({ fixture })]);
    db = server.client();
    rep = await startReplicator(testEnv({ SCHEMATIC_API_URL: emu.url, ...tlsEnv() }));
    await rep.waitReady();
  });

  after(async () => {
    await sdkR?.close();
    await direct?.close();
    await second?.stop();
    await rep?.stop();
    await emu?.close();
    await server?.stop();
  });

  test("the replicator loads the fixture over TLS as the ACL user; the SDK table passes over TLS", {
    timeout: 60_000,
  }, async () => {
    await waitEqual(db, emu.url, { logs });
    const ready = await rep.ready();
    assert.equal(ready.status, 200);
    assert.equal(ready.body.role, "writer");
    // The server has no plain-text port and requires a client certificate: every connection is TLS with one. The
    // replicator's connection is there, authenticated as the ACL user.
    const clients = String(await server.adminClient().call("CLIENT", "LIST"));
    assert.match(clients, new RegExp(`name=schematic-replicator:\\S+-${rep.process.pid} .*user=${server.user}\\b`));

    const redis = createClient({
      socket: {
        host: "127.0.0.1",
        port: server.port,
        tls: true,
        ca: server.certs.ca,
        cert: server.certs.clientCert,
        key: server.certs.clientKey,
        servername: "localhost",
      },
      username: server.user,
      password: server.userPassword,
    });
    [sdkR, direct] = await Promise.all([
      startSdkOn(redis, `${rep.url}/ready`, DEFAULT_CACHE_VERSION),
      startDirectSdk(emu.url, "legacy-export"),
    ]);
    await assertSdkTable(sdkR, direct, fixture);
  });

  test("the README's form works too: a rediss:// URL naming the user, the password from a file", {
    timeout: 60_000,
  }, async () => {
    const passwordFile = join(server.certs.dir, "redis-password");
    writeFileSync(passwordFile, `${server.userPassword}\n`);
    second = await startReplicator(
      testEnv({
        SCHEMATIC_API_URL: emu.url,
        REDIS_URL: `rediss://${server.user}@localhost:${server.port}`,
        REDIS_PASSWORD_FILE: passwordFile,
        REDIS_TLS_CA_FILE: server.certs.caFile,
        REDIS_TLS_CERT_FILE: server.certs.clientCertFile,
        REDIS_TLS_KEY_FILE: server.certs.clientKeyFile,
        REDIS_TLS_SERVER_NAME: "localhost",
      }),
    );
    // It connects and stands by (the first replicator holds the lease); its /ready tells the shared truth.
    await second.waitReady();
    const ready = await second.ready();
    assert.equal(ready.body.role, "standby");
    assert.equal(ready.body.ready, true);
  });

  test("bad settings: exit 1 with one line naming the cause, or a wait saying what is wrong", {
    timeout: 60_000,
  }, async () => {
    const base = {
      SCHEMATIC_API_KEY: "k",
      SCHEMATIC_API_URL: emu.url,
      LOG_FORMAT: "json",
      REDIS_MAX_RETRIES: "1",
      REDIS_DIAL_TIMEOUT: "2s",
    };
    const cases: [string, Record<string, string>, RegExp][] = [
      [
        "wrong password",
        tlsEnv({ REDIS_PASSWORD: "wrong" }),
        new RegExp(
          `^schematic-replicator: Redis rejected the user name or password \\(WRONGPASS .*\\) at 127\\.0\\.0\\.1:${server.port}$`,
        ),
      ],
      [
        "wrong CA",
        tlsEnv({ REDIS_TLS_CA_FILE: server.certs.otherCaFile }),
        new RegExp(
          `^schematic-replicator: TLS handshake with Redis at 127\\.0\\.0\\.1:${server.port} failed: .*certificate`,
        ),
      ],
      [
        "a client certificate from another CA",
        tlsEnv({ REDIS_TLS_CERT_FILE: server.certs.otherCaFile, REDIS_TLS_KEY_FILE: server.certs.otherCaKeyFile }),
        new RegExp(
          `^schematic-replicator: TLS handshake with Redis at 127\\.0\\.0\\.1:${server.port} failed: .*unknown ca`,
        ),
      ],
      [
        "wrong server name",
        tlsEnv({ REDIS_TLS_SERVER_NAME: "redis.example.com" }),
        /^schematic-replicator: TLS handshake with Redis at .* failed: .*redis\.example\.com/,
      ],
      [
        "no client certificate",
        Object.fromEntries(
          Object.entries(tlsEnv()).filter(([k]) => k !== "REDIS_TLS_CERT_FILE" && k !== "REDIS_TLS_KEY_FILE"),
        ),
        new RegExp(
          `^schematic-replicator: TLS handshake with Redis at 127\\.0\\.0\\.1:${server.port} failed: .*certificate required .*REDIS_TLS_CERT_FILE`,
        ),
      ],
    ];
    const results = await Promise.all(cases.map(([, env]) => runToExit({ ...base, ...env })));
    cases.forEach(([name, , pattern], i) => {
      const r = results[i]!;
      assert.equal(r.code, 1, `${name}: exit code\n${r.lines.join("\n")}`);
      assert.equal(r.stderr.length, 1, `${name}: one line\n${r.stderr.join("\n")}`);
      assert.match(r.stderr[0]!, pattern, name);
    });
    // The password never appears in what the replicator printed.
    for (const r of results) assert.ok(!r.lines.join("\n").includes(server.userPassword));
    // Plain text to the TLS port: reset connections, which could be a passing network fault, so it waits — and
    // says what is most likely wrong.
    await assertWaitsForRedis(
      {
        ...base,
        LOG_FORMAT: "json",
        ...Object.fromEntries(Object.entries(tlsEnv()).filter(([k]) => !k.startsWith("REDIS_TLS"))),
      },
      /^Redis at .* is unreachable: .*if this Redis expects TLS, set REDIS_TLS=true\)$/,
    );
    await waitFor(async () => (await rep.ready()).status === 200, { what: "the writer to be unaffected" });
  });
});
