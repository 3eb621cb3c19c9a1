/**
 * The chaos soak (soak/, docs/reliability.md):
 *
 * - its plan is a function of the seed, every change it plans is one the emulator accepts, and a few minutes of it
 *   draw every fault kind of each topology and every kind of change;
 * - its checkers can fail: /ready said 200 while data was missing, a write landing while another process held the
 *   lease, a replicator exiting badly, and the SDK sample reading a Redis that lost its companies;
 * - a short fixed-seed run (one minute, single node, two replicators, from a fresh build) holds every checkpoint.
 *   It is a correctness gate, not a timing test: every wait in it is generous.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Redis } from "ioredis";
import { createClient } from "redis";
import { exitViolations, readyViolations, tokenPid, writerViolations } from "../soak/invariants.js";
import { FAULT_KINDS, faultWeights, Planner, type SoakOptions, type Topology } from "../soak/plan.js";
import { Rand } from "../soak/random.js";
import type { SoakResult } from "../soak/report.js";
import { checkSdkSample, type RulesEngine, startRulesEngine } from "../soak/sdk-check.js";
import { judgedWrite, LeasePoller, replicatorPid, WriteRecorder } from "../soak/watch.js";
import { CHANGE_KINDS } from "../soak/workload.js";
import { loadFixtureFile, startEmulator } from "../src/emulator/index.js";
import type { Fixture } from "../src/model/wire.js";
import { redisConnectionName, writerConnectionName } from "../src/store/connect.js";
import { KeyScheme } from "../src/store/keys.js";
import { scanKeys } from "./helpers/e2e.js";
import { FIXTURE_PATH, KEYS, type Stack, startStack } from "./helpers/faults.js";
import { startRedis, waitFor } from "./helpers/redis.js";
import { buildInto, ROOT, runNode } from "./ops-helpers.js";

const options = (o: Partial<SoakOptions> = {}): SoakOptions => ({
  minutes: 1,
  seed: 1,
  topology: "single",
  replicators: 2,
  loading: "sync",
  checkpointEvery: 30,
  replayLog: 2000,
  without: [],
  ...o,
});

describe("soak: the plan", () => {
  test("is a function of the seed, and every change in it is one the emulator accepts", {
    timeout: 120_000,
  }, async () => {
    const fixture = loadFixtureFile(FIXTURE_PATH);
    const a = new Planner(options({ seed: 11 }), fixture);
    const b = new Planner(options({ seed: 11 }), fixture);
    const c = new Planner(options({ seed: 12 }), fixture);
    const plansA = [a.period(), a.period()];
    const plansB = [b.period(), b.period()];
    c.period();
    c.period();
    assert.deepEqual(plansB, plansA, "the same seed plans the same workload and faults");
    assert.equal(b.fingerprint(), a.fingerprint());
    assert.notEqual(c.fingerprint(), a.fingerprint(), "another seed plans something else");

    const emu = await startEmulator({ fixture: a.workload.initial });
    try {
      for (const plan of plansA) {
        for (const event of plan.workload) {
          const changes = event.operations.flatMap((op) => op.changes);
          const res = await fetch(`${emu.url}/_emulator/bulk`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ changes }),
          });
          assert.equal(res.status, 200, await res.text());
        }
      }
    } finally {
      await emu.close();
    }
  });

  for (const topology of ["single", "sentinel", "cluster"] as Topology[]) {
    test(`${topology}: a few minutes draw every fault kind of the topology and every kind of change`, {
      timeout: 120_000,
    }, () => {
      const planner = new Planner(
        options({ topology, minutes: 8, checkpointEvery: 60, seed: 5 }),
        loadFixtureFile(FIXTURE_PATH),
      );
      const faults = new Set<string>();
      const changes = new Set<string>();
      for (let p = 0; p < planner.periods; p++) {
        const plan = planner.period();
        for (const f of plan.faults) faults.add(f.kind);
        for (const e of plan.workload) for (const op of e.operations) changes.add(op.kind);
      }
      const expected = Object.keys(faultWeights(topology, 2)).sort();
      assert.deepEqual([...faults].sort(), expected);
      assert.ok(expected.every((k) => (FAULT_KINDS as readonly string[]).includes(k)));
      assert.deepEqual([...changes].sort(), [...CHANGE_KINDS].sort());

      const without = new Planner(
        options({ topology, minutes: 8, checkpointEvery: 60, seed: 5, without: ["redis.flushall", "stream.close"] }),
        loadFixtureFile(FIXTURE_PATH),
      );
      for (let p = 0; p < without.periods; p++) {
        const kinds = without.period().faults.map((f) => f.kind);
        assert.ok(!kinds.includes("redis.flushall") && !kinds.includes("stream.close"), "--without leaves them out");
      }
    });
  }
});

describe("soak: the invariant checkers", () => {
  const probe = (status: number, pid = 100) => ({ slot: 0, pid, status, role: "writer" });
  /** A lease token of process `pid`, and a write Redis executed at `time` from that process. */
  const token = (pid: number) => `host-${pid}-${"ab".repeat(16)}`;
  const write = (time: number, pid: number) => ({ time, pid, port: 6379, command: "SET k" });

  test("/ready honest: a long stretch of 200 while anchors are missing is a violation, short or broken ones are not", () => {
    const samples = [0, 250, 500, 750, 1000, 1250].map((t) => ({ t, missing: 3, probes: [probe(200)] }));
    assert.equal(readyViolations(samples, 3000).violations.length, 0, "1.25 s is within the limit");
    assert.equal(readyViolations(samples, 1000).violations.length, 1, "1.25 s is beyond a 1 s limit");
    assert.equal(readyViolations(samples, 1000).worstMs, 1250);
    const broken = samples.map((s, i) => (i === 3 ? { ...s, probes: [probe(503)] } : s));
    assert.equal(readyViolations(broken, 1000).violations.length, 0, "a 503 in between ends the stretch");
    const present = samples.map((s) => ({ ...s, missing: 0 }));
    assert.equal(readyViolations(present, 0).worstMs, 0, "nothing is missing: 200 is honest");
    const unknown = samples.map((s, i) => (i % 2 ? { ...s, missing: undefined } : s));
    assert.equal(readyViolations(unknown, 100).violations.length, 0, "Redis not answering proves nothing");
    const restarted = samples.map((s, i) => ({ ...s, probes: [probe(200, i < 3 ? 100 : 101)] }));
    assert.equal(readyViolations(restarted, 600).violations.length, 0, "another process starts its own stretch");
  });

  test("one writer: a write inside an interval two polls prove another process held the lease is a violation", () => {
    assert.equal(tokenPid(token(42)), 42);
    const polls = [
      { sent: 1000, received: 1002, token: token(1) },
      { sent: 1100, received: 1102, token: token(1) },
      { sent: 1200, received: 1202, token: token(2) },
      { sent: 1300, received: 1302, token: token(2) },
      { sent: 1400, received: 1402, token: null },
      { sent: 1500, received: 1502, token: null },
      { sent: 5000, received: 5002, token: null },
    ];
    const { violations: found, excused } = writerViolations(
      [1050, 1050, 1150, 1250, 1250, 1450, 3000, 6000].map((time, i) => write(time, [1, 2, 1, 1, 2, 2, 2, 1][i]!)),
      polls,
    );
    assert.equal(excused.length, 0, "without a grace, nothing is excused");
    assert.deepEqual(
      found.map((v) => [v.write.time, v.write.pid, v.holderPid]),
      [
        [1050, 2, 1],
        [1250, 1, 2],
        [1450, 2, undefined],
      ],
      "pid 2 wrote during pid 1's tenure, pid 1 during pid 2's, pid 2 while nobody held the lease; not judged: " +
        "between polls that saw different tokens (1150), between polls too far apart to prove nobody held the " +
        "lease (3000), after the last poll (6000)",
    );
  });

  test("one writer on Cluster: the last holder writing soon after a fault removed its lease key is excused, nobody else is", () => {
    // pid 1 holds the lease; a FLUSHALL removes the key between the polls at 1100 and 1200; pid 2 takes it at 1800.
    const polls = [
      { sent: 1000, received: 1002, token: token(1) },
      { sent: 1100, received: 1102, token: token(1) },
      ...[1200, 1300, 1400, 1500, 1600, 1700].map((t) => ({ sent: t, received: t + 2, token: null })),
      { sent: 1800, received: 1802, token: token(2) },
      { sent: 1900, received: 1902, token: token(2) },
    ];
    const writes = [write(1250, 1), write(1650, 1), write(1350, 2), write(1850, 1)];
    const cluster = writerViolations(writes, polls, 4000);
    assert.deepEqual(
      cluster.excused.map((w) => [w.time, w.pid]),
      [
        [1250, 1],
        [1650, 1],
      ],
      "the last holder, within its TTL of the key's loss",
    );
    assert.deepEqual(
      cluster.violations.map((v) => [v.write.time, v.write.pid, v.holderPid]),
      [
        [1350, 2, undefined],
        [1850, 1, 2],
      ],
      "another process without the lease, and the old holder once another holds it, are still violations",
    );
    assert.equal(writerViolations(writes, polls, 300).violations.length, 3, "a write later than the grace is one");
    const single = writerViolations(writes, polls, 0);
    assert.equal(single.excused.length, 0, "no grace where a server-side fence refuses such writes");
    assert.equal(single.violations.length, 4);
    // No answer for over a second between the holder's last token and the first empty poll: another tenure fits.
    const blind = [{ sent: 0, received: 2, token: token(1) }, ...polls.filter((p) => p.sent >= 1200)];
    const late = writerViolations([write(1250, 1)], blind, 4000);
    assert.deepEqual([late.excused.length, late.violations.length], [0, 1], "a holder seen long before proves nothing");
  });

  test("one writer: forgetting judged polls keeps the last one that saw a lease, while none has been seen since", () => {
    const poller = new LeasePoller(undefined as never, "lease");
    const at = (t: number, token: string | null) => ({ sent: t, received: t + 2, token });
    poller.polls.push(at(0, "a"), at(100, "host-1-x"), at(200, null), at(300, null), at(400, null));
    poller.forgetBefore(350);
    assert.deepEqual(
      poller.polls.map((p) => p.sent),
      [100, 200, 300, 400],
      "the holder's last poll stays: a write after 350 by pid 1 is judged against it",
    );
    poller.polls.push(at(500, "host-2-y"), at(600, "host-2-y"));
    poller.forgetBefore(650);
    assert.deepEqual(
      poller.polls.map((p) => p.sent),
      [600],
    );
  });

  test("one writer: writes are attributed to a replicator by its shared connections and by its writer's own (Cluster)", () => {
    assert.equal(replicatorPid(redisConnectionName("host-7")), 7);
    assert.equal(replicatorPid(writerConnectionName("host-8")), 8);
    assert.equal(replicatorPid("schematic-soak"), undefined);
    assert.equal(replicatorPid(`ioredis-cluster(refresher):${writerConnectionName("host-8")}`), undefined);
    assert.equal(replicatorPid(undefined), undefined);
  });

  test("one writer: MONITOR ties a write to the replicator whose connection sent it, and names the ones it cannot", async () => {
    const server = await startRedis();
    const recorder = new WriteRecorder([server.port], "schematic:datastream:writer_lock");
    const replicator = new Redis({
      host: "127.0.0.1",
      port: server.port,
      connectionName: redisConnectionName("host-4242"),
    });
    const other = new Redis({ host: "127.0.0.1", port: server.port, connectionName: "someone-else" });
    try {
      await recorder.start();
      // MONITOR starts listening a moment after start(): write until both writes are seen.
      await waitFor(
        async () => {
          await replicator.set("schematic:company:a", "1");
          await other.set("schematic:company:b", "2");
          recorder.resolve();
          return recorder.writes.length > 0 && recorder.unattributed > 0;
        },
        { what: "both writes recorded" },
      );
      assert.deepEqual([recorder.writes[0]!.pid, recorder.writes[0]!.command], [4242, "SET schematic:company:a"]);
      assert.ok(
        recorder.writes.every((w) => w.command === "SET schematic:company:a"),
        "only the replicator's",
      );
      assert.match(
        recorder.unattributedSamples[0]!,
        /^SET schematic:company:b on port \d+ at .* from 127\.0\.0\.1:\d+ \(name someone-else\)$/,
      );
    } finally {
      await recorder.stop();
      replicator.disconnect();
      other.disconnect();
      await server.stop();
    }
  });

  test("one writer: data and control keys are judged; the lease and a load's private scratch sets are not", () => {
    const lease = "schematic:datastream:writer_lock";
    const scheme = new KeyScheme("schematic:", "4b54a537");
    assert.equal(judgedWrite(scheme.companyId("c1"), lease), true);
    assert.equal(judgedWrite("schematic:datastream:replay_cursor", lease), true);
    assert.equal(judgedWrite(scheme.marker(), lease), true);
    assert.equal(judgedWrite(lease, lease), false);
    assert.equal(judgedWrite(scheme.loadSeen("company", "0b9c-0"), lease), false);
  });

  test("clean exits: an exit nobody asked for, or a SIGTERM answered badly or late, is a violation", () => {
    const base = { slot: 0, pid: 7, code: 0, signal: null };
    assert.deepEqual(exitViolations([{ ...base, sent: "SIGTERM", afterMs: 500 }], 15_000), []);
    assert.deepEqual(exitViolations([{ ...base, sent: "SIGKILL", code: null, signal: "SIGKILL" }], 15_000), []);
    assert.equal(exitViolations([{ ...base, code: 1 }], 15_000).length, 1);
    assert.equal(exitViolations([{ ...base, sent: "SIGTERM", code: 1, afterMs: 100 }], 15_000).length, 1);
    assert.equal(exitViolations([{ ...base, sent: "SIGTERM", afterMs: 20_000 }], 15_000).length, 1);
  });

  describe("the SDK sample", () => {
    let s: Stack;
    let engine: RulesEngine;

    before(async () => {
      s = await startStack();
      await s.rep.waitReady();
      engine = await startRulesEngine();
    });

    after(async () => {
      await s?.close();
    });

    const sample = async () =>
      await checkSdkSample({
        rig: { sdkClient: async () => createClient({ url: s.redis.url }) },
        healthUrl: `${s.rep.url}/ready`,
        cacheVersion: KEYS.version,
        dump: await s.admin<Fixture>("GET", "/dump"),
        retired: { company: [], user: [] },
        rand: new Rand(1),
        count: 40,
        engine,
      });

    test("reads Redis as the rules engine evaluates the emulator's state, and notices when companies are lost", {
      timeout: 120_000,
    }, async () => {
      await s.waitConsistent();
      const good = await sample();
      assert.equal(good.checks, 40);
      assert.deepEqual(good.mismatches, []);
      assert.deepEqual(good.apiCalls, []);

      for (const key of await scanKeys(s.client, "schematic:company:*")) await s.client.del(key);
      const bad = await sample();
      assert.ok(bad.mismatches.length > 0, "checks with a company context no longer find it");
      assert.match(bad.mismatches[0]!, /"companyId":null/);
    });
  });
});

describe("soak: a short fixed-seed run", { timeout: 900_000 }, () => {
  let dir: string;

  before(async () => {
    dir = await buildInto(mkdtempSync(join(tmpdir(), "soak-build-")));
  });

  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("one minute on a single node with two replicators holds every checkpoint", { timeout: 900_000 }, async (t) => {
    const json = join(dir, "summary.json");
    // Seed 63 draws, at the time of writing, Redis killed and restarted empty, a FLUSHALL, Redis paused, a writer
    // handover, a replicator killed and another frozen, REST errors, the replay log exceeded during a burst, datastream
    // closes and cuts.
    const args = "--minutes 1 --seed 63 --topology single --replicators 2 --checkpoint-every 30".split(" ");
    const { code, stdout, stderr } = await runNode(
      ["--import", "tsx", join(ROOT, "soak/run.ts"), ...args, "--root", dir, "--out", join(dir, "out"), "--json", json],
      ROOT,
      {},
      850_000,
    );
    const output = stdout + stderr;
    assert.equal(code, 0, `the soak failed:\n${output.slice(-6000)}`);
    const summary = JSON.parse(readFileSync(json, "utf8")) as SoakResult;
    t.diagnostic(output.slice(output.indexOf("==== soak summary")));
    assert.equal(summary.held, true);
    assert.equal(summary.checkpoints.length, 3, "the initial checkpoint and one per 30 s period");
    assert.ok(summary.checkpoints.every((c) => c.held && c.verifyCode === 0 && c.sdkChecks > 0));
    const injected = summary.faults.filter((f) => f.injected > 0);
    assert.ok(injected.length >= 5, `faults of at least 5 kinds were injected: ${JSON.stringify(injected)}`);
    assert.ok(summary.changes.total > 1000 && summary.changes.bursts > 0 && summary.changes.trickled > 0);
    assert.ok(summary.invariants.writesJudged > 0, "the write recorder attributed writes to the replicators");
    assert.equal(summary.invariants.writerViolations, 0);
    assert.equal(summary.invariants.readyViolations, 0);
  });
});
