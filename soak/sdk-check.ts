/**
 * The SDK part of a quiet checkpoint: the official TypeScript SDK in replicator mode, reading only Redis, evaluates a
 * seeded sample of checks, and each result must equal what the SDK's own rules engine gives for the emulator's
 * current state (the flag, company and user found by the same keys, case-insensitively, in `GET /_emulator/dump`).
 * Contexts use current keys in random letter case, and keys entities have given up (renamed away, deleted, moved):
 * those must resolve to their new owner or to nothing, never to a stale entity.
 */
import sdk from "@schematichq/schematic-typescript-node";
import type { Company, Fixture, User } from "../src/model/wire.js";
import { comparable, type SdkResult } from "../test/helpers/e2e.js";
import type { Context } from "../test/helpers/sdk-table.js";
import { startSdkOn } from "../test/helpers/topology.js";
import type { Rand } from "./random.js";
import type { RedisRig } from "./rig.js";

export type RulesEngine = InstanceType<typeof sdk.RulesEngineClient>;

export async function startRulesEngine(): Promise<RulesEngine> {
  const engine = new sdk.RulesEngineClient();
  await engine.initialize();
  return engine;
}

export interface SdkSampleResult {
  checks: number;
  mismatches: string[];
  /** Requests the SDK sent to the Schematic API (a stub): any means something was missing from Redis. */
  apiCalls: string[];
}

type Keyed = { keys: Record<string, string> };

function find<T extends Keyed>(list: T[], keys: Record<string, string> | undefined): T | undefined {
  if (!keys) return undefined;
  const [[name, value]] = Object.entries(keys) as [[string, string]];
  return list.find((e) =>
    Object.entries(e.keys).some(
      ([n, v]) => n.toLowerCase() === name.toLowerCase() && v.toLowerCase() === value.toLowerCase(),
    ),
  );
}

function recase(rand: Rand, value: string): string {
  const how = rand.int(0, 2);
  return how === 0 ? value : how === 1 ? value.toUpperCase() : value.toLowerCase();
}

/** One context: a company and/or a user named by one key, current or given up. */
function context(
  rand: Rand,
  dump: Fixture,
  retired: { company: [string, string][]; user: [string, string][] },
): Context {
  const pickKey = (e: Keyed): Record<string, string> => {
    const [name, value] = rand.pick(Object.entries(e.keys));
    return { [name]: recase(rand, value) };
  };
  const kind = rand.weighted({ company: 35, both: 20, user: 15, oldCompany: 15, oldUser: 10, oldBoth: 5 });
  const ctx: Context = {};
  if ((kind === "company" || kind === "both") && dump.companies.length > 0)
    ctx.company = pickKey(rand.pick(dump.companies));
  if ((kind === "user" || kind === "both") && dump.users.length > 0) ctx.user = pickKey(rand.pick(dump.users));
  if ((kind === "oldCompany" || kind === "oldBoth") && retired.company.length > 0) {
    const [n, v] = rand.pick(retired.company);
    ctx.company = { [n]: recase(rand, v) };
  }
  if ((kind === "oldUser" || kind === "oldBoth") && retired.user.length > 0) {
    const [n, v] = rand.pick(retired.user);
    ctx.user = { [n]: recase(rand, v) };
  }
  return ctx;
}

export async function checkSdkSample(opts: {
  rig: Pick<RedisRig, "sdkClient">;
  healthUrl: string;
  cacheVersion: string;
  dump: Fixture;
  retired: { company: [string, string][]; user: [string, string][] };
  rand: Rand;
  count: number;
  engine: RulesEngine;
}): Promise<SdkSampleResult> {
  const { dump, rand, engine } = opts;
  const viaRedis = await startSdkOn(await opts.rig.sdkClient(), opts.healthUrl, opts.cacheVersion);
  const mismatches: string[] = [];
  try {
    for (let i = 0; i < opts.count; i++) {
      const ctx = context(rand, dump, opts.retired);
      const flag = rand.pick(dump.flags);
      const company: Company | undefined = find(dump.companies, ctx.company);
      const user: User | undefined = find(dump.users, ctx.user);
      const expected = await engine.checkFlag(flag, company ?? null, user ?? null);
      const got: SdkResult = await viaRedis.client.checkFlagWithEntitlement(ctx, flag.key);
      const want = JSON.stringify(comparable(expected as unknown as SdkResult));
      const have = JSON.stringify(comparable(got));
      if (want !== have) mismatches.push(`${flag.key} for ${JSON.stringify(ctx)}: SDK ${have}, expected ${want}`);
    }
    return { checks: opts.count, mismatches, apiCalls: [...viaRedis.stub.calls] };
  } finally {
    await viaRedis.close();
  }
}
