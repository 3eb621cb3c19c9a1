/**
 * Prometheus `/metrics` of real replicator processes (a writer, then a standby beside it) against the emulator and a
 * real Redis, as an SRE would alert on them:
 *
 * - after the first load: role, ready, Redis and the datastream up, the key accepted, one full load with its
 *   duration, REST rows counted apart from stream changes, the flags snapshot in the one entity vocabulary, queues
 *   with their capacities, Redis latency buckets past the command timeout, Node's process metrics unprefixed;
 * - stream changes: counted by entity and type, each observed once in the replication-lag histogram, which does not
 *   move while the stream is idle (a "time since the last change" would grow);
 * - a reconnect resumed by replay; a server reload whose REST pages fail twice (REST errors by status class, a second
 *   full load); the readiness marker deleted (a data-loss event, rebuilt);
 * - a healthy standby: role standby and ready, and none of the writer-only series (so "datastream down" or "no data
 *   loaded" cannot fire on it); after the writer stops, it takes the lease and exports them;
 * - Redis gone: `redis_connected` 0, `ready` 0 and Redis errors counted.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { parseGoDuration } from "../src/config/index.js";
import { loadFixtureFile, type RunningEmulator, startEmulator } from "../src/emulator/index.js";
import type { Fixture } from "../src/model/wire.js";
import { admin, defaultKeys } from "./helpers/e2e.js";
import { type RedisServer, startRedis, waitFor } from "./helpers/redis.js";
import { type ReplicatorProcess, startReplicator, testEnv } from "./helpers/replicator.js";
import { FIXTURE, hasMetric, labelValues, metricSum, parseMetrics, quietRedis } from "./ops-helpers.js";

const P = "schematic_replicator_";
/** Exported only while an instance is the writer. */
const WRITER_ONLY = [
  "datastream_connected",
  "datastream_last_message_timestamp_seconds",
  "last_applied_timestamp_seconds",
  "data_loaded",
  "load_in_progress",
  "queue_depth",
  "queue_capacity",
  "load_entities_loaded",
  "load_entities_expected",
].map((n) => P + n);

describe("metrics of a writer and a standby", { timeout: 240_000 }, () => {
  let redis: RedisServer;
  let emulator: RunningEmulator;
  let writer: ReplicatorProcess;
  let standby: ReplicatorProcess;
  let fixture: Fixture;
  let env: Record<string, string>;

  const scrape = async (r: ReplicatorProcess = writer) => parseMetrics(await r.metrics());
  const until = (r: ReplicatorProcess, what: string, ok: (m: Map<string, number>) => boolean, timeoutMs = 60_000) =>
    waitFor(
      async () => {
        const m = await scrape(r);
        return ok(m) ? m : undefined;
      },
      { what, timeoutMs, intervalMs: 200 },
    );

  before(async () => {
    fixture = loadFixtureFile(FIXTURE);
    redis = await startRedis();
    emulator = await startEmulator({ fixture });
    env = testEnv({ REDIS_ADDR: redis.addr, SCHEMATIC_API_URL: emulator.url, WRITER_LOCK_TTL: "3s" });
    writer = await startReplicator(env);
    await writer.waitReady();
  });

  after(async () => {
    await Promise.all([writer?.stop(), standby?.stop()]);
    await emulator?.close();
    await redis?.stop();
  });

  test("after the first load: up, ready, one timed full load, REST rows apart from stream changes", async () => {
    const res = await fetch(`${writer.url}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^text\/plain/);
    const text = await res.text();
    const m = parseMetrics(text);

    assert.equal(m.get(`${P}role{role="writer"}`), 1);
    assert.equal(m.get(`${P}role{role="standby"}`), 0);
    assert.equal(m.get(`${P}ready`), 1);
    assert.equal(m.get(`${P}redis_connected`), 1);
    assert.equal(m.get(`${P}api_key_valid`), 1);
    assert.equal(m.get(`${P}datastream_connected`), 1);
    assert.equal(m.get(`${P}data_loaded`), 1);
    assert.equal(m.get(`${P}load_in_progress`), 0);
    assert.equal(m.get(`${P}full_loads_total`), 1);
    assert.equal(m.get(`${P}load_duration_seconds_count{pass="full"}`), 1);
    assert.equal(m.get(`${P}load_duration_seconds_count{pass="reconcile"}`), 0);
    assert.equal(m.get(`${P}messages_dropped_total`), 0);
    assert.equal(m.get(`${P}datastream_reconnects_total`), 0);
    assert.equal(m.get(`${P}data_loss_events_total`), 0);
    assert.equal(m.get(`${P}lease_changes_total{change="acquired"}`), 1);
    assert.equal(m.get(`${P}lease_changes_total{change="lost"}`), 0);
    assert.equal(m.get(`${P}circuit_breaker_state{breaker="redis",state="closed"}`), 1);
    assert.equal(m.get(`${P}circuit_breaker_state{breaker="api",state="open"}`), 0);
    for (const c of ["4xx", "5xx", "network", "invalid_response"]) {
      assert.equal(m.get(`${P}rest_errors_total{status_class="${c}"}`), 0, c);
    }

    // The load's REST rows are not datastream messages.
    const companies = fixture.companies.length;
    const users = fixture.users.length;
    assert.equal(metricSum(m, `${P}load_entities_applied_total`, 'entity="company"', 'type="full"'), companies);
    assert.equal(metricSum(m, `${P}load_entities_applied_total`, 'entity="user"', 'type="full"'), users);
    assert.equal(metricSum(m, `${P}messages_applied_total`, 'entity="company"'), 0);
    assert.equal(metricSum(m, `${P}messages_applied_total`, 'entity="user"'), 0);
    // Loaded and expected are two series, one vocabulary of entities.
    assert.equal(m.get(`${P}load_entities_loaded{entity="company"}`), companies);
    assert.equal(m.get(`${P}load_entities_expected{entity="company"}`), companies);
    assert.equal(m.get(`${P}load_entities_loaded{entity="user"}`), users);
    assert.equal(m.get(`${P}load_entities_expected{entity="user"}`), users);
    assert.equal(m.get(`${P}messages_received_total{entity="flag",type="snapshot"}`), 1);
    assert.equal(m.get(`${P}messages_applied_total{entity="flag",type="snapshot"}`), 1);
    for (const label of labelValues(m, "entity"))
      assert.ok(["company", "user", "flag", "other"].includes(label), label);

    for (const queue of ["company", "user", "flag", "held"]) {
      assert.equal(m.get(`${P}queue_depth{queue="${queue}"}`), 0, `queue_depth ${queue}`);
      assert.ok((m.get(`${P}queue_capacity{queue="${queue}"}`) ?? 0) > 0, `queue_capacity ${queue}`);
    }
    assert.deepEqual(labelValues(m, "queue").sort(), ["company", "flag", "held", "user"]);

    // Redis latency buckets reach past the command timeout (REDIS_READ_TIMEOUT/REDIS_WRITE_TIMEOUT, 3 s by default;
    // shorter in tests, whose leases are short).
    assert.ok((m.get(`${P}redis_command_duration_seconds_count{operation="write"}`) ?? 0) > 0);
    const bounds = labelValues(m, "le", `${P}redis_command_duration_seconds_bucket`)
      .filter((le) => le !== "+Inf")
      .map(Number);
    const timeout = parseGoDuration(env.REDIS_READ_TIMEOUT as string) / 1000;
    assert.ok(bounds.includes(timeout) && Math.max(...bounds) > timeout, `bounds ${bounds}, timeout ${timeout}`);

    const build = [...m.keys()].find((k) => k.startsWith(`${P}build_info{`));
    assert.ok(build, "build_info is exposed");
    assert.match(build, /cache_version="4b54a537"/);
    assert.match(build, /version="\d+\.\d+\.\d+/);
    assert.equal(m.get(build), 1);

    // Node's process metrics under their standard names, as stock dashboards expect.
    assert.ok(hasMetric(m, "process_resident_memory_bytes"));
    assert.ok(hasMetric(m, "nodejs_heap_size_used_bytes"));
    assert.ok(![...m.keys()].some((k) => k.startsWith(`${P}process_`) || k.startsWith(`${P}nodejs_`)));
    // Every family is documented.
    for (const family of new Set(
      [...m.keys()].map((k) => k.replace(/\{.*$/, "").replace(/_(bucket|sum|count)$/, "")),
    )) {
      assert.match(text, new RegExp(`^# HELP ${family} \\S`, "m"), `HELP for ${family}`);
    }
  });

  test("stream changes: counted by entity and type, lag observed once per change, and still while idle", async () => {
    const before = await scrape();
    const startedAt = Date.now() / 1000;
    const flag = structuredClone(fixture.flags.find((f) => f.key === "dashboards")!);
    flag.default_value = true;
    await admin(emulator.url, "PUT", "/flags/dashboards", flag);
    await admin(emulator.url, "PATCH", "/companies/comp_acme", { plan_ids: ["plan_enterprise"] });
    await admin(emulator.url, "DELETE", "/users/user_100");
    const delta = (m: Map<string, number>, name: string, ...labels: string[]) =>
      metricSum(m, name, ...labels) - metricSum(before, name, ...labels);
    const lagCount = `${P}replication_lag_seconds_count`;

    const after = await until(writer, "the three changes to be applied", (m) => delta(m, lagCount) >= 3);
    assert.equal(delta(after, `${P}messages_received_total`, 'entity="flag"', 'type="full"'), 1);
    assert.equal(delta(after, `${P}messages_received_total`, 'entity="company"', 'type="partial"'), 1);
    assert.equal(delta(after, `${P}messages_received_total`, 'entity="user"', 'type="delete"'), 1);
    assert.equal(delta(after, `${P}messages_applied_total`, 'entity="flag"', 'type="full"'), 1);
    assert.equal(delta(after, `${P}messages_applied_total`, 'entity="company"', 'type="partial"'), 1);
    assert.equal(delta(after, `${P}messages_applied_total`, 'entity="user"', 'type="delete"'), 1);
    assert.equal(delta(after, lagCount), 3, "one lag observation per applied change");
    const lagSum = delta(after, `${P}replication_lag_seconds_sum`);
    assert.ok(lagSum >= 0 && lagSum < 90, `lag of three changes ${lagSum} s`);
    assert.equal(
      delta(after, `${P}replication_lag_seconds_bucket`, 'le="+Inf"'),
      3,
      "the +Inf bucket counts every observation",
    );
    for (const name of ["last_applied_timestamp_seconds", "datastream_last_message_timestamp_seconds"]) {
      const t = after.get(P + name)!;
      assert.ok(t >= startedAt - 1 && t <= Date.now() / 1000 + 1, `${name} ${t}`);
    }
    assert.equal(after.get(`${P}full_loads_total`), 1, "changes never trigger a full load");
    assert.equal(after.get(`${P}messages_skipped_total`), 0);

    // Idle: no change, so no lag observation. The lag of an idle replicator is no lag at all.
    await new Promise((r) => setTimeout(r, 2500));
    const idle = await scrape();
    for (const series of [...idle.keys()].filter((k) => k.startsWith(`${P}replication_lag_seconds`))) {
      assert.equal(idle.get(series), after.get(series), `${series} unchanged while idle`);
    }
  });

  test("a dropped connection resumes by replay: one reconnect, one replay, still one full load", async () => {
    await admin(emulator.url, "POST", "/disconnect", { code: 1012 });
    const m = await until(
      writer,
      "the replicator to reconnect and resume",
      (s) => s.get(`${P}replays_total`) === 1 && s.get(`${P}datastream_connected`) === 1,
    );
    assert.equal(m.get(`${P}datastream_reconnects_total`), 1);
    assert.equal(m.get(`${P}full_loads_total`), 1);
    assert.equal(m.get(`${P}data_loaded`), 1);
  });

  test("a reload whose REST pages fail twice: REST errors by status class, a second timed full load", async () => {
    await admin(emulator.url, "POST", "/faults", { rest_fail_next: 2, rest_error_status: 503 });
    await admin(emulator.url, "POST", "/reload");
    const m = await until(
      writer,
      "the second full load to complete",
      (s) => s.get(`${P}load_duration_seconds_count{pass="full"}`) === 2,
    );
    await admin(emulator.url, "POST", "/faults", {});
    assert.equal(m.get(`${P}rest_errors_total{status_class="5xx"}`), 2);
    assert.equal(m.get(`${P}rest_errors_total{status_class="4xx"}`), 0);
    assert.equal(m.get(`${P}full_loads_total`), 2);
    assert.equal(
      metricSum(m, `${P}load_entities_applied_total`, 'entity="company"', 'type="full"'),
      2 * fixture.companies.length,
    );
    assert.equal(metricSum(m, `${P}messages_applied_total`, 'entity="company"', 'type="full"'), 0);
  });

  test("the readiness marker vanishes: one data-loss event, and the data set is rebuilt", async () => {
    const client = quietRedis(redis.port);
    await client.del(defaultKeys().marker());
    client.disconnect();
    const m = await until(
      writer,
      "a data-loss event and ready again",
      (s) => s.get(`${P}data_loss_events_total`) === 1 && s.get(`${P}ready`) === 1 && s.get(`${P}data_loaded`) === 1,
    );
    assert.equal(m.get(`${P}full_loads_total`), 3);
  });

  test("a healthy standby: role standby, ready, and none of the writer-only series", async () => {
    standby = await startReplicator(env);
    await standby.waitReady();
    const m = await scrape(standby);
    assert.equal(m.get(`${P}role{role="standby"}`), 1);
    assert.equal(m.get(`${P}role{role="writer"}`), 0);
    assert.equal(m.get(`${P}ready`), 1);
    assert.equal(m.get(`${P}redis_connected`), 1);
    for (const name of WRITER_ONLY) assert.ok(!hasMetric(m, name), `${name} is absent on a standby`);
    assert.equal(metricSum(m, `${P}messages_applied_total`), 0);
    assert.equal(m.get(`${P}replication_lag_seconds_count`), 0);
    assert.equal(m.get(`${P}lease_changes_total{change="acquired"}`), 0);
    assert.ok(hasMetric(m, `${P}build_info`));
    // The writer still exports them.
    const w = await scrape(writer);
    for (const name of WRITER_ONLY) assert.ok(hasMetric(w, name), `${name} on the writer`);
  });

  test("the writer stops: the standby takes the lease and exports the writer's series", async () => {
    assert.equal(await writer.stop(), 0);
    const m = await until(
      standby,
      "the standby to become a connected writer",
      (s) => s.get(`${P}role{role="writer"}`) === 1 && s.get(`${P}datastream_connected`) === 1,
    );
    assert.equal(m.get(`${P}lease_changes_total{change="acquired"}`), 1);
    await until(standby, "ready under the new writer", (s) => s.get(`${P}ready`) === 1);
  });

  test("Redis gone: redis_connected 0, ready 0, Redis errors counted", async () => {
    await redis.kill();
    const m = await until(
      standby,
      "Redis down in the metrics",
      (s) => s.get(`${P}redis_connected`) === 0 && (s.get(`${P}redis_errors_total`) ?? 0) > 0,
    );
    assert.equal(m.get(`${P}ready`), 0);
  });
});
