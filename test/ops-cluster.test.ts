/**
 * The operator tools on a Redis Cluster (3 masters): keys of one snapshot spread over every master, so import must
 * write and delete through per-node single-key commands, and verify and export must SCAN every master.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Cluster } from "ioredis";
import { loadFixtureFile } from "../src/emulator/index.js";
import { expectedCompany, sameEntity } from "../src/model/equivalence.js";
import { type RedisClusterServer, startCluster } from "./helpers/cluster.js";
import { FIXTURE, runCli, VERSION } from "./ops-helpers.js";

describe("verify and snapshots on a Redis Cluster", { timeout: 180_000 }, () => {
  let cluster: RedisClusterServer;
  let client: Cluster;
  let dir: string;
  let env: Record<string, string>;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "ops-cluster-"));
    cluster = await startCluster({ masters: 3 });
    await cluster.waitHealthy({ replicas: false });
    client = cluster.client();
    env = { REDIS_CLUSTER_ADDRS: cluster.seeds };
  });

  after(async () => {
    await cluster?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("import writes across every master; verify and export see all of it; extras are found and removed", async () => {
    const imported = await runCli(["snapshot", "import", FIXTURE], env);
    assert.equal(imported.code, 0, imported.stdout + imported.stderr);
    assert.match(imported.stdout, /464 keys written, 0 removed/);
    // The keys really are spread out.
    const perMaster = await Promise.all(client.nodes("master").map((n) => n.dbsize()));
    assert.ok(perMaster.filter((n) => n > 0).length >= 2, `keys on several masters: ${perMaster}`);

    const inSync = await runCli(["verify", "--source", FIXTURE], env);
    assert.equal(inSync.code, 0, inSync.stdout + inSync.stderr);

    const file = join(dir, "cluster.json");
    const exported = await runCli(["snapshot", "export", file], env);
    assert.equal(exported.code, 0, exported.stdout + exported.stderr);
    const snapshot = loadFixtureFile(file);
    const original = loadFixtureFile(FIXTURE);
    assert.equal(snapshot.flags.length, original.flags.length);
    assert.equal(snapshot.users.length, original.users.length);
    for (const c of original.companies) {
      const e = snapshot.companies.find((x) => x.id === c.id);
      assert.ok(e && sameEntity(expectedCompany(e), expectedCompany(c)), c.id);
    }

    const extras = ["ghost-a", "ghost-b", "ghost-c", "ghost-d"].map((k) => `schematic:flags:${VERSION}:${k}`);
    for (const key of extras) await client.set(key, "{}");
    const drift = await runCli(["verify", "--source", FIXTURE], env);
    assert.equal(drift.code, 1);
    assert.deepEqual(
      drift.stdout.trim().split("\n").slice(0, -1),
      extras.map((k) => `extra ${k}`),
    );

    const again = await runCli(["snapshot", "import", file], env);
    assert.equal(again.code, 0, again.stdout + again.stderr);
    assert.match(again.stdout, /464 keys written, 4 removed/);
    const clean = await runCli(["verify", "--source", FIXTURE], env);
    assert.equal(clean.code, 0, clean.stdout);
  });
});
