/**
 * What the replicator's logs may never contain (docs/design/decisions.md "Logs"). Every byte a replicator process
 * writes (stdout and stderr) is searched:
 *
 * - secrets: the API key (from SCHEMATIC_API_KEY or SCHEMATIC_API_KEY_FILE) and the Redis password (from
 *   REDIS_PASSWORD or inside REDIS_URL), at LOG_LEVEL=debug, through start-up, a full load, live changes, a
 *   reconnect and shutdown, and through the failures that quote settings: a wrong Redis password, a rejected API
 *   key, a URL the datastream cannot reach;
 * - customer payloads at info level: trait values, key values and entity bodies sent through the stream, valid or
 *   not, never appear.
 *
 * And what they must contain: through a Redis outage (the server killed, restarted empty), the background task
 * that failed by name, /ready turning 503 and 200 again with the reason, Redis answering again, and the reload
 * that follows named for what it is (Redis lost its data), not an initial load; errors always under `err`.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { loadFixtureFile, type RunningEmulator, startEmulator } from "../src/emulator/index.js";
import type { Company, Fixture } from "../src/model/wire.js";
import { jsonLogs } from "./helpers/e2e.js";
import { type RedisServer, startRedis, waitFor } from "./helpers/redis.js";
import { type ReplicatorProcess, startReplicator, testEnv } from "./helpers/replicator.js";
import { FIXTURE, quietRedis } from "./ops-helpers.js";

const API_KEY = "sch_dev_secretvalue123";
const REDIS_PASSWORD = "redis-Pa55word-kept-secret";
const WRONG_PASSWORD = "wrong-Pa55word-also-secret";

function assertNoSecret(logs: string[], secrets: string[], where: string): void {
  const all = logs.join("\n");
  assert.ok(all.length > 0, `${where}: the process wrote something`);
  for (const secret of secrets) {
    assert.ok(!all.includes(secret), `${where}: the logs contain ${JSON.stringify(secret)}:\n${all}`);
  }
}

describe("logs", { timeout: 240_000 }, () => {
  let redis: RedisServer;
  let emulator: RunningEmulator;
  let fixture: Fixture;
  let dir: string;

  const admin = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${emulator.url}/_emulator${path}`, {
      method,
      headers: { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    assert.equal(res.status, 200, `${method} ${path}: ${await res.text()}`);
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "ops-logs-"));
    fixture = loadFixtureFile(FIXTURE);
    redis = await startRedis({ args: ["--requirepass", REDIS_PASSWORD] });
    emulator = await startEmulator({ fixture, apiKey: API_KEY });
  });

  after(async () => {
    await emulator?.close();
    await redis?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("at debug level, through a whole run, neither the API key nor the Redis password appears", async () => {
    const runs: [string, Record<string, string>][] = [
      ["REDIS_PASSWORD", { REDIS_ADDR: redis.addr, REDIS_PASSWORD }],
      ["REDIS_URL", { REDIS_URL: `redis://:${REDIS_PASSWORD}@127.0.0.1:${redis.port}/0` }],
    ];
    const all: string[] = [];
    for (const [name, redisEnv] of runs) {
      const r: ReplicatorProcess = await startReplicator(
        testEnv({ ...redisEnv, SCHEMATIC_API_KEY: API_KEY, SCHEMATIC_API_URL: emulator.url, LOG_LEVEL: "debug" }),
      );
      try {
        await r.waitReady();
        await admin("PATCH", "/companies/comp_globex", { plan_ids: ["plan_pro"] });
        // Once the change is applied the replicator has a replay cursor to resume from.
        await waitFor(async () => ((await r.debug()).replay as { cursor: string }).cursor !== "", {
          what: "the change to be applied",
          timeoutMs: 60_000,
        });
        await admin("POST", "/disconnect", { code: 1012 });
        await waitFor(async () => ((await r.debug()).replay as { replays_engaged: number }).replays_engaged >= 1, {
          what: "a replay after the disconnect",
        });
        if (name === "REDIS_PASSWORD") {
          // Redis restarts empty: connection errors (logged at debug), then the self-healing reload.
          await redis.kill();
          await new Promise((res) => setTimeout(res, 500));
          await redis.restart();
          // Either the marker check notices first, or the lease renewal does (the lease key went too) and the
          // next tenure finds no data set: both end in a reload for data loss.
          await waitFor(
            async () =>
              r.logs.some((l) => l.includes("the readiness marker is gone") || l.includes('"reason":"data_loss"')),
            { what: "the replicator to notice the empty Redis", timeoutMs: 60_000 },
          );
        }
        await r.waitReady();
      } finally {
        assert.equal(await r.stop(), 0);
      }
      assert.ok(
        r.logs.some((l) => l.includes("full load complete")),
        `${name}: the run got through a load`,
      );
      assertNoSecret(r.logs, [API_KEY, REDIS_PASSWORD], name);
      all.push(...r.logs);
    }
    assert.ok(
      all.some((l) => l.includes('"level":"debug"')),
      "debug lines were written (Redis connection errors at least)",
    );
  });

  test("a Redis outage, told by the logs", async () => {
    const client = quietRedis(redis.port, REDIS_PASSWORD);
    await client.flushall(); // an empty Redis: the first load is an initial one
    client.disconnect();
    const r = await startReplicator(
      testEnv({ REDIS_ADDR: redis.addr, REDIS_PASSWORD, SCHEMATIC_API_KEY: API_KEY, SCHEMATIC_API_URL: emulator.url }),
    );
    const logs = () => jsonLogs(r.logs);
    const has = (test: (l: Record<string, unknown>) => boolean) => logs().some(test);
    try {
      await r.waitReady();
      await waitFor(() => has((l) => String(l.msg).startsWith("/ready now answers 200")), {
        what: "the log line saying /ready answers 200",
      });
      await redis.kill();
      await waitFor(() => has((l) => String(l.msg).startsWith("background task failed: ")), {
        what: "a background task to fail",
        timeoutMs: 30_000,
      });
      await waitFor(() => has((l) => String(l.msg).startsWith("/ready now answers 503")), {
        what: "the log line saying /ready answers 503",
        timeoutMs: 30_000,
      });
      await redis.restart();
      await waitFor(() => has((l) => l.msg === "Redis answers again"), {
        what: "Redis answering again",
        timeoutMs: 30_000,
      });
      await r.waitReady();
      await waitFor(() => logs().filter((l) => String(l.msg).startsWith("/ready now answers 200")).length >= 2, {
        what: "the log line saying /ready answers 200 again",
      });
    } finally {
      assert.equal(await r.stop(), 0);
    }
    const all = logs();
    const failed = all.filter((l) => String(l.msg).startsWith("background task failed: "));
    for (const l of failed) {
      assert.equal(typeof l.task, "string", JSON.stringify(l));
      assert.equal(l.msg, `background task failed: ${l.task}`);
    }
    const down = all.find((l) => String(l.msg).startsWith("/ready now answers 503"))!;
    assert.equal(down.reason, "Redis does not answer");
    const loads = all.filter((l) => String(l.msg).startsWith("starting a full load"));
    assert.equal(loads[0]?.reason, "initial", JSON.stringify(loads));
    assert.ok(loads.length >= 2, JSON.stringify(loads));
    for (const l of loads.slice(1)) {
      assert.equal(l.reason, "data_loss", JSON.stringify(l));
      assert.match(String(l.msg), /Redis lost its data/);
    }
    const withError = all.filter((l) => "error" in l);
    assert.deepEqual(withError, [], "errors are logged under `err`, never `error`");
    assert.ok(
      all.some((l) => typeof l.err === "string"),
      "errors were logged",
    );
  });

  test("failures that quote settings do not quote secrets", async () => {
    const keyFile = join(dir, "api-key");
    writeFileSync(keyFile, `${API_KEY}\n`);
    const cases: [string, Record<string, string>, number, string[]][] = [
      [
        "wrong Redis password (API key from a file)",
        { REDIS_ADDR: redis.addr, REDIS_PASSWORD: WRONG_PASSWORD, SCHEMATIC_API_KEY_FILE: keyFile },
        1,
        [API_KEY, WRONG_PASSWORD, REDIS_PASSWORD],
      ],
      [
        "wrong Redis password in REDIS_URL",
        { REDIS_URL: `redis://:${WRONG_PASSWORD}@127.0.0.1:${redis.port}`, SCHEMATIC_API_KEY: API_KEY },
        1,
        [API_KEY, WRONG_PASSWORD],
      ],
      [
        "API key rejected",
        { REDIS_ADDR: redis.addr, REDIS_PASSWORD, SCHEMATIC_API_KEY: `${API_KEY}-revoked` },
        3,
        [`${API_KEY}-revoked`, REDIS_PASSWORD],
      ],
      [
        "invalid settings next to secrets",
        { REDIS_ADDR: redis.addr, REDIS_PASSWORD, SCHEMATIC_API_KEY: API_KEY, CACHE_TTL: "forever" },
        2,
        [API_KEY, REDIS_PASSWORD],
      ],
    ];
    for (const [name, env, code, secrets] of cases) {
      const r = await startReplicator(
        testEnv({
          SCHEMATIC_API_URL: emulator.url,
          LOG_LEVEL: "debug",
          REDIS_MAX_RETRIES: "1",
          ...env,
          ...(env.SCHEMATIC_API_KEY_FILE ? { SCHEMATIC_API_KEY: "" } : {}),
        }),
      );
      let timer: NodeJS.Timeout | undefined;
      const exit = await Promise.race([
        r.exited,
        new Promise<"timeout">((res) => {
          timer = setTimeout(() => res("timeout"), 60_000);
        }),
      ]);
      clearTimeout(timer);
      if (exit === "timeout") await r.stop("SIGKILL");
      assert.equal(exit, code, `${name}:\n${r.logs.join("\n")}`);
      assertNoSecret(r.logs, secrets, name);
    }
  });

  test("at info level no customer payload appears: trait values, key values, bodies (valid or not)", async () => {
    const client = quietRedis(redis.port, REDIS_PASSWORD);
    const r = await startReplicator(
      testEnv({ REDIS_ADDR: redis.addr, REDIS_PASSWORD, SCHEMATIC_API_KEY: API_KEY, SCHEMATIC_API_URL: emulator.url }),
    );
    try {
      await r.waitReady();
      const company = structuredClone(fixture.companies.find((c) => c.id === "comp_stark")!) as Company;
      company.keys = { ...company.keys, crm_id: "payload-key-value-5d1e" };
      company.traits = [{ trait_definition: company.traits[0]!.trait_definition, value: "payload-trait-value-7f3a" }];
      await admin("PUT", "/companies/comp_stark", company);
      await admin("PATCH", "/users/user_003", {
        traits: [{ trait_definition: null, value: "payload-user-trait-91c2" }],
      });
      // Invalid messages are logged as skipped, with a reason: the reason must not quote the data.
      const invalid = {
        entity_type: "rulesengine.Company",
        message_type: "full",
        entity_id: "comp_bad",
        stream_id: `${Date.now()}-0`,
        data: { id: "comp_bad", keys: { domain: "payload-invalid-body-33ab" }, rules: "payload-bad-rules-44cd" },
      };
      await admin("POST", "/raw", { frame: JSON.stringify(invalid) });
      await admin("POST", "/raw", {
        frame: '{"entity_type":"rulesengine.Company","message_type":"full","data":"payload-frame-55ef',
      });
      await waitFor(
        async () => {
          const body = await client.get("schematic:company:4b54a537:comp_stark");
          return (
            body?.includes("payload-trait-value-7f3a") &&
            (await client.get("schematic:company:4b54a537:crm_id:payload-key-value-5d1e"))
          );
        },
        { what: "the changed company in Redis" },
      );
      await waitFor(async () => ((await r.debug()).messages as { skipped: number }).skipped >= 1, {
        what: "the invalid message to be skipped",
      });
    } finally {
      assert.equal(await r.stop(), 0);
      client.disconnect();
    }
    assert.ok(!r.logs.some((l) => l.includes('"level":"debug"')), "info level: no debug lines");
    assertNoSecret(
      r.logs,
      [
        "payload-trait-value-7f3a",
        "payload-key-value-5d1e",
        "payload-user-trait-91c2",
        "payload-invalid-body-33ab",
        "payload-bad-rules-44cd",
        "payload-frame-55ef",
        API_KEY,
        REDIS_PASSWORD,
      ],
      "info level",
    );
  });
});
