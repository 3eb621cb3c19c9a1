/**
 * The rules-engine data model as it travels on Schematic's datastream (snake_case JSON), and as the official
 * SDKs read it back from Redis. Field lists follow SchematicHQ/rulesengine models.go (see
 * docs/reference/protocol.md §4); the order of the `*_FIELDS` arrays is the Go struct order, which is the order
 * in which the replicator writes keys.
 */

export type RuleType =
  | "global_override"
  | "company_override"
  | "company_override_usage_exceeded"
  | "plan_entitlement"
  | "plan_entitlement_usage_exceeded"
  | "standard"
  | "default";

export type ConditionType =
  | "base_plan"
  | "billing_product"
  | "company"
  | "credit"
  | "metric"
  | "plan"
  | "plan_version"
  | "trait"
  | "user";

export type Operator = "eq" | "ne" | "gt" | "lt" | "gte" | "lte" | "is_empty" | "not_empty";
export type MetricPeriod = "all_time" | "current_day" | "current_week" | "current_month";
export type MonthReset = "first_of_month" | "billing_cycle";
export type ComparableType = "bool" | "date" | "int" | "string";
export type TraitEntityType = "company" | "user";
export type EntitlementValueType = "boolean" | "credit" | "numeric" | "trait" | "unknown" | "unlimited";

export const RULE_TYPES: readonly RuleType[] = [
  "global_override",
  "company_override",
  "company_override_usage_exceeded",
  "plan_entitlement",
  "plan_entitlement_usage_exceeded",
  "standard",
  "default",
];
export const CONDITION_TYPES: readonly ConditionType[] = [
  "base_plan",
  "billing_product",
  "company",
  "credit",
  "metric",
  "plan",
  "plan_version",
  "trait",
  "user",
];
export const OPERATORS: readonly Operator[] = ["eq", "ne", "gt", "lt", "gte", "lte", "is_empty", "not_empty"];
export const METRIC_PERIODS: readonly MetricPeriod[] = ["all_time", "current_day", "current_week", "current_month"];
export const MONTH_RESETS: readonly MonthReset[] = ["first_of_month", "billing_cycle"];
export const COMPARABLE_TYPES: readonly ComparableType[] = ["bool", "date", "int", "string"];
export const TRAIT_ENTITY_TYPES: readonly TraitEntityType[] = ["company", "user"];
export const ENTITLEMENT_VALUE_TYPES: readonly EntitlementValueType[] = [
  "boolean",
  "credit",
  "numeric",
  "trait",
  "unknown",
  "unlimited",
];

export interface TraitDefinition {
  id: string;
  comparable_type: ComparableType;
  entity_type: TraitEntityType;
}

export interface Condition {
  id: string;
  account_id: string;
  environment_id: string;
  condition_type: ConditionType;
  operator: Operator;
  resource_ids: string[];
  event_subtype: string | null;
  metric_value: number | null;
  metric_period: MetricPeriod | null;
  metric_period_month_reset: MonthReset | null;
  credit_id: string | null;
  consumption_rate: number | null;
  trait_definition: TraitDefinition | null;
  trait_value: string;
  comparison_trait_definition: TraitDefinition | null;
}

export interface ConditionGroup {
  conditions: Condition[];
}

export interface Rule {
  id: string;
  flag_id: string | null;
  account_id: string;
  environment_id: string;
  rule_type: RuleType;
  name: string;
  priority: number;
  conditions: Condition[];
  condition_groups: ConditionGroup[];
  value: boolean;
}

export interface Flag {
  id: string;
  account_id: string;
  environment_id: string;
  key: string;
  rules: Rule[];
  default_value: boolean;
}

export interface Trait {
  trait_definition: TraitDefinition | null;
  value: string;
}

export interface CompanyMetric {
  account_id: string;
  environment_id: string;
  company_id: string;
  event_subtype: string;
  period: MetricPeriod;
  month_reset: MonthReset;
  value: number;
  created_at: string;
  valid_until: string | null;
}

export interface Subscription {
  id: string;
  period_start: string;
  period_end: string;
}

export interface WarningTier {
  key: string;
  value: number;
}

export interface FeatureEntitlement {
  allocation?: number | null;
  consumption_rate?: number | null;
  credit_id?: string | null;
  credit_remaining?: number | null;
  credit_reserved?: number | null;
  credit_settled?: number | null;
  credit_total?: number | null;
  credit_used?: number | null;
  event_name?: string | null;
  event_subtype?: string | null;
  feature_id: string;
  feature_key: string;
  metric_period?: MetricPeriod | null;
  metric_reset_at?: string | null;
  month_reset?: MonthReset | null;
  soft_limit?: number | null;
  usage?: number | null;
  value_type: EntitlementValueType;
  warning_tiers?: WarningTier[];
}

export interface Company {
  id: string;
  account_id: string;
  environment_id: string;
  base_plan_id: string | null;
  billing_product_ids: string[];
  credit_balances: Record<string, number>;
  entitlements?: FeatureEntitlement[];
  keys: Record<string, string>;
  metrics: CompanyMetric[];
  plan_ids: string[];
  plan_version_ids: string[];
  rules: Rule[];
  subscription: Subscription | null;
  traits: Trait[];
}

export interface User {
  id: string;
  account_id: string;
  environment_id: string;
  keys: Record<string, string>;
  traits: Trait[];
  rules: Rule[];
}

/** Go struct field order of each model (rulesengine models.go). */
export const FLAG_FIELDS = ["id", "account_id", "environment_id", "key", "rules", "default_value"] as const;
export const COMPANY_FIELDS = [
  "id",
  "account_id",
  "environment_id",
  "base_plan_id",
  "billing_product_ids",
  "credit_balances",
  "entitlements",
  "keys",
  "metrics",
  "plan_ids",
  "plan_version_ids",
  "rules",
  "subscription",
  "traits",
] as const;
export const USER_FIELDS = ["id", "account_id", "environment_id", "keys", "traits", "rules"] as const;

// ---------------------------------------------------------------------------------------------------------------
// Envelopes

export const ENTITY_TYPES = {
  company: "rulesengine.Company",
  companies: "rulesengine.Companies",
  user: "rulesengine.User",
  users: "rulesengine.Users",
  flag: "rulesengine.Flag",
  flags: "rulesengine.Flags",
} as const;
export type EntityType = (typeof ENTITY_TYPES)[keyof typeof ENTITY_TYPES];

export type MessageType = "full" | "partial" | "delete" | "error" | "reload";

/** Server → client frame. */
export interface DataStreamResp {
  entity_type: string;
  message_type: MessageType | string;
  entity_id?: string | null;
  data?: unknown;
  stream_id?: string;
}

/** Client → server frame: `{"data": DataStreamReq}`. */
export interface DataStreamReq {
  action?: "start" | "stop" | "";
  entity_type: string;
  keys?: Record<string, string>;
  replay_from?: string;
  page_size?: number;
}

/** The emulator's fixture / dump format, also `snapshot export`'s. */
export interface Fixture {
  flags: Flag[];
  companies: Company[];
  users: User[];
}
