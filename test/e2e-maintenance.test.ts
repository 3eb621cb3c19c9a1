/**
 * End to end, keyspace maintenance (real replicator processes against private redis-servers, one emulator):
 *
 * - CACHE_TTL=30s: every cache key (flags, companies, users, lookups) carries an expiry of at most 30 s, also
 *   after a change; the marker and the replay cursor expire too, never after any cache key (they vouch for them).
 * - CACHE_TTL=6s and every replicator stopped for longer than that: the data expired, and so did the marker, so
 *   the next replicators load everything again; none of them says ready before the data is back.
 * - CACHE_TTL unset: no key has an expiry.
 * - CACHE_CLEANUP_INTERVAL=500ms: keys of other cache versions are removed (present at start-up, and written
 *   later), while the current version's keys and unrelated keys (`schematic:credit-lease:*`, `other:*`, …) stay.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import type { Redis } from "ioredis";
import { loadFixtureFile, type RunningEmulator, startEmulator } from "../src/emulator/index.js";
import { diffRedis } from "../src/verify/diff.js";
import { admin, defaultKeys, emulatorDump, scanKeys, waitInSync } from "./helpers/e2e.js";
import { type RedisServer, startRedis, waitFor } from "./helpers/redis.js";
import { type ReplicatorProcess, startReplicator, testEnv } from "./helpers/replicator.js";

const FIXTURE_FILE = fileURLToPath(new URL("../examples/fixture.json", import.meta.url));
const keys = defaultKeys();
const LOCK_KEY = "schematic:datastream:writer_lock";
/** Long enough to survive event-loop stalls on a busy machine. */
const LOCK_TTL = "6s";

/** Cache keys of another version, in every shape the cleanup must recognise. */
const OLD_VERSION_KEYS = [
  "schematic:flags:oldver:x",
  "schematic:company:oldver:c1",
  "schematic:company:oldver:domain:old.example",
  "schematic:user:oldver:u1",
  "schematic:user:oldver:email:old@example.com",
];
/** Keys that are not cache keys of another version: never touched. */
const UNRELATED_KEYS = [
  "schematic:credit-lease:x",
  "schematic:credit-lease:comp_acme:credit_ai",
  "schematic:datastream:something-else",
  "schematic:flags",
  "schematic:company:oldver",
  "other:key",
  "other:schematic:flags:oldver:x",
];

/** Every key with its PTTL (-1: no expiry), read in one transaction (a consistent picture of the expiries). */
async function expiries(db: Redis): Promise<Map<string, number>> {
  const all = await scanKeys(db);
  const tx = db.multi();
  for (const k of all) tx.pttl(k);
  const res = (await tx.exec()) ?? [];
  return new Map(all.map((k, i) => [k, res[i]?.[1] as number]));
}

describe("end to end: CACHE_TTL and the cleanup of other cache versions", () => {
  let emu: RunningEmulator;
  let ttlRedis: RedisServer;
  let cleanRedis: RedisServer;
  let ttlDb: Redis;
  let cleanDb: Redis;
  let ttlRep: ReplicatorProcess;
  let cleanRep: ReplicatorProcess;

  before(async () => {
    [emu, ttlRedis, cleanRedis] = await Promise.all([
      startEmulator({ fixture: loadFixtureFile(FIXTURE_FILE) }),
      startRedis(),
      startRedis(),
    ]);
    ttlDb = ttlRedis.client();
    cleanDb = cleanRedis.client();
    for (const k of [...OLD_VERSION_KEYS, ...UNRELATED_KEYS]) await cleanDb.set(k, '"seeded"');
    [ttlRep, cleanRep] = await Promise.all([
      startReplicator(
        testEnv({ SCHEMATIC_API_URL: emu.url, REDIS_ADDR: ttlRedis.addr, CACHE_TTL: "30s", WRITER_LOCK_TTL: LOCK_TTL }),
      ),
      startReplicator(
        testEnv({
          SCHEMATIC_API_URL: emu.url,
          REDIS_ADDR: cleanRedis.addr,
          CACHE_CLEANUP_INTERVAL: "500ms",
          WRITER_LOCK_TTL: LOCK_TTL,
        }),
      ),
    ]);
    await Promise.all([ttlRep.waitReady(90_000), cleanRep.waitReady(90_000)]);
  });

  after(async () => {
    await Promise.all([ttlRep?.stop(), cleanRep?.stop()]);
    await Promise.all([ttlRedis?.stop(), cleanRedis?.stop()]);
    await emu?.close();
  });

  function assertTtls(ttls: Map<string, number>, { cursor = false } = {}): void {
    const problems: string[] = [];
    let cacheKeys = 0;
    let soonest = Number.POSITIVE_INFINITY;
    for (const [key, pttl] of ttls) {
      if (keys.versionOf(key) !== keys.version) continue;
      cacheKeys++;
      soonest = Math.min(soonest, pttl);
      if (!(pttl > 0 && pttl <= 30_000)) problems.push(`${key}: PTTL ${pttl}, expected 0 < PTTL ≤ 30000`);
    }
    for (const [key, pttl] of ttls) {
      if (key === LOCK_KEY) {
        // The writer lease expires by design, on its own clock (WRITER_LOCK_TTL), not CACHE_TTL's.
        if (!(pttl > 0 && pttl <= 6000)) problems.push(`${key}: PTTL ${pttl}, expected the lease's ≤ 6000 ms`);
      } else if (key.startsWith("schematic:datastream:")) {
        // Read in one transaction with the cache keys: a marker or cursor outliving one of them would vouch for it.
        if (!(pttl > 0 && pttl <= soonest)) problems.push(`${key}: PTTL ${pttl}, expected 0 < PTTL ≤ ${soonest}`);
      } else if (keys.versionOf(key) !== keys.version) problems.push(`${key}: unexpected key`);
    }
    assert.deepEqual(problems, []);
    assert.ok(cacheKeys > 300, `${cacheKeys} cache keys checked`);
    assert.ok(ttls.has(keys.marker()), "the readiness marker is there");
    if (cursor) assert.ok(ttls.has("schematic:datastream:replay_cursor"), "the replay cursor is there");
    assert.ok(ttls.has(LOCK_KEY), "the lease is there");
  }

  test("CACHE_TTL=30s: every cache key expires within 30 s, the marker and cursor no later; also after changes", async () => {
    await waitInSync(ttlDb, emu.url, { expectTtl: true });
    assertTtls(await expiries(ttlDb));

    const { stream_id: last } = await admin(emu.url, "PATCH", "/companies/comp_wayne", { keys: { crm: "CRM-Wayne" } });
    await waitInSync(ttlDb, emu.url, { expectTtl: true });
    await waitFor(async () => (await ttlDb.get("schematic:datastream:replay_cursor")) === last, {
      what: "the replay cursor to be saved",
    });
    const ttls = await expiries(ttlDb);
    assert.ok(ttls.has(keys.companyLookups("crm", "CRM-Wayne")[0]!), "the change arrived");
    assertTtls(ttls, { cursor: true });
  });

  test("CACHE_TTL unset: no key has an expiry", async () => {
    await waitInSync(cleanDb, emu.url, { expectTtl: false });
    const withTtl = [...(await expiries(cleanDb))].filter(([k, pttl]) => pttl !== -1 && k !== LOCK_KEY);
    assert.ok((await expiries(cleanDb)).has(keys.marker()), "the marker is there, without an expiry");
    assert.deepEqual(withTtl, []);
  });

  test("CACHE_CLEANUP_INTERVAL=500ms: other versions' keys go, current and unrelated keys stay", async () => {
    const exists = async (k: string) => (await cleanDb.exists(k)) === 1;
    await waitFor(async () => !(await Promise.all(OLD_VERSION_KEYS.map(exists))).some(Boolean), {
      timeoutMs: 60_000,
      what: "the keys of the old version to be removed",
    });
    // Written while the replicator runs: removed by a later pass.
    await cleanDb.set("schematic:flags:olderver:late", "{}");
    await cleanDb.set("schematic:company:olderver:comp_late", "{}");
    await waitFor(
      async () =>
        !(await exists("schematic:flags:olderver:late")) && !(await exists("schematic:company:olderver:comp_late")),
      { timeoutMs: 60_000, what: "keys of another version written later to be removed" },
    );
    for (const k of UNRELATED_KEYS) assert.equal(await cleanDb.get(k), '"seeded"', `${k} is kept`);
    await waitInSync(cleanDb, emu.url);
    const all = await scanKeys(cleanDb);
    assert.ok(all.filter((k) => keys.versionOf(k) === keys.version).length > 300, "the current version is intact");
  });
});

describe("end to end: CACHE_TTL=6s and every replicator stopped for longer than that", () => {
  let emu: RunningEmulator;
  let redis: RedisServer;
  let db: Redis;
  const reps: ReplicatorProcess[] = [];

  before(async () => {
    [emu, redis] = await Promise.all([startEmulator({ fixture: loadFixtureFile(FIXTURE_FILE) }), startRedis()]);
    db = redis.client();
  });
  after(async () => {
    await Promise.all(reps.map((r) => r.stop("SIGKILL")));
    await redis?.stop();
    await emu?.close();
  });

  test("the marker expires with the data: the next replicators load everything and say ready only then", {
    timeout: 120_000,
  }, async () => {
    const env = testEnv({ SCHEMATIC_API_URL: emu.url, REDIS_ADDR: redis.addr, CACHE_TTL: "6s", WRITER_LOCK_TTL: "3s" });
    const first = await startReplicator(env);
    reps.push(first);
    await first.waitReady(90_000);
    await waitInSync(db, emu.url, { expectTtl: true });
    assert.equal(await first.stop(), 0);
    await new Promise((r) => setTimeout(r, 9000));
    const companies = async () => (await scanKeys(db, keys.scanPattern("company"))).length;
    assert.equal(await companies(), 0, "the cache expired while no replicator ran");

    // Two at once: one takes the lease, the other stands by; /ready of each may say 200 only over the whole data set.
    const next = await Promise.all([startReplicator(env), startReplicator(env)]);
    reps.push(...next);
    const ready = new Set<ReplicatorProcess>();
    const untrue: string[] = [];
    await waitFor(
      async () => {
        for (const rep of next) {
          if (ready.has(rep) || (await rep.ready()).status !== 200) continue;
          const { differences } = await diffRedis(db, keys, await emulatorDump(emu.url), { expectTtl: true });
          if (differences.length > 0) {
            const role = (await rep.health()).body.role;
            untrue.push(`/ready 200 (${role}) with ${differences.length} differences, e.g. ${differences[0]?.key}`);
          }
          ready.add(rep);
        }
        return untrue.length > 0 || ready.size === next.length;
      },
      { timeoutMs: 90_000, intervalMs: 100, what: "both replicators to be ready" },
    );
    assert.deepEqual(untrue, []);
    assert.ok((await companies()) > 0);
  });
});
