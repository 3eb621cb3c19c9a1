/**
 * What an `identify` event does: creates or updates the company and the user it names. An entity is found by any
 * of the event's keys (case-insensitive, as lookups); a found one gets the event's keys added (a partial: keys
 * merge) and its traits set, a new one is created with a fresh id. Trait names are trait definition ids: `seats`
 * sets the trait whose definition is `seats` or `trdf_seats` among those the flags' rules and the entity already
 * use, else a new definition `seats` typed by the value (docs/design/emulator.md, "Events"). Pure: returns the
 * admin changes to apply.
 */
import type { Company, ComparableType, Condition, Flag, Trait, TraitDefinition, User } from "../model/wire.js";
import type { Change } from "./changes.js";
import type { EmulatorState } from "./state.js";

/** The company or the user part of an identify event, validated (capture.ts). */
export interface Identity {
  keys: Record<string, string>;
  name?: string;
  /** Trait name → value; null removes the trait. */
  traits?: Record<string, string | number | boolean | null>;
}

type Kind = "company" | "user";

const ID_PREFIX: Record<Kind, string> = { company: "comp_emu_", user: "user_emu_" };

function traitDefinitions(kind: Kind, entity: Company | User | undefined, flags: Iterable<Flag>): TraitDefinition[] {
  const out: TraitDefinition[] = [];
  const add = (d: TraitDefinition | null) => {
    if (d && d.entity_type === kind) out.push(d);
  };
  const fromConditions = (conditions: Condition[]) => {
    for (const c of conditions) {
      add(c.trait_definition);
      add(c.comparison_trait_definition);
    }
  };
  const rules = [...(entity?.rules ?? [])];
  for (const f of flags) rules.push(...f.rules);
  for (const r of rules) {
    fromConditions(r.conditions);
    for (const g of r.condition_groups) fromConditions(g.conditions);
  }
  for (const t of entity?.traits ?? []) add(t.trait_definition);
  return out;
}

function comparableType(value: string | number | boolean): ComparableType {
  if (typeof value === "boolean") return "bool";
  if (typeof value === "number" && Number.isInteger(value)) return "int";
  return "string";
}

/** `traits` with the event's trait values applied (a trait is identified by its definition id). */
function applyTraits(
  kind: Kind,
  entity: Company | User | undefined,
  values: NonNullable<Identity["traits"]>,
  flags: Iterable<Flag>,
): Trait[] {
  const defs = traitDefinitions(kind, entity, flags);
  const traits = [...(entity?.traits ?? [])];
  for (const [name, value] of Object.entries(values)) {
    const def =
      defs.find((d) => d.id === name) ??
      defs.find((d) => d.id === `trdf_${name}`) ??
      (value === null ? undefined : { id: name, comparable_type: comparableType(value), entity_type: kind });
    if (!def) continue;
    const at = traits.findIndex((t) => t.trait_definition?.id === def.id);
    if (value === null) {
      if (at >= 0) traits.splice(at, 1);
      continue;
    }
    const trait = { trait_definition: def, value: String(value) };
    if (at >= 0) traits[at] = trait;
    else traits.push(trait);
  }
  return traits;
}

/** An id of the form `comp_emu_N` / `user_emu_N` no entity holds yet. */
function freshId(state: EmulatorState, kind: Kind): string {
  const table = kind === "company" ? state.companies : state.users;
  let n = table.size + 1;
  while (table.get(`${ID_PREFIX[kind]}${n}`)) n++;
  return `${ID_PREFIX[kind]}${n}`;
}

/** The account and environment new entities belong to: those of the data already there. */
function scope(state: EmulatorState): { account_id: string; environment_id: string } {
  const sample =
    state.flags.byKey.values().next().value ??
    state.companies.byId.values().next().value ??
    state.users.byId.values().next().value;
  return sample
    ? { account_id: sample.account_id, environment_id: sample.environment_id }
    : { account_id: "acc_emulator", environment_id: "env_emulator" };
}

/**
 * The change that identifies one company or user, and its id; `change` is undefined when the event changes
 * nothing the entity does not already have.
 */
export function identifyChange(state: EmulatorState, kind: Kind, who: Identity): { id: string; change?: Change } {
  const table = kind === "company" ? state.companies : state.users;
  const collection = kind === "company" ? "companies" : "users";
  const found = table.lookup(who.keys);
  if (!found) {
    const id = freshId(state, kind);
    const traits = applyTraits(kind, undefined, who.traits ?? {}, state.flags.byKey.values());
    const common = { id, ...scope(state), keys: { ...who.keys }, traits, rules: [] };
    const body: Company | User =
      kind === "company"
        ? {
            ...common,
            base_plan_id: null,
            billing_product_ids: [],
            credit_balances: {},
            metrics: [],
            plan_ids: [],
            plan_version_ids: [],
            subscription: null,
          }
        : common;
    return { id, change: { method: "PUT", path: `/${collection}/${encodeURIComponent(id)}`, body } };
  }
  const partial: Record<string, unknown> = {};
  // Pairs the entity lacks (values compare ignoring case, as lookups do).
  const newKeys = Object.entries(who.keys).filter(([k, v]) => found.keys[k]?.toLowerCase() !== v.toLowerCase());
  if (newKeys.length > 0) partial.keys = Object.fromEntries(newKeys);
  if (who.traits && Object.keys(who.traits).length > 0) {
    const traits = applyTraits(kind, found, who.traits, state.flags.byKey.values());
    if (JSON.stringify(traits) !== JSON.stringify(found.traits)) partial.traits = traits;
  }
  if (Object.keys(partial).length === 0) return { id: found.id };
  return {
    id: found.id,
    change: { method: "PATCH", path: `/${collection}/${encodeURIComponent(found.id)}`, body: partial },
  };
}
