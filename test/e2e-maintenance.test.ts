/**
 * End to end, keyspace maintenance (real replicator processes against private redis-servers, one emulator):
 *
 * - CACHE_TTL=30s: every cache key (flags, companies, users, lookups) carries an expiry of at most 30 s, also
 *   after a change; the control keys (`datastream:*`: marker, lease, cursor) carry none.
 * - CACHE_TTL unset: no key has an expiry.
 * - CACHE_CLEANUP_INTERVAL=500ms: keys of other cache versions are removed (present at start-up, and written
 *   later), while the current version's keys and unrelated keys (`schematic:credit-lease:*`, `other:*`, …) stay.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import type { Redis } from "ioredis";
import { loadFixtureFile, type RunningEmulator, startEmulator } from "../src/emulator/index.js";
import { admin, defaultKeys, scanKeys, waitInSync } from "./helpers/e2e.js";
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

  /** Every key with its PTTL (-1: no expiry). */
  async function expiries(db: Redis): Promise<Map<string, number>> {
    const all = await scanKeys(db);
    const pipe = db.pipeline();
    for (const k of all) pipe.pttl(k);
    const res = (await pipe.exec()) ?? [];
    return new Map(all.map((k, i) => [k, res[i]?.[1] as number]));
  }

  function assertTtls(ttls: Map<string, number>): void {
    const problems: string[] = [];
    let cacheKeys = 0;
    for (const [key, pttl] of ttls) {
      if (key === LOCK_KEY) {
        // The writer lease expires by design, on its own clock (WRITER_LOCK_TTL), not CACHE_TTL's.
        if (!(pttl > 0 && pttl <= 6000)) problems.push(`${key}: PTTL ${pttl}, expected the lease's ≤ 6000 ms`);
      } else if (key.startsWith("schematic:datastream:")) {
        if (pttl !== -1) problems.push(`${key}: control key with an expiry (${pttl} ms)`);
      } else if (keys.versionOf(key) === keys.version) {
        cacheKeys++;
        if (!(pttl > 0 && pttl <= 30_000)) problems.push(`${key}: PTTL ${pttl}, expected 0 < PTTL ≤ 30000`);
      } else problems.push(`${key}: unexpected key`);
    }
    assert.deepEqual(problems, []);
    assert.ok(cacheKeys > 300, `${cacheKeys} cache keys checked`);
    assert.ok(ttls.has(keys.marker()), "the readiness marker is there");
    assert.ok(ttls.has(LOCK_KEY), "the lease is there");
  }

  test("CACHE_TTL=30s: every cache key expires within 30 s, control keys never; also after changes", async () => {
    await waitInSync(ttlDb, emu.url, { expectTtl: true });
    assertTtls(await expiries(ttlDb));

    await admin(emu.url, "PATCH", "/companies/comp_wayne", { keys: { crm: "CRM-Wayne" } });
    await waitInSync(ttlDb, emu.url, { expectTtl: true });
    const ttls = await expiries(ttlDb);
    assert.ok(ttls.has(keys.companyLookups("crm", "CRM-Wayne")[0]!), "the change arrived");
    assertTtls(ttls);
  });

  test("CACHE_TTL unset: no key has an expiry", async () => {
    await waitInSync(cleanDb, emu.url, { expectTtl: false });
    const withTtl = [...(await expiries(cleanDb))].filter(([k, pttl]) => pttl !== -1 && k !== LOCK_KEY);
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
