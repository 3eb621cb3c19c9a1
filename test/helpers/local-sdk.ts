/**
 * The reference every SDK mode is held to: the official SDK's own rules engine (`RulesEngineClient`) evaluating
 * a data set locally, as the SDK does in datastream and replicator modes — the company and user found by their
 * keys (the first pair that matches, ignoring case, as lookups and Redis keys do), the result mapped as the SDK
 * maps it. A flag the data lacks gives what the SDK gives when the API answers 404: its default, "flag default".
 */
import sdk from "@schematichq/schematic-typescript-node";
import type { Fixture } from "../../src/model/wire.js";
import type { Context } from "./sdk-table.js";

/** The fields of a check result every mode must agree on (the shape of e2e.ts's `comparable`). */
export interface Comparable {
  value: boolean;
  reason: string;
  ruleId: string | null;
  ruleType: string | null;
  flagId: string | null;
  companyId: string | null;
  userId: string | null;
  err: string | null;
}

export type Preflight = { usage?: number; eventUsage?: { eventSubtype: string; quantity: number } } & {
  creditCost?: Record<string, number>;
};

function byKeys<T extends { keys: Record<string, string> }>(
  entities: T[],
  keys: Record<string, string> | undefined,
): T | null {
  for (const [name, value] of Object.entries(keys ?? {})) {
    const hit = entities.find((e) =>
      Object.entries(e.keys).some(
        ([n, v]) => n.toLowerCase() === name.toLowerCase() && v.toLowerCase() === value.toLowerCase(),
      ),
    );
    if (hit) return hit;
  }
  return null;
}

export class LocalSdk {
  private constructor(private readonly engine: InstanceType<typeof sdk.RulesEngineClient>) {}

  static async start(): Promise<LocalSdk> {
    const engine = new sdk.RulesEngineClient();
    await engine.initialize();
    return new LocalSdk(engine);
  }

  async check(data: Fixture, ctx: Context, flagKey: string, preflight?: Preflight): Promise<Comparable> {
    const flag = data.flags.find((f) => f.key.toLowerCase() === flagKey.toLowerCase());
    const none = { ruleId: null, ruleType: null, flagId: null, companyId: null, userId: null, err: null };
    if (!flag) return { value: false, reason: "flag default", ...none };
    const company = byKeys(data.companies, ctx.company);
    const user = byKeys(data.users, ctx.user);
    const r = await this.engine.checkFlagWithOptions(flag, company, user, preflight ?? null);
    return {
      value: r.value ?? flag.default_value,
      reason: r.reason || "RULES_ENGINE_EVALUATION",
      ruleId: r.ruleId ?? null,
      ruleType: r.ruleType ?? null,
      flagId: flag.id,
      companyId: company?.id ?? null,
      userId: user?.id ?? null,
      err: null,
    };
  }
}
