/**
 * Validation and normalisation of the datastream wire entities (Flag, Company, User), driven by one table of
 * fields per type and one walker, used at two strictness levels:
 *
 * - `"wire"`: as strict as the official TypeScript SDK parses the stream (docs/reference/protocol.md §4):
 *   every required field present and non-null, lists `[]` and maps `{}` never `null`, enum values known,
 *   ISO 8601 timestamps, at least one key per company and user, a non-empty id. Used for fixtures and the
 *   emulator's admin bodies.
 * - `"engine"`: what the replicator accepts before writing to Redis: only the fields the WASM rules engine
 *   requires must be present (docs/reference/sdk-replicator-mode.md), types valid, and the enums the engine is
 *   strict about known (rule_type, entitlement value_type, metric period). Absent lists become `[]`, absent maps
 *   `{}`, absent nullable fields `null`.
 *
 * Both return a new object: unknown fields dropped, keys in Go struct order, numbers untouched. Integer fields
 * (Go int64) must hold integers in both modes, since the engine rejects anything else. `entitlements` (and the
 * `omitempty` fields of an entitlement) are kept only when present.
 *
 * This sits on the replicator's hot path: plain loops over precomputed tables, no allocation beyond the output.
 */
import {
  COMPARABLE_TYPES,
  CONDITION_TYPES,
  type Company,
  ENTITLEMENT_VALUE_TYPES,
  type Flag,
  METRIC_PERIODS,
  MONTH_RESETS,
  OPERATORS,
  RULE_TYPES,
  TRAIT_ENTITY_TYPES,
  type User,
} from "./wire.js";

export type Strictness = "wire" | "engine";

export class EntityError extends Error {
  readonly path: string;
  readonly reason: string;
  constructor(path: string, reason: string) {
    super(`${path}: ${reason}`);
    this.name = "EntityError";
    this.path = path;
    this.reason = reason;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Field tables

enum Kind {
  Str,
  Bool,
  Int,
  Num,
  Enum,
  Time,
  Obj,
  ListObj,
  ListStr,
  MapStr,
  MapNum,
}

/** What an absent (or tolerated `null`) value becomes in the output. */
enum Absent {
  Omit,
  Null,
  EmptyList,
  EmptyMap,
}

interface FieldSpec {
  readonly name: string;
  /** `.name`: the path suffix (every field name is an identifier). */
  readonly dotName: string;
  readonly kind: Kind;
  /** Must be present and non-null in "wire" mode. */
  readonly wireReq: boolean;
  /** Must be present and non-null in "engine" mode. */
  readonly engineReq: boolean;
  readonly absent: Absent;
  /** Enum values; `enumEngine` false means "engine" mode only checks that the value is a string. */
  readonly values?: ReadonlySet<string>;
  readonly valueList?: string;
  readonly enumEngine: boolean;
  /** Object schema for Obj / ListObj. Filled after construction (schemas refer to each other). */
  schema?: Schema;
  /** Non-empty string required (entity ids, flag key). */
  readonly nonEmpty: boolean;
  /** Map needs at least one entry in "wire" mode (company/user keys). */
  readonly minOneWire: boolean;
}

interface Schema {
  readonly name: string;
  readonly fields: readonly FieldSpec[];
  readonly byName: ReadonlyMap<string, FieldSpec>;
}

interface FieldOptions {
  /** "W" wire-required, "E" engine-required, "N" nullable (absent → null), "O" omitted when absent,
   *  "!" non-empty string, "1" at least one map entry (wire), "s" enum strict in engine mode too. */
  flags?: string;
  values?: readonly string[];
  schema?: () => Schema;
}

const lazySchemas: { spec: FieldSpec; get: () => Schema }[] = [];

function field(name: string, kind: Kind, opts: FieldOptions = {}): FieldSpec {
  const flags = opts.flags ?? "";
  let absent = Absent.Omit;
  if (flags.includes("N")) absent = Absent.Null;
  else if (flags.includes("O")) absent = Absent.Omit;
  else if (kind === Kind.ListObj || kind === Kind.ListStr) absent = Absent.EmptyList;
  else if (kind === Kind.MapStr || kind === Kind.MapNum) absent = Absent.EmptyMap;
  const spec: FieldSpec = {
    name,
    dotName: `.${name}`,
    kind,
    wireReq: flags.includes("W"),
    engineReq: flags.includes("E"),
    absent,
    values: opts.values ? new Set(opts.values) : undefined,
    valueList: opts.values ? opts.values.join(", ") : undefined,
    enumEngine: flags.includes("s"),
    nonEmpty: flags.includes("!"),
    minOneWire: flags.includes("1"),
  };
  if (opts.schema) lazySchemas.push({ spec, get: opts.schema });
  return spec;
}

function schema(name: string, fields: FieldSpec[]): Schema {
  return { name, fields, byName: new Map(fields.map((f) => [f.name, f])) };
}

const TRAIT_DEFINITION: Schema = schema("TraitDefinition", [
  field("id", Kind.Str, { flags: "WE" }),
  field("comparable_type", Kind.Enum, { flags: "WE", values: COMPARABLE_TYPES }),
  field("entity_type", Kind.Enum, { flags: "WE", values: TRAIT_ENTITY_TYPES }),
]);

const CONDITION: Schema = schema("Condition", [
  field("id", Kind.Str, { flags: "WE" }),
  field("account_id", Kind.Str, { flags: "WE" }),
  field("environment_id", Kind.Str, { flags: "WE" }),
  field("condition_type", Kind.Enum, { flags: "WE", values: CONDITION_TYPES }),
  field("operator", Kind.Enum, { flags: "WE", values: OPERATORS }),
  field("resource_ids", Kind.ListStr, { flags: "W" }),
  field("event_subtype", Kind.Str, { flags: "N" }),
  field("metric_value", Kind.Int, { flags: "N" }),
  field("metric_period", Kind.Enum, { flags: "N", values: METRIC_PERIODS }),
  field("metric_period_month_reset", Kind.Enum, { flags: "N", values: MONTH_RESETS }),
  field("credit_id", Kind.Str, { flags: "N" }),
  field("consumption_rate", Kind.Num, { flags: "N" }),
  field("trait_definition", Kind.Obj, { flags: "N", schema: () => TRAIT_DEFINITION }),
  field("trait_value", Kind.Str, { flags: "WE" }),
  field("comparison_trait_definition", Kind.Obj, { flags: "N", schema: () => TRAIT_DEFINITION }),
]);

const CONDITION_GROUP: Schema = schema("ConditionGroup", [
  field("conditions", Kind.ListObj, { flags: "W", schema: () => CONDITION }),
]);

const RULE: Schema = schema("Rule", [
  field("id", Kind.Str, { flags: "WE" }),
  field("flag_id", Kind.Str, { flags: "N" }),
  field("account_id", Kind.Str, { flags: "WE" }),
  field("environment_id", Kind.Str, { flags: "WE" }),
  field("rule_type", Kind.Enum, { flags: "WEs", values: RULE_TYPES }),
  field("name", Kind.Str, { flags: "WE" }),
  field("priority", Kind.Int, { flags: "WE" }),
  field("conditions", Kind.ListObj, { flags: "W", schema: () => CONDITION }),
  field("condition_groups", Kind.ListObj, { flags: "W", schema: () => CONDITION_GROUP }),
  field("value", Kind.Bool, { flags: "WE" }),
]);

const FLAG: Schema = schema("Flag", [
  field("id", Kind.Str, { flags: "WE!" }),
  field("account_id", Kind.Str, { flags: "WE" }),
  field("environment_id", Kind.Str, { flags: "WE" }),
  field("key", Kind.Str, { flags: "WE!" }),
  field("rules", Kind.ListObj, { flags: "W", schema: () => RULE }),
  field("default_value", Kind.Bool, { flags: "WE" }),
]);

const TRAIT: Schema = schema("Trait", [
  field("trait_definition", Kind.Obj, { flags: "N", schema: () => TRAIT_DEFINITION }),
  field("value", Kind.Str, { flags: "WE" }),
]);

const COMPANY_METRIC: Schema = schema("CompanyMetric", [
  field("account_id", Kind.Str, { flags: "WE" }),
  field("environment_id", Kind.Str, { flags: "WE" }),
  field("company_id", Kind.Str, { flags: "WE" }),
  field("event_subtype", Kind.Str, { flags: "WE" }),
  field("period", Kind.Enum, { flags: "WEs", values: METRIC_PERIODS }),
  field("month_reset", Kind.Enum, { flags: "WE", values: MONTH_RESETS }),
  field("value", Kind.Int, { flags: "WE" }),
  field("created_at", Kind.Time, { flags: "WE" }),
  field("valid_until", Kind.Time, { flags: "N" }),
]);

const SUBSCRIPTION: Schema = schema("Subscription", [
  field("id", Kind.Str, { flags: "WE" }),
  field("period_start", Kind.Time, { flags: "WE" }),
  field("period_end", Kind.Time, { flags: "WE" }),
]);

const WARNING_TIER: Schema = schema("WarningTier", [
  field("key", Kind.Str, { flags: "WE" }),
  field("value", Kind.Int, { flags: "WE" }),
]);

const FEATURE_ENTITLEMENT: Schema = schema("FeatureEntitlement", [
  field("allocation", Kind.Int, { flags: "N" }),
  field("consumption_rate", Kind.Num, { flags: "O" }),
  field("credit_id", Kind.Str, { flags: "N" }),
  field("credit_remaining", Kind.Num, { flags: "N" }),
  field("credit_reserved", Kind.Num, { flags: "O" }),
  field("credit_settled", Kind.Num, { flags: "O" }),
  field("credit_total", Kind.Num, { flags: "N" }),
  field("credit_used", Kind.Num, { flags: "N" }),
  field("event_name", Kind.Str, { flags: "N" }),
  field("event_subtype", Kind.Str, { flags: "O" }),
  field("feature_id", Kind.Str, { flags: "WE" }),
  field("feature_key", Kind.Str, { flags: "WE" }),
  field("metric_period", Kind.Enum, { flags: "N", values: METRIC_PERIODS }),
  field("metric_reset_at", Kind.Time, { flags: "N" }),
  field("month_reset", Kind.Enum, { flags: "N", values: MONTH_RESETS }),
  field("soft_limit", Kind.Int, { flags: "N" }),
  field("usage", Kind.Int, { flags: "N" }),
  field("value_type", Kind.Enum, { flags: "WEs", values: ENTITLEMENT_VALUE_TYPES }),
  field("warning_tiers", Kind.ListObj, { flags: "O", schema: () => WARNING_TIER }),
]);

const COMPANY: Schema = schema("Company", [
  field("id", Kind.Str, { flags: "WE!" }),
  field("account_id", Kind.Str, { flags: "WE" }),
  field("environment_id", Kind.Str, { flags: "WE" }),
  field("base_plan_id", Kind.Str, { flags: "N" }),
  field("billing_product_ids", Kind.ListStr, { flags: "W" }),
  field("credit_balances", Kind.MapNum, { flags: "W" }),
  field("entitlements", Kind.ListObj, { flags: "O", schema: () => FEATURE_ENTITLEMENT }),
  field("keys", Kind.MapStr, { flags: "W1" }),
  field("metrics", Kind.ListObj, { flags: "W", schema: () => COMPANY_METRIC }),
  field("plan_ids", Kind.ListStr, { flags: "W" }),
  field("plan_version_ids", Kind.ListStr, { flags: "W" }),
  field("rules", Kind.ListObj, { flags: "W", schema: () => RULE }),
  field("subscription", Kind.Obj, { flags: "N", schema: () => SUBSCRIPTION }),
  field("traits", Kind.ListObj, { flags: "W", schema: () => TRAIT }),
]);

const USER: Schema = schema("User", [
  field("id", Kind.Str, { flags: "WE!" }),
  field("account_id", Kind.Str, { flags: "WE" }),
  field("environment_id", Kind.Str, { flags: "WE" }),
  field("keys", Kind.MapStr, { flags: "W1" }),
  field("traits", Kind.ListObj, { flags: "W", schema: () => TRAIT }),
  field("rules", Kind.ListObj, { flags: "W", schema: () => RULE }),
]);

for (const { spec, get } of lazySchemas) spec.schema = get();

// ---------------------------------------------------------------------------------------------------------------
// Walker

const WIRE = 0;
const ENGINE = 1;
type Mode = typeof WIRE | typeof ENGINE;

/** RFC 3339 date-time (what the emulator emits and fixtures must hold). */
const RFC3339 =
  /^\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])[Tt](?:[01]\d|2[0-3]):[0-5]\d:(?:[0-5]\d|60)(?:\.\d+)?(?:[Zz]|[+-](?:[01]\d|2[0-3]):[0-5]\d)$/;
/** Any ISO 8601 calendar date, optionally with a time and zone (what the SDK's date parser tolerates). */
const ISO8601 =
  /^[+-]?\d{4}-?(?:0[1-9]|1[0-2])(?:-?(?:0[1-9]|[12]\d|3[01]))?(?:[Tt ](?:[01]\d|2[0-3]|24)(?::?[0-5]\d(?::?[0-5]\d(?:[.,]\d+)?)?)?(?:[Zz]|[+-](?:[01]\d|2[0-3])(?::?[0-5]\d)?)?)?$/;

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;

function child(path: string, name: string): string {
  return IDENT.test(name) ? `${path}.${name}` : `${path}[${JSON.stringify(name)}]`;
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  switch (typeof v) {
    case "string":
      return v.length > 40 ? `a string ("${v.slice(0, 37)}...")` : `a string (${JSON.stringify(v)})`;
    case "number":
      return `a number (${v})`;
    case "boolean":
      return `a boolean (${v})`;
    case "object":
      return "an object";
    default:
      return typeof v;
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Sets `key` on a fresh plain object even when it is `__proto__`. */
function setEntry(out: Record<string, unknown>, key: string, value: unknown): void {
  if (key === "__proto__")
    Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
  else out[key] = value;
}

function absentValue(spec: FieldSpec): unknown {
  switch (spec.absent) {
    case Absent.Null:
      return null;
    case Absent.EmptyList:
      return [];
    case Absent.EmptyMap:
      return {};
    default:
      return undefined;
  }
}

/**
 * Cleared by a walk whose output differs from its input as JSON values: an unknown field was dropped, or an absent
 * or `null` field was filled in (a `null` kept as `null` is no difference). Key order does not count.
 */
let exact = true;
/**
 * False for a validate-only walk: nothing is copied and the input is returned as it is. Such a walk stops with
 * {@link NOT_EXACT} at the first difference, and the caller walks again with copies.
 */
let copying = true;
const NOT_EXACT = new Error("not exact");
/**
 * False for the first walk of {@link parseEngineEntity}: paths are not built on the way down (they are only for
 * error messages, and cost an allocation per nested object); an invalid entity is walked again with them.
 */
let paths = true;

function differs(): void {
  exact = false;
  if (!copying) throw NOT_EXACT;
}

function walkObject(raw: unknown, sch: Schema, mode: Mode, path: string): Record<string, unknown> {
  if (!isPlainObject(raw)) throw new EntityError(path, `expected an object (${sch.name}), got ${describe(raw)}`);
  const out: Record<string, unknown> = copying ? {} : raw;
  const fields = sch.fields;
  let present = 0;
  for (let i = 0; i < fields.length; i++) {
    const spec = fields[i]!;
    const v = raw[spec.name];
    if (v === undefined || v === null) {
      if (mode === WIRE ? spec.wireReq : spec.engineReq) {
        throw new EntityError(path + spec.dotName, v === undefined ? "missing required field" : "must not be null");
      }
      if (v === null) present++;
      if (spec.absent !== (v === null ? Absent.Null : Absent.Omit)) differs();
      if (copying && spec.absent !== Absent.Omit) out[spec.name] = absentValue(spec);
      continue;
    }
    present++;
    const value = walkValue(v, spec, mode, path);
    if (copying) out[spec.name] = value;
  }
  if (exact) {
    let own = 0;
    for (const k in raw) if (Object.hasOwn(raw, k)) own++;
    if (own !== present) differs();
  }
  return out;
}

function walkValue(v: unknown, spec: FieldSpec, mode: Mode, parent: string): unknown {
  switch (spec.kind) {
    case Kind.Str:
      if (typeof v !== "string") throw new EntityError(parent + spec.dotName, `expected a string, got ${describe(v)}`);
      if (spec.nonEmpty && v.length === 0) throw new EntityError(parent + spec.dotName, "must not be empty");
      return v;
    case Kind.Bool:
      if (typeof v !== "boolean")
        throw new EntityError(parent + spec.dotName, `expected a boolean, got ${describe(v)}`);
      return v;
    case Kind.Int:
      if (typeof v !== "number" || !Number.isInteger(v)) {
        throw new EntityError(parent + spec.dotName, `expected an integer, got ${describe(v)}`);
      }
      return v;
    case Kind.Num:
      if (typeof v !== "number" || !Number.isFinite(v)) {
        throw new EntityError(parent + spec.dotName, `expected a number, got ${describe(v)}`);
      }
      return v;
    case Kind.Enum:
      if (typeof v !== "string") throw new EntityError(parent + spec.dotName, `expected a string, got ${describe(v)}`);
      if ((mode === WIRE || spec.enumEngine) && !spec.values!.has(v)) {
        throw new EntityError(
          parent + spec.dotName,
          `unknown value ${JSON.stringify(v)} (expected one of ${spec.valueList})`,
        );
      }
      return v;
    case Kind.Time:
      if (typeof v !== "string") {
        throw new EntityError(parent + spec.dotName, `expected an ISO 8601 timestamp, got ${describe(v)}`);
      }
      if (!(mode === WIRE ? RFC3339 : ISO8601).test(v)) {
        throw new EntityError(parent + spec.dotName, `expected an ISO 8601 timestamp, got ${describe(v)}`);
      }
      return v;
    case Kind.Obj:
      return walkObject(v, spec.schema!, mode, paths ? parent + spec.dotName : parent);
    case Kind.ListObj: {
      const path = paths ? parent + spec.dotName : parent;
      if (!Array.isArray(v)) throw new EntityError(path, `expected an array, got ${describe(v)}`);
      const sch = spec.schema!;
      if (!copying) {
        for (let i = 0; i < v.length; i++) walkObject(v[i], sch, mode, paths ? `${path}[${i}]` : path);
        return v;
      }
      const out = new Array<unknown>(v.length);
      for (let i = 0; i < v.length; i++) out[i] = walkObject(v[i], sch, mode, `${path}[${i}]`);
      return out;
    }
    case Kind.ListStr: {
      if (!Array.isArray(v)) throw new EntityError(parent + spec.dotName, `expected an array, got ${describe(v)}`);
      for (let i = 0; i < v.length; i++) {
        const s = v[i];
        if (typeof s !== "string") {
          throw new EntityError(`${parent + spec.dotName}[${i}]`, `expected a string, got ${describe(s)}`);
        }
      }
      return copying ? v.slice() : v;
    }
    case Kind.MapStr:
    case Kind.MapNum: {
      const path = paths ? parent + spec.dotName : parent;
      if (!isPlainObject(v)) throw new EntityError(path, `expected an object, got ${describe(v)}`);
      const out: Record<string, unknown> = copying ? {} : v;
      let n = 0;
      for (const k in v) {
        if (!Object.hasOwn(v, k)) continue;
        const e = v[k];
        if (spec.kind === Kind.MapStr) {
          if (typeof e !== "string") throw new EntityError(child(path, k), `expected a string, got ${describe(e)}`);
          if (mode === WIRE && spec.minOneWire && k.length === 0)
            throw new EntityError(path, "key names must not be empty");
        } else if (typeof e !== "number" || !Number.isFinite(e)) {
          throw new EntityError(child(path, k), `expected a number, got ${describe(e)}`);
        }
        if (copying) setEntry(out, k, e);
        n++;
      }
      if (n === 0 && mode === WIRE && spec.minOneWire) throw new EntityError(path, "must have at least one key");
      return out;
    }
  }
}

function walkPartial(raw: unknown, sch: Schema, mode: Mode, path: string): Record<string, unknown> {
  if (!isPlainObject(raw))
    throw new EntityError(path, `expected an object (partial ${sch.name}), got ${describe(raw)}`);
  const out: Record<string, unknown> = {};
  const fields = sch.fields;
  for (let i = 0; i < fields.length; i++) {
    const spec = fields[i]!;
    const v = raw[spec.name];
    if (v === undefined) continue;
    if (v === null) {
      switch (spec.absent) {
        case Absent.Null:
          out[spec.name] = null;
          break;
        case Absent.EmptyList:
        case Absent.EmptyMap:
          if (mode === WIRE) throw new EntityError(path + spec.dotName, "must not be null");
          out[spec.name] = absentValue(spec);
          break;
        default:
          // A null string leaves the field unchanged (Go's decoder); the wire parser rejects it.
          if (mode === WIRE && spec.wireReq) throw new EntityError(path + spec.dotName, "must not be null");
      }
      continue;
    }
    // A partial may carry an empty `keys` map: merging it changes nothing.
    out[spec.name] = spec.minOneWire
      ? walkValue(v, { ...spec, minOneWire: false }, mode, path)
      : walkValue(v, spec, mode, path);
  }
  return out;
}

function modeOf(mode: Strictness): Mode {
  if (mode === "wire") return WIRE;
  if (mode === "engine") return ENGINE;
  throw new TypeError(`unknown strictness ${String(mode)}`);
}

export function parseFlag(raw: unknown, mode: Strictness, path = "$"): Flag {
  return walkObject(raw, FLAG, modeOf(mode), path) as unknown as Flag;
}

export function parseCompany(raw: unknown, mode: Strictness, path = "$"): Company {
  return walkObject(raw, COMPANY, modeOf(mode), path) as unknown as Company;
}

export function parseUser(raw: unknown, mode: Strictness, path = "$"): User {
  return walkObject(raw, USER, modeOf(mode), path) as unknown as User;
}

/**
 * An engine-mode company or user, and whether it is `raw` unchanged as a JSON value (no unknown field dropped,
 * nothing filled in): then the text `raw` was parsed from can be stored as it is.
 */
export function parseEngineEntity<T extends "company" | "user">(
  kind: T,
  raw: unknown,
): { entity: T extends "company" ? Company : User; exact: boolean } {
  const sch = kind === "company" ? COMPANY : USER;
  // Usually the data is exact: validate it in place, allocating nothing; copy only when it is not. The copying walk
  // also gives an invalid entity's error its path.
  exact = true;
  copying = false;
  paths = false;
  try {
    return { entity: walkObject(raw, sch, ENGINE, "$") as never, exact: true };
  } catch (err) {
    if (err !== NOT_EXACT && !(err instanceof EntityError)) throw err;
  } finally {
    copying = true;
    paths = true;
  }
  return { entity: walkObject(raw, sch, ENGINE, "$") as never, exact: false };
}

/**
 * A `partial` message's data: only the fields present are returned (validated, in Go struct order, unknown
 * fields dropped). `null` clears a nullable field; in "engine" mode a `null` list or map becomes empty and a
 * `null` string is dropped (Go's decoder leaves the field unchanged); "wire" mode rejects them.
 */
export function parseCompanyPartial(raw: unknown, mode: Strictness, path = "$"): Partial<Company> {
  return walkPartial(raw, COMPANY, modeOf(mode), path) as Partial<Company>;
}

export function parseUserPartial(raw: unknown, mode: Strictness, path = "$"): Partial<User> {
  return walkPartial(raw, USER, modeOf(mode), path) as Partial<User>;
}

/** Field names a Company / User partial may carry (all fields of the type). */
export const COMPANY_PARTIAL_FIELDS: ReadonlySet<string> = new Set(COMPANY.fields.map((f) => f.name));
export const USER_PARTIAL_FIELDS: ReadonlySet<string> = new Set(USER.fields.map((f) => f.name));
