/**
 * Prometheus `/metrics` during an end-to-end run (replicator process + emulator + Redis): after the first load the
 * gauges and counters say what happened (one full load, every company, user and the flags snapshot applied, the
 * datastream connected, this instance the writer, the build's cache version), and they move as the data does:
 * admin changes raise messages_received_total and messages_applied_total by entity and type, replication lag and
 * the last-applied time are set, and a dropped connection that resumes by replay counts a reconnect and a replay
 * but no second full load.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { loadFixtureFile, type RunningEmulator, startEmulator } from "../src/emulator/index.js";
import type { Fixture } from "../src/model/wire.js";
import { type RedisServer, startRedis, waitFor } from "./helpers/redis.js";
import { type ReplicatorProcess, startReplicator, testEnv } from "./helpers/replicator.js";
import { FIXTURE, metricSum, parseMetrics } from "./ops-helpers.js";

const P = "schematic_replicator_";

describe("metrics during an end-to-end run", { timeout: 180_000 }, () => {
  let redis: RedisServer;
  let emulator: RunningEmulator;
  let replicator: ReplicatorProcess;
  let fixture: Fixture;

  const scrape = async () => parseMetrics(await replicator.metrics());
  const admin = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${emulator.url}/_emulator${path}`, {
      method,
      headers: body === undefined ? undefined : { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    assert.equal(res.status, 200, `${method} ${path}: ${await res.text()}`);
  };

  before(async () => {
    fixture = loadFixtureFile(FIXTURE);
    redis = await startRedis();
    emulator = await startEmulator({ fixture });
    replicator = await startReplicator(testEnv({ REDIS_ADDR: redis.addr, SCHEMATIC_API_URL: emulator.url }));
    await replicator.waitReady();
  });

  after(async () => {
    await replicator?.stop();
    await emulator?.close();
    await redis?.stop();
  });

  test("after the first load: one full load, everything applied, connected, writer, build info", async () => {
    const res = await fetch(`${replicator.url}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^text\/plain/);
    const text = await res.text();
    const m = parseMetrics(text);

    assert.equal(m.get(`${P}full_reloads_total`), 1);
    assert.equal(m.get(`${P}datastream_connected`), 1);
    assert.equal(m.get(`${P}is_writer`), 1);
    assert.equal(m.get(`${P}data_loaded`), 1);
    assert.equal(m.get(`${P}messages_dropped_total`), 0);
    assert.equal(m.get(`${P}datastream_reconnects_total`), 0);
    assert.equal(metricSum(m, `${P}messages_applied_total`, 'entity="company"'), fixture.companies.length);
    assert.equal(metricSum(m, `${P}messages_applied_total`, 'entity="user"'), fixture.users.length);
    assert.equal(metricSum(m, `${P}messages_applied_total`, 'entity="flags"', 'type="full"'), 1);
    assert.equal(metricSum(m, `${P}messages_received_total`, 'entity="flags"', 'type="full"'), 1);
    for (const queue of ["company", "user", "flags"]) {
      assert.equal(m.get(`${P}queue_depth{queue="${queue}"}`), 0, `queue_depth ${queue}`);
    }
    assert.ok(m.has(`${P}replication_lag_seconds`));
    assert.equal(m.get(`${P}initial_load_entities{kind="companies",stage="loaded"}`), fixture.companies.length);
    assert.equal(m.get(`${P}initial_load_entities{kind="users",stage="total"}`), fixture.users.length);
    assert.equal(m.get(`${P}circuit_breaker_state{breaker="redis"}`), 0);
    assert.ok((m.get(`${P}redis_command_duration_seconds_count{operation="write"}`) ?? 0) > 0);
    const build = [...m.keys()].find((k) => k.startsWith(`${P}build_info{`));
    assert.ok(build, "build_info is exposed");
    assert.match(build, /cache_version="4b54a537"/);
    assert.match(build, /version="\d+\.\d+\.\d+/);
    assert.equal(m.get(build), 1);
    // Each series is documented.
    assert.match(text, new RegExp(`# HELP ${P}replication_lag_seconds `));
  });

  test("admin changes move received and applied counters, lag and the last-applied time", async () => {
    const before = await scrape();
    const startedAt = Date.now() / 1000;
    const flag = structuredClone(fixture.flags.find((f) => f.key === "dashboards")!);
    flag.default_value = true;
    await admin("PUT", "/flags/dashboards", flag);
    await admin("PATCH", "/companies/comp_acme", { plan_ids: ["plan_enterprise"] });
    await admin("DELETE", "/users/user_100");
    const delta = (m: Map<string, number>, name: string, ...labels: string[]) =>
      metricSum(m, name, ...labels) - metricSum(before, name, ...labels);

    const after = await waitFor(
      async () => {
        const m = await scrape();
        return delta(m, `${P}messages_applied_total`, 'entity="flag"') >= 1 &&
          delta(m, `${P}messages_applied_total`, 'entity="company"') >= 1 &&
          delta(m, `${P}messages_applied_total`, 'entity="user"') >= 1
          ? m
          : undefined;
      },
      { what: "the three changes to be applied" },
    );
    assert.equal(delta(after, `${P}messages_received_total`, 'entity="flag"', 'type="full"'), 1);
    assert.equal(delta(after, `${P}messages_received_total`, 'entity="company"', 'type="partial"'), 1);
    assert.equal(delta(after, `${P}messages_received_total`, 'entity="user"', 'type="delete"'), 1);
    assert.equal(delta(after, `${P}messages_applied_total`, 'entity="flag"', 'type="full"'), 1);
    assert.equal(delta(after, `${P}messages_applied_total`, 'entity="company"', 'type="partial"'), 1);
    assert.equal(delta(after, `${P}messages_applied_total`, 'entity="user"', 'type="delete"'), 1);
    const lag = after.get(`${P}replication_lag_seconds`)!;
    assert.ok(lag >= 0 && lag < 30, `replication lag ${lag}`);
    const lastApplied = after.get(`${P}last_applied_timestamp_seconds`)!;
    assert.ok(lastApplied >= startedAt - 1 && lastApplied <= Date.now() / 1000 + 1, `last applied ${lastApplied}`);
    assert.equal(after.get(`${P}full_reloads_total`), 1, "changes never trigger a full load");
    assert.equal(after.get(`${P}messages_skipped_total`), 0);
  });

  test("a dropped connection resumes by replay: one reconnect, one replay, still one full load", async () => {
    await admin("POST", "/disconnect", { code: 1012 });
    const m = await waitFor(
      async () => {
        const s = await scrape();
        return s.get(`${P}replays_total`) === 1 && s.get(`${P}datastream_connected`) === 1 ? s : undefined;
      },
      { what: "the replicator to reconnect and resume" },
    );
    assert.equal(m.get(`${P}datastream_reconnects_total`), 1);
    assert.equal(m.get(`${P}full_reloads_total`), 1);
    assert.equal(m.get(`${P}data_loaded`), 1);
  });
});
