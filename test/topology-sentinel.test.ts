/**
 * Redis Sentinel, end to end with real processes: a master and two replicas (password-protected) watched by three
 * sentinels (with their own password), the emulator (examples/fixture.json), the replicator on
 * REDIS_SENTINEL_ADDRS / REDIS_SENTINEL_MASTER / REDIS_SENTINEL_PASSWORD / REDIS_PASSWORD, and the official
 * TypeScript SDK (node-redis 4 has no Sentinel client: it reads the master the sentinels name).
 *
 * - The keyspace equals the fixture; the SDK table of test/e2e-sdk.test.ts passes unchanged.
 * - SENTINEL FAILOVER during a burst of changes: the writes follow the new master and nothing is lost, although the
 *   old master keeps accepting writes until the sentinels reconfigure it.
 * - SIGKILL of the master during a burst: a replica is promoted and nothing is lost; the SDK reads a later change.
 * - A batch is reported written only once a replica has it (a stopped replica holds it back; a replica gone for
 *   longer than the grace no longer does).
 * - Wrong password, wrong sentinel password, unknown master name: exit 1 with one line naming the cause.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import type { Redis } from "ioredis";
import { createClient } from "redis";
import type { RedisConfig } from "../src/config/types.js";
import { loadFixtureFile, type RunningEmulator, startEmulator } from "../src/emulator/index.js";
import type { Fixture } from "../src/model/wire.js";
import { createRedis, type RedisClient, waitForRedis } from "../src/store/connect.js";
import { NotReplicatedError, StoreWriter } from "../src/store/writer.js";
import { admin, checkSdk, DEFAULT_CACHE_VERSION, type SdkClient, startDirectSdk } from "./helpers/e2e.js";
import { churn, region } from "./helpers/faults.js";
import { command, stopProcess } from "./helpers/procs.js";
import { failSocketTwice, waitFor } from "./helpers/redis.js";
import {
  assertWaitsForRedis,
  type ReplicatorProcess,
  runToExit,
  startReplicator,
  testEnv,
} from "./helpers/replicator.js";
import { type SentinelGroup, startSentinelGroup } from "./helpers/sentinel.js";
import { assertSdkTable, burst, type SdkOnRedis, startSdkOn, waitEqual } from "./helpers/topology.js";

const FIXTURE_FILE = fileURLToPath(new URL("../examples/fixture.json", import.meta.url));
const PASSWORD = "data-secret";
const SENTINEL_PASSWORD = "sentinel-secret";

describe("Redis Sentinel: a master, two replicas, three sentinels", () => {
  const fixture: Fixture = loadFixtureFile(FIXTURE_FILE);
  let group: SentinelGroup;
  let emu: RunningEmulator;
  let rep: ReplicatorProcess;
  let sdkR: SdkOnRedis | undefined;
  let direct: SdkClient | undefined;
  const logs = () => rep?.logs ?? [];
  const master = () => group.masterClient();
  const sentinelEnv = () => ({
    REDIS_SENTINEL_ADDRS: group.sentinelAddrs,
    REDIS_SENTINEL_MASTER: group.masterName,
    REDIS_SENTINEL_PASSWORD: SENTINEL_PASSWORD,
    REDIS_PASSWORD: PASSWORD,
  });
  const sentinelConfig = (): RedisConfig => ({
    topology: {
      kind: "sentinel",
      sentinels: group.sentinels.map((s) => ({ host: "127.0.0.1", port: s.port })),
      masterName: group.masterName,
      sentinelPassword: SENTINEL_PASSWORD,
      db: 0,
    },
    password: PASSWORD,
    maxRetries: 1,
    dialTimeoutMs: 2000,
    readTimeoutMs: 3000,
    writeTimeoutMs: 3000,
    maxRedirects: 3,
    routeByLatency: false,
    keyPrefix: "schematic:",
  });
  const sdkOnMaster = async () =>
    await startSdkOn(
      createClient({ url: `redis://127.0.0.1:${await group.masterPort()}`, password: PASSWORD }),
      `${rep.url}/ready`,
      DEFAULT_CACHE_VERSION,
    );

  before(async () => {
    [group, emu] = await Promise.all([
      startSentinelGroup({ password: PASSWORD, sentinelPassword: SENTINEL_PASSWORD, servers: 3 }),
      startEmulator({ fixture }),
    ]);
    rep = await startReplicator(testEnv({ SCHEMATIC_API_URL: emu.url, ...sentinelEnv(), WRITER_LOCK_TTL: "6s" }));
    await rep.waitReady();
  });

  after(async () => {
    await sdkR?.close();
    await direct?.close();
    await rep?.stop();
    await emu?.close();
    await group?.stop();
  });

  test("the replicator loads the fixture through Sentinel; the SDK table passes", { timeout: 60_000 }, async () => {
    await waitEqual(await master(), emu.url, { logs });
    const ready = await rep.ready();
    assert.equal(ready.status, 200);
    assert.equal(ready.body.role, "writer");
    [sdkR, direct] = await Promise.all([sdkOnMaster(), startDirectSdk(emu.url, "legacy-export")]);
    await assertSdkTable(sdkR, direct, fixture);
  });

  test("SENTINEL FAILOVER during a burst: writes follow the new master, nothing is lost", {
    timeout: 90_000,
  }, async () => {
    const old = await group.masterPort();
    const sending = burst(emu.url, churn(900, { tag: "sfailover", seed: 3, entities: 150 }), 25, 40);
    await new Promise((r) => setTimeout(r, 400));
    const promoted = await group.failover();
    await sending;
    await waitEqual(await master(), emu.url, { logs, what: `the new master (port ${promoted}) to equal the emulator` });
    assert.notEqual(await group.masterPort(), old);
    await waitFor(async () => (await rep.ready()).status === 200, { what: "/ready 200 after the failover" });
  });

  test("SIGKILL of the master during a burst: a replica takes over, nothing is lost", { timeout: 90_000 }, async () => {
    await group.waitHealthy(1); // the new master has a replica (the third server) to promote
    const sending = burst(emu.url, churn(900, { tag: "skill", seed: 5, entities: 150 }), 25, 40);
    await new Promise((r) => setTimeout(r, 400));
    const promoted = await group.killMaster();
    await sending;
    await waitEqual(await master(), emu.url, {
      logs,
      what: `the promoted master (port ${promoted}) to equal the emulator`,
    });
    await waitFor(async () => (await rep.ready()).status === 200, { what: "/ready 200 after the failover" });

    // The SDK, on the master the sentinels now name, passes the table and reads a change made after the failover.
    await sdkR?.close();
    sdkR = await sdkOnMaster();
    assert.ok(direct);
    await assertSdkTable(sdkR, direct, fixture);
    await admin(emu.url, "PATCH", "/companies/comp_acme", {
      traits: [
        region("eu"),
        { trait_definition: { id: "trdf_seats", comparable_type: "int", entity_type: "company" }, value: "35" },
      ],
    });
    const sdk = sdkR;
    await waitFor(
      async () => (await checkSdk(sdk.client, { company: { domain: "acme.example" } }, "eu-data-residency")).value,
      {
        timeoutMs: 30_000,
        what: "the SDK to read the change made after the failover",
      },
    );
    assert.deepEqual(sdk.stub.calls, [], "the SDK never called the API");
  });

  test("bad settings: wrong password, wrong sentinel password: exit 1, one line naming the cause", {
    timeout: 60_000,
  }, async () => {
    const base = {
      SCHEMATIC_API_KEY: "k",
      SCHEMATIC_API_URL: emu.url,
      LOG_FORMAT: "json",
      REDIS_MAX_RETRIES: "1",
      REDIS_DIAL_TIMEOUT: "1s",
      REDIS_READ_TIMEOUT: "1s",
      REDIS_WRITE_TIMEOUT: "1s",
    };
    const [wrongPassword, wrongSentinelPassword] = await Promise.all([
      runToExit({ ...base, ...sentinelEnv(), REDIS_PASSWORD: "nope" }),
      runToExit({ ...base, ...sentinelEnv(), REDIS_SENTINEL_PASSWORD: "nope" }),
    ]);
    assert.equal(wrongPassword.code, 1, wrongPassword.lines.join("\n"));
    assert.equal(wrongPassword.stderr.length, 1, wrongPassword.stderr.join("\n"));
    assert.match(
      wrongPassword.stderr[0]!,
      /^schematic-replicator: Redis rejected the password \(WRONGPASS .*\) at Sentinel master "mymaster" \(sentinels 127\.0\.0\.1:\d+,/,
    );

    assert.equal(wrongSentinelPassword.code, 1, wrongSentinelPassword.lines.join("\n"));
    assert.equal(wrongSentinelPassword.stderr.length, 1, wrongSentinelPassword.stderr.join("\n"));
    assert.match(
      wrongSentinelPassword.stderr[0]!,
      /^schematic-replicator: Redis Sentinel rejected REDIS_SENTINEL_PASSWORD \(WRONGPASS .*\) at sentinels 127\.0\.0\.1:\d+,/,
    );
  });

  test("an unknown master name is waited for (the sentinels may learn it), /health naming the cause", {
    timeout: 60_000,
  }, async () => {
    await assertWaitsForRedis(
      {
        SCHEMATIC_API_KEY: "k",
        SCHEMATIC_API_URL: emu.url,
        LOG_FORMAT: "json",
        REDIS_DIAL_TIMEOUT: "1s",
        REDIS_READ_TIMEOUT: "1s",
        REDIS_WRITE_TIMEOUT: "1s",
        ...sentinelEnv(),
        REDIS_SENTINEL_MASTER: "nosuchmaster",
      },
      /^Redis Sentinel \(127\.0\.0\.1:\d+,.*\) does not know master "nosuchmaster"/,
    );
  });

  test("a second error on the master connection's socket (a TLS alert, then a reset) is caught; it connects again", {
    timeout: 60_000,
  }, async () => {
    const cfg = sentinelConfig();
    const client = createRedis(cfg) as Redis;
    try {
      await waitForRedis(client, cfg);
      const before = client.stream;
      failSocketTwice(client.stream);
      await waitFor(async () => client.stream !== before && (await client.ping()) === "PONG", {
        what: "a new connection to the master",
      });
    } finally {
      client.disconnect();
    }
  });

  test("a batch counts as written only once a replica has it", { timeout: 60_000 }, async () => {
    // Runs last: it stops, then kills, the replica of the current master.
    await rep.stop();
    await group.waitHealthy(1);
    const cfg = sentinelConfig();
    const client: RedisClient = createRedis(cfg);
    try {
      await waitForRedis(client, cfg);
      const writer = new StoreWriter(client, { ttlMs: 0, acks: { timeoutMs: 300, graceMs: 2000 } });
      assert.ok(writer.acks, "acknowledgements are on through Sentinel");
      // Writes until one is acknowledged: on a loaded machine a replica can miss one short WAIT without anything
      // being wrong (after a batch that fell short, the next one waits only briefly).
      const writeAcknowledged = (value: string, what: string) =>
        waitFor(
          async () => {
            try {
              await writer.apply([{ op: "set", key: "acks:probe", value }]);
              return true;
            } catch (err) {
              if (err instanceof NotReplicatedError) return false;
              throw err;
            }
          },
          { timeoutMs: 20_000, intervalMs: 200, what },
        );
      await writeAcknowledged("1", "the replica to acknowledge a write");

      const masterPort = await group.masterPort();
      const replicaPort = (
        (await command(masterPort, ["ROLE"], { password: PASSWORD })) as [string, number, string[][]]
      )[2][0]![1];
      const replica = group.servers.find((s) => s.port === Number(replicaPort));
      assert.ok(replica, "the master's replica is one of the group's servers");

      // A stopped replica cannot acknowledge: the batch reached the master but is not reported written.
      replica.process.kill("SIGSTOP");
      try {
        await assert.rejects(writer.apply([{ op: "set", key: "acks:probe", value: "2" }]), NotReplicatedError);
      } finally {
        replica.process.kill("SIGCONT");
      }
      await writeAcknowledged("3", "the resumed replica to acknowledge writes again");

      // A replica that is gone for longer than the grace no longer holds writes back.
      await stopProcess(replica.process, "SIGKILL");
      await writeAcknowledged("4", "writes to go on without the dead replica");
      assert.equal(await (client as Redis).get("acks:probe"), "4");
    } finally {
      client.disconnect();
    }
  });
});
