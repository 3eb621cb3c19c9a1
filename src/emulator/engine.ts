/**
 * Flag evaluation for the REST check endpoints: the WASM rules engine bundled with the official TypeScript SDK,
 * through the SDK's own `RulesEngineClient`, called as the SDK calls it when it evaluates locally (datastream and
 * replicator modes), so a REST answer is the SDK's local answer. Loaded on the first check: a replicator-only or
 * benchmark emulator never pays for the engine.
 */
import type { RulesEngineClient } from "@schematichq/schematic-typescript-node";
import type { Company, Flag, User } from "../model/wire.js";

const SDK = "@schematichq/schematic-typescript-node";

/** A check's preflight: hypothetical usage, as the SDK hands it to the engine (`CheckFlagOptions`). */
export interface Preflight {
  creditCost?: Record<string, number>;
  usage?: number;
  eventUsage?: { eventSubtype: string; quantity: number };
}

/** One flag evaluated, in the SDK's terms (`RulesengineCheckFlagResult`; the entitlement as the engine gives it). */
export interface Evaluation {
  flagKey: string;
  flagId: string;
  value: boolean;
  reason: string;
  ruleId?: string;
  ruleType?: string;
  companyId?: string;
  userId?: string;
  err?: string;
  entitlement?: Record<string, unknown>;
  /** The deprecated featureAllocation … featureUsageResetAt figures, when the engine reports them. */
  usage: Record<string, unknown>;
}

let loading: Promise<RulesEngineClient> | undefined;

function engine(): Promise<RulesEngineClient> {
  loading ??= (async () => {
    const mod = (await import(SDK)) as { RulesEngineClient?: new () => RulesEngineClient };
    const Client = mod.RulesEngineClient ?? (mod as { default: typeof mod }).default.RulesEngineClient;
    if (!Client) throw new Error(`${SDK} exports no RulesEngineClient`);
    const client = new Client();
    await client.initialize();
    return client;
  })();
  loading.catch(() => {
    loading = undefined;
  });
  return loading;
}

const USAGE_FIGURES = [
  "featureAllocation",
  "featureUsage",
  "featureUsageEvent",
  "featureUsagePeriod",
  "featureUsageResetAt",
] as const;

/**
 * Evaluates `flag` for a company and user (null when the request named none or none matched), with the same
 * fallbacks as the SDK's local evaluation: the flag's default when the engine gives no value, and
 * `RULES_ENGINE_ERROR` with the default when the engine rejects the data.
 */
export async function evaluate(
  flag: Flag,
  company: Company | null,
  user: User | null,
  preflight?: Preflight,
): Promise<Evaluation> {
  const base = { flagKey: flag.key, flagId: flag.id, companyId: company?.id, userId: user?.id, usage: {} };
  let result: Awaited<ReturnType<RulesEngineClient["checkFlagWithOptions"]>>;
  try {
    result = await (await engine()).checkFlagWithOptions(flag, company, user, preflight ?? null);
  } catch (err) {
    return { ...base, value: flag.default_value, reason: "RULES_ENGINE_ERROR", err: (err as Error).message };
  }
  const usage: Record<string, unknown> = {};
  for (const k of USAGE_FIGURES) if (result[k] !== undefined && result[k] !== null) usage[k] = result[k];
  return {
    ...base,
    value: result.value ?? flag.default_value,
    reason: result.reason || "RULES_ENGINE_EVALUATION",
    ruleId: result.ruleId ?? undefined,
    ruleType: result.ruleType ?? undefined,
    err: result.err || undefined,
    entitlement: (result.entitlement as Record<string, unknown> | null | undefined) ?? undefined,
    usage,
  };
}
