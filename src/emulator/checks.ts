/**
 * The REST flag checks an SDK makes in its default mode (datastream off) and falls back to from the datastream:
 * `POST /flags/{key}/check`, `POST /flags/check` (every flag) and `POST /flags/check-bulk` (every flag for several
 * contexts), in the API's request and response shapes (snake_case; the SDK's `features.checkFlag`, `checkFlags`
 * and `checkFlagsBulk`). Each check resolves the request's company and user keys as datastream lookups do (any
 * pair, case-insensitive) and evaluates the current state with the SDK's own rules engine (./engine.ts).
 */
import type { Company, Flag, User } from "../model/wire.js";
import { type Evaluation, evaluate, type Preflight } from "./engine.js";
import { HttpError } from "./http.js";
import type { EmulatorState } from "./state.js";

/** One evaluation context of a request body (`CheckFlagRequestBody`). */
interface CheckContext {
  company: Company | null;
  user: User | null;
  preflight?: Preflight;
}

const CONTEXT_FIELDS = ["company", "user", "preflight"];

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function keys(v: unknown, path: string): Record<string, string> | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isObject(v) || !Object.values(v).every((x) => typeof x === "string")) {
    throw new HttpError(400, `${path}: expected an object of key names to string values`);
  }
  return Object.keys(v).length > 0 ? (v as Record<string, string>) : undefined;
}

function quantity(v: unknown, path: string): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
    throw new HttpError(400, `${path}: expected a non-negative integer, got ${JSON.stringify(v)}`);
  }
  return v;
}

/** The body's `preflight` (snake_case) as the engine takes it; undefined when it asks nothing. */
function preflight(v: unknown, path: string): Preflight | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isObject(v)) throw new HttpError(400, `${path}: expected an object`);
  const out: Preflight = {};
  for (const [k, x] of Object.entries(v)) {
    if (x === null) continue;
    switch (k) {
      case "usage":
        out.usage = quantity(x, `${path}.usage`);
        break;
      case "event_usage":
        if (!isObject(x) || typeof x.event_subtype !== "string") {
          throw new HttpError(400, `${path}.event_usage: expected {"event_subtype": string, "quantity": integer}`);
        }
        out.eventUsage = {
          eventSubtype: x.event_subtype,
          quantity: quantity(x.quantity, `${path}.event_usage.quantity`),
        };
        break;
      case "credit_cost":
        if (!isObject(x) || !Object.values(x).every((c) => typeof c === "number" && Number.isFinite(c) && c >= 0)) {
          throw new HttpError(400, `${path}.credit_cost: expected an object of credit ids to non-negative numbers`);
        }
        out.creditCost = x as Record<string, number>;
        break;
      default:
        throw new HttpError(400, `${path}.${k}: unknown field (expected usage, event_usage, credit_cost)`);
    }
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

/**
 * Parses one context and resolves its keys against the state. `preflight` is refused where the API does not
 * take it (it simulates one action, so it applies to single-flag checks only).
 */
function parseContext(raw: unknown, path: string, state: EmulatorState, allowPreflight: boolean): CheckContext {
  if (raw === undefined || raw === null) return { company: null, user: null };
  if (!isObject(raw)) throw new HttpError(400, `${path}: expected an object {"company"?, "user"?, "preflight"?}`);
  for (const k of Object.keys(raw)) {
    if (!CONTEXT_FIELDS.includes(k))
      throw new HttpError(400, `${path}.${k}: unknown field (expected company, user, preflight)`);
  }
  const companyKeys = keys(raw.company, `${path}.company`);
  const userKeys = keys(raw.user, `${path}.user`);
  const pre = preflight(raw.preflight, `${path}.preflight`);
  if (pre && !allowPreflight) {
    throw new HttpError(400, `${path}.preflight: only a single-flag check (POST /flags/{key}/check) takes a preflight`);
  }
  return {
    company: companyKeys ? (state.companies.lookup(companyKeys) ?? null) : null,
    user: userKeys ? (state.users.lookup(userKeys) ?? null) : null,
    preflight: pre,
  };
}

const snake = (k: string) => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/** An evaluation in the API's shape (`CheckFlagResponseData`, snake_case, absent fields left out). */
function responseData(e: Evaluation): Record<string, unknown> {
  const out: Record<string, unknown> = { flag: e.flagKey, flag_id: e.flagId, value: e.value, reason: e.reason };
  if (e.ruleId) out.rule_id = e.ruleId;
  if (e.ruleType) out.rule_type = e.ruleType;
  if (e.companyId) out.company_id = e.companyId;
  if (e.userId) out.user_id = e.userId;
  if (e.err) out.error = e.err;
  if (e.entitlement) {
    const ent: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(e.entitlement)) if (v !== null && v !== undefined) ent[snake(k)] = v;
    out.entitlement = ent;
  }
  for (const [k, v] of Object.entries(e.usage)) out[snake(k)] = v;
  return out;
}

/** Every flag (in key order) for one context (`CheckFlagsResponseData`), with the company's credit balances. */
async function checkAll(state: EmulatorState, ctx: CheckContext): Promise<Record<string, unknown>> {
  const flags: Record<string, unknown>[] = [];
  for (const flag of state.flags.list()) flags.push(responseData(await evaluate(flag, ctx.company, ctx.user)));
  const out: Record<string, unknown> = { flags };
  if (ctx.company) {
    const balances: Record<string, unknown> = {};
    for (const [id, b] of Object.entries(ctx.company.credit_balances)) {
      balances[id] = { remaining: b, reserved: 0, settled: b };
    }
    out.credit_balances = balances;
  }
  return out;
}

/** The flag a check names (keys match case-insensitively, as the SDKs' caches do); 404 when there is none. */
function flagNamed(state: EmulatorState, encodedKey: string): Flag {
  let key: string;
  try {
    key = decodeURIComponent(encodedKey);
  } catch {
    throw new HttpError(400, `malformed percent-encoding in ${JSON.stringify(encodedKey)}`);
  }
  const flag = state.flags.find(key);
  if (!flag) throw new HttpError(404, `flag not found: ${JSON.stringify(key)}`);
  return flag;
}

/** The contexts of a `/flags/check-bulk` body, parsed and resolved. */
function bulkContexts(state: EmulatorState, body: unknown): CheckContext[] {
  if (!isObject(body) || !Array.isArray(body.contexts)) {
    throw new HttpError(400, '$.contexts: expected {"contexts": [{"company"?, "user"?}, ...]}');
  }
  for (const k of Object.keys(body)) {
    if (k !== "contexts") throw new HttpError(400, `$.${k}: unknown field (expected contexts)`);
  }
  return body.contexts.map((c, i) => parseContext(c, `$.contexts[${i}]`, state, false));
}

/**
 * Answers a check request to `path` (`/flags/{key}/check`, `/flags/check` or `/flags/check-bulk`) with its
 * response body, `{"data": …, "params": {}}`.
 */
export async function check(state: EmulatorState, path: string, body: unknown): Promise<unknown> {
  if (path === "/flags/check") {
    return { data: await checkAll(state, parseContext(body, "$", state, false)), params: {} };
  }
  if (path === "/flags/check-bulk") {
    const data: Record<string, unknown>[] = [];
    for (const ctx of bulkContexts(state, body)) data.push(await checkAll(state, ctx));
    return { data: { data }, params: {} };
  }
  const flag = flagNamed(state, path.slice("/flags/".length, -"/check".length));
  const ctx = parseContext(body, "$", state, true);
  return { data: responseData(await evaluate(flag, ctx.company, ctx.user, ctx.preflight)), params: {} };
}
