/**
 * The soak's workload: a seeded stream of changes to send through the emulator's admin API, covering every entity
 * kind and message type — full PUTs, PATCH partials, DELETEs of companies and users, flag rule changes and deletes,
 * key renames, and key moves between entities (a key one entity gives up taken by another, also within one burst:
 * B gains k, B is deleted, A gains k).
 *
 * It keeps its own model of which ids exist and who owns each (key name, value) pair — exactly what the emulator
 * validates (uniqueness is case-insensitive) — so every change it makes is one the emulator accepts, without asking
 * the emulator anything: the sequence depends on the seed alone. Bodies are built from the example fixture's
 * entities (plans, metrics, entitlements, company overrides), with fresh ids, keys and traits.
 *
 * Anchor companies (`anchor-co-*`) are in the initial data and never touched: the soak's readiness check uses them
 * to tell whether Redis holds the data (see docs/reliability.md).
 */
import type { Company, CompanyMetric, Fixture, Flag, Rule, Trait, User } from "../src/model/wire.js";
import type { Rand } from "./random.js";

export interface Change {
  method: "PUT" | "PATCH" | "DELETE";
  /** `/companies/{id}`, `/users/{id}` or `/flags/{key}` (under `/_emulator`). */
  path: string;
  body?: unknown;
}

export const CHANGE_KINDS = [
  "company.put",
  "company.patch",
  "company.rename",
  "company.delete",
  "user.put",
  "user.patch",
  "user.rename",
  "user.delete",
  "flag.put",
  "flag.rules",
  "flag.delete",
  "key.move",
  "key.handoff",
] as const;
export type ChangeKind = (typeof CHANGE_KINDS)[number];

/** One operation of the workload: one change, or a few that belong together (a key moving between entities). */
export interface Operation {
  kind: ChangeKind;
  changes: Change[];
}

export interface WorkloadOptions {
  /** Soak companies and users beside the fixture's (ids `soak-co-N`, `soak-us-N`). */
  companies: number;
  users: number;
  /** Soak flags beside the fixture's (`soak-flag-N`). */
  flags: number;
  /** Anchor companies in the initial data, never changed. */
  anchors: number;
}

export const DEFAULT_WORKLOAD: WorkloadOptions = { companies: 200, users: 200, flags: 16, anchors: 32 };

const WEIGHTS: Record<ChangeKind, number> = {
  "company.put": 20,
  "company.patch": 22,
  "company.rename": 6,
  "company.delete": 5,
  "user.put": 14,
  "user.patch": 10,
  "user.rename": 4,
  "user.delete": 4,
  "flag.put": 3,
  "flag.rules": 3,
  "flag.delete": 1,
  "key.move": 4,
  "key.handoff": 2,
};

const REGIONS = ["us", "eu", "apac", "latam"];
const ROLES = ["admin", "viewer", "member", "billing"];
const METRIC_EVENTS: [string, CompanyMetric["period"]][] = [
  ["report_run", "all_time"],
  ["api_call", "current_month"],
  ["export", "all_time"],
];

export function anchorIds(count: number): string[] {
  return Array.from({ length: count }, (_, i) => `anchor-co-${String(i).padStart(2, "0")}`);
}

function pairKey(name: string, value: string): string {
  return `${name.toLowerCase()}\u0000${value.toLowerCase()}`;
}

/** Which ids of one kind exist, and who owns each (key name, value) pair. */
class Book {
  readonly live = new Map<string, Record<string, string>>();
  private readonly owners = new Map<string, string>();
  /** Pairs that were given up (renamed away or deleted), most recent last, for key moves and SDK contexts. */
  readonly retired: [string, string][] = [];

  constructor(readonly pool: string[]) {}

  set(id: string, keys: Record<string, string>): void {
    this.remove(id);
    this.live.set(id, { ...keys });
    for (const [n, v] of Object.entries(keys)) this.owners.set(pairKey(n, v), id);
  }

  remove(id: string): void {
    const keys = this.live.get(id);
    if (!keys) return;
    for (const [n, v] of Object.entries(keys)) {
      this.owners.delete(pairKey(n, v));
      this.retire(n, v);
    }
    this.live.delete(id);
  }

  /** A PATCH of keys: shallow-merged, as the emulator merges partials. */
  patchKeys(id: string, keys: Record<string, string>): void {
    const before = this.live.get(id)!;
    const after = { ...before, ...keys };
    for (const [n, v] of Object.entries(keys)) {
      const old = before[n];
      if (old !== undefined && pairKey(n, old) !== pairKey(n, v)) {
        this.owners.delete(pairKey(n, old));
        this.retire(n, old);
      }
      this.owners.set(pairKey(n, v), id);
    }
    this.live.set(id, after);
  }

  free(name: string, value: string): boolean {
    return !this.owners.has(pairKey(name, value));
  }

  existing(): string[] {
    return this.pool.filter((id) => this.live.has(id));
  }

  private retire(name: string, value: string): void {
    this.retired.push([name, value]);
    if (this.retired.length > 400) this.retired.shift();
  }
}

export class Workload {
  private readonly companies: Book;
  private readonly users: Book;
  private readonly flags = new Map<string, Flag>();
  private readonly flagPool: string[];
  private readonly companyTemplates: Company[];
  private readonly userTemplates: User[];
  private readonly ruleTemplates: Rule[];
  private readonly fixtureFlags: Map<string, Flag>;
  private keySerial = 0;
  private ruleSerial = 0;
  readonly initial: Fixture;

  constructor(
    fixture: Fixture,
    private readonly rand: Rand,
    readonly options: WorkloadOptions = DEFAULT_WORKLOAD,
  ) {
    this.companyTemplates = fixture.companies;
    this.userTemplates = fixture.users;
    this.ruleTemplates = fixture.flags.flatMap((f) => f.rules);
    this.fixtureFlags = new Map(fixture.flags.map((f) => [f.key.toLowerCase(), f]));
    const soakCompanies = Array.from({ length: options.companies }, (_, i) => `soak-co-${i}`);
    const soakUsers = Array.from({ length: options.users }, (_, i) => `soak-us-${i}`);
    this.companies = new Book([...fixture.companies.map((c) => c.id), ...soakCompanies]);
    this.users = new Book([...fixture.users.map((u) => u.id), ...soakUsers]);
    this.flagPool = [
      ...fixture.flags.map((f) => f.key),
      ...Array.from({ length: options.flags }, (_, i) => `soak-flag-${i}`),
    ];
    for (const c of fixture.companies) this.companies.set(c.id, c.keys);
    for (const u of fixture.users) this.users.set(u.id, u.keys);
    for (const f of fixture.flags) this.flags.set(f.key.toLowerCase(), f);

    // The initial data: the fixture, the anchors, half of the soak entities and flags.
    const anchors = anchorIds(options.anchors).map((id) =>
      this.company(id, { domain: `${id}.example`, slug: id }, this.companyTemplates[0]!),
    );
    const companies = [...fixture.companies, ...anchors];
    for (const id of soakCompanies.slice(0, options.companies / 2)) {
      const c = this.company(id, this.freshCompanyKeys(id));
      this.companies.set(id, c.keys);
      companies.push(c);
    }
    const users = [...fixture.users];
    for (const id of soakUsers.slice(0, options.users / 2)) {
      const u = this.user(id, this.freshUserKeys(id));
      this.users.set(id, u.keys);
      users.push(u);
    }
    const flags = [...fixture.flags];
    for (const key of this.flagPool.slice(fixture.flags.length, fixture.flags.length + options.flags / 2)) {
      const f = this.newFlag(key);
      this.flags.set(key.toLowerCase(), f);
      flags.push(f);
    }
    this.initial = { flags, companies, users };
  }

  /** The next operation of the workload (its changes are valid in order, given every earlier one was applied). */
  next(): Operation {
    for (;;) {
      const kind = this.rand.weighted(WEIGHTS);
      const changes = this.make(kind);
      if (changes) return { kind, changes };
    }
  }

  /** Operations adding up to at least `count` changes (a burst). */
  batch(count: number): Operation[] {
    const out: Operation[] = [];
    for (let n = 0; n < count; ) {
      const op = this.next();
      out.push(op);
      n += op.changes.length;
    }
    return out;
  }

  /** Key pairs that existed at some point and were given up since (for SDK contexts that must resolve correctly). */
  retiredKeys(kind: "company" | "user"): [string, string][] {
    return [...(kind === "company" ? this.companies : this.users).retired];
  }

  private make(kind: ChangeKind): Change[] | undefined {
    switch (kind) {
      case "company.put":
        return this.putEntity("company");
      case "user.put":
        return this.putEntity("user");
      case "company.patch":
        return this.patchCompany();
      case "user.patch":
        return this.patchUser();
      case "company.rename":
        return this.rename("company");
      case "user.rename":
        return this.rename("user");
      case "company.delete":
        return this.remove("company");
      case "user.delete":
        return this.remove("user");
      case "flag.put":
        return this.putFlag();
      case "flag.rules":
        return this.changeRules();
      case "flag.delete":
        return this.deleteFlag();
      case "key.move":
        return this.moveKey();
      case "key.handoff":
        return this.handoff();
    }
  }

  // ---- companies and users ----------------------------------------------------------------------------------

  private book(kind: "company" | "user"): Book {
    return kind === "company" ? this.companies : this.users;
  }

  private path(kind: "company" | "user", id: string): string {
    return `/${kind === "company" ? "companies" : "users"}/${encodeURIComponent(id)}`;
  }

  /** A full state: an existing entity (same keys, or new ones: the old ones must go) or a new one. */
  private putEntity(kind: "company" | "user"): Change[] {
    const book = this.book(kind);
    const id = this.rand.pick(book.pool);
    const current = book.live.get(id);
    const keys =
      current && this.rand.chance(0.75)
        ? current
        : kind === "company"
          ? this.freshCompanyKeys(id)
          : this.freshUserKeys(id);
    const body = kind === "company" ? this.company(id, keys) : this.user(id, keys);
    book.set(id, keys);
    return [{ method: "PUT", path: this.path(kind, id), body }];
  }

  private patchCompany(): Change[] | undefined {
    const ids = this.companies.existing();
    if (ids.length === 0) return undefined;
    const id = this.rand.pick(ids);
    const template = this.rand.pick(this.companyTemplates);
    const body: Record<string, unknown> = {};
    for (const field of ["traits", "plans", "credits", "metrics"] as const) {
      if (!this.rand.chance(field === "traits" ? 0.6 : 0.35)) continue;
      if (field === "traits") body.traits = this.companyTraits();
      if (field === "plans") {
        body.base_plan_id = template.base_plan_id;
        body.plan_ids = template.plan_ids;
        body.plan_version_ids = template.plan_version_ids;
        body.billing_product_ids = template.billing_product_ids;
      }
      if (field === "credits") body.credit_balances = { bcrd_ai_tokens: this.rand.int(0, 5000) };
      if (field === "metrics") body.metrics = [this.metric(id)];
    }
    if (Object.keys(body).length === 0) body.traits = this.companyTraits();
    return [{ method: "PATCH", path: this.path("company", id), body }];
  }

  private patchUser(): Change[] | undefined {
    const ids = this.users.existing();
    if (ids.length === 0) return undefined;
    const id = this.rand.pick(ids);
    return [{ method: "PATCH", path: this.path("user", id), body: { traits: this.userTraits() } }];
  }

  /** A PATCH of one or all keys to fresh values (the old lookup keys must go). */
  private rename(kind: "company" | "user"): Change[] | undefined {
    const book = this.book(kind);
    const ids = book.existing();
    if (ids.length === 0) return undefined;
    const id = this.rand.pick(ids);
    const fresh = kind === "company" ? this.freshCompanyKeys(id) : this.freshUserKeys(id);
    const name = this.rand.pick(Object.keys(fresh));
    const keys = this.rand.chance(0.5) ? fresh : { [name]: fresh[name]! };
    book.patchKeys(id, keys);
    return [{ method: "PATCH", path: this.path(kind, id), body: { keys } }];
  }

  private remove(kind: "company" | "user"): Change[] | undefined {
    const book = this.book(kind);
    const ids = book.existing();
    if (ids.length < 10) return undefined;
    const id = this.rand.pick(ids);
    book.remove(id);
    return [{ method: "DELETE", path: this.path(kind, id) }];
  }

  /** An entity takes a key another one gave up earlier, or one another entity gives up in the same operation. */
  private moveKey(): Change[] | undefined {
    const kind = this.rand.chance(0.6) ? "company" : "user";
    const book = this.book(kind);
    const ids = book.existing();
    if (ids.length < 2) return undefined;
    const taker = this.rand.pick(ids);
    const retired = book.retired.filter(([n, v]) => book.free(n, v) && this.validKeyName(kind, n));
    if (retired.length > 0 && this.rand.chance(0.5)) {
      const [name, value] = this.rand.pick(retired);
      book.patchKeys(taker, { [name]: value });
      return [{ method: "PATCH", path: this.path(kind, taker), body: { keys: { [name]: value } } }];
    }
    const giver = this.rand.pick(ids.filter((id) => id !== taker));
    const name = kind === "company" ? "domain" : "email";
    const value = book.live.get(giver)![name];
    if (value === undefined) return undefined;
    const replacement = (kind === "company" ? this.freshCompanyKeys(giver) : this.freshUserKeys(giver))[name]!;
    book.patchKeys(giver, { [name]: replacement });
    book.patchKeys(taker, { [name]: value });
    return [
      { method: "PATCH", path: this.path(kind, giver), body: { keys: { [name]: replacement } } },
      { method: "PATCH", path: this.path(kind, taker), body: { keys: { [name]: value } } },
    ];
  }

  /** B gains a fresh key k, B is deleted, A gains k: k must end up pointing at A. */
  private handoff(): Change[] | undefined {
    const kind = this.rand.chance(0.6) ? "company" : "user";
    const book = this.book(kind);
    const ids = book.existing();
    if (ids.length < 12) return undefined;
    const a = this.rand.pick(ids);
    const b = this.rand.pick(ids.filter((id) => id !== a));
    const name = kind === "company" ? "slug" : "user_id";
    const k = (kind === "company" ? this.freshCompanyKeys(b) : this.freshUserKeys(b))[name]!;
    book.patchKeys(b, { [name]: k });
    book.remove(b);
    book.patchKeys(a, { [name]: k });
    return [
      { method: "PATCH", path: this.path(kind, b), body: { keys: { [name]: k } } },
      { method: "DELETE", path: this.path(kind, b) },
      { method: "PATCH", path: this.path(kind, a), body: { keys: { [name]: k } } },
    ];
  }

  private validKeyName(kind: "company" | "user", name: string): boolean {
    return kind === "company" ? name === "domain" || name === "slug" : name === "email" || name === "user_id";
  }

  /** Unique key values; some in mixed case or with characters whose lower case differs between JavaScript and Go. */
  private freshKeyValue(id: string): string {
    const n = this.keySerial++;
    const style = this.rand.float();
    if (style < 0.1) return `${id.toUpperCase()}-K${n}`;
    if (style < 0.14) return `İstanbul-${id}-${n}`;
    if (style < 0.17) return `straße-${id}-${n}`;
    return `${id}-k${n}`;
  }

  private freshCompanyKeys(id: string): Record<string, string> {
    return { domain: `${this.freshKeyValue(id)}.example`, slug: this.freshKeyValue(id) };
  }

  private freshUserKeys(id: string): Record<string, string> {
    return { email: `${this.freshKeyValue(id)}@example.test`, user_id: this.freshKeyValue(id) };
  }

  private company(id: string, keys: Record<string, string>, template = this.rand.pick(this.companyTemplates)): Company {
    const c = structuredClone(template);
    return {
      ...c,
      id,
      keys: { ...keys },
      metrics: c.metrics.map((m) => ({ ...m, company_id: id })),
      subscription: c.subscription ? { ...c.subscription, id: `bsub_${id}` } : null,
      traits: this.companyTraits(),
    };
  }

  private user(id: string, keys: Record<string, string>): User {
    return { ...structuredClone(this.rand.pick(this.userTemplates)), id, keys: { ...keys }, traits: this.userTraits() };
  }

  private companyTraits(): Trait[] {
    const traits: Trait[] = [
      {
        trait_definition: { id: "trdf_seats", comparable_type: "int", entity_type: "company" },
        value: String(this.rand.int(1, 400)),
      },
      {
        trait_definition: { id: "trdf_region", comparable_type: "string", entity_type: "company" },
        value: this.rand.pick(REGIONS),
      },
    ];
    if (this.rand.chance(0.5)) {
      traits.push({
        trait_definition: { id: "trdf_beta_opt_in", comparable_type: "bool", entity_type: "company" },
        value: String(this.rand.chance(0.5)),
      });
    }
    return traits;
  }

  private userTraits(): Trait[] {
    return [
      {
        trait_definition: { id: "trdf_role", comparable_type: "string", entity_type: "user" },
        value: this.rand.pick(ROLES),
      },
      {
        trait_definition: { id: "trdf_beta_tester", comparable_type: "bool", entity_type: "user" },
        value: String(this.rand.chance(0.3)),
      },
    ];
  }

  private metric(companyId: string): CompanyMetric {
    const [event, period] = this.rand.pick(METRIC_EVENTS);
    return {
      account_id: "acc_acme_analytics",
      environment_id: "env_production",
      company_id: companyId,
      event_subtype: event,
      period,
      month_reset: "first_of_month",
      value: this.rand.int(0, 20_000),
      created_at: "2026-06-01T00:00:00Z",
      valid_until: null,
    };
  }

  // ---- flags ------------------------------------------------------------------------------------------------

  /** A flag (re)created: a soak flag with random rules, or a fixture flag restored as it was. */
  private putFlag(): Change[] {
    const key = this.rand.pick(this.flagPool);
    const current = this.flags.get(key.toLowerCase());
    const original = this.fixtureFlags.get(key.toLowerCase());
    // Never changed in place: bodies already planned share these objects.
    const flag = structuredClone(current ?? original ?? this.newFlag(key));
    if (current) flag.default_value = !flag.default_value;
    this.flags.set(key.toLowerCase(), flag);
    return [{ method: "PUT", path: `/flags/${encodeURIComponent(flag.key)}`, body: flag }];
  }

  /** A rule change on an existing flag: a value flipped, a rule dropped, a rule added, or the priorities shuffled. */
  private changeRules(): Change[] | undefined {
    const live = [...this.flags.values()];
    if (live.length === 0) return undefined;
    const flag = structuredClone(this.rand.pick(live));
    const how = this.rand.weighted({ flip: 3, drop: flag.rules.length > 0 ? 2 : 0, add: 2, reorder: 1 });
    if (how === "flip" && flag.rules.length > 0) {
      const rule = this.rand.pick(flag.rules);
      rule.value = !rule.value;
    } else if (how === "drop") {
      flag.rules.splice(this.rand.int(0, flag.rules.length - 1), 1);
    } else if (how === "reorder") {
      for (const rule of flag.rules) rule.priority = this.rand.int(1, 20);
    } else {
      flag.rules.push(this.rule(flag));
    }
    this.flags.set(flag.key.toLowerCase(), flag);
    return [{ method: "PUT", path: `/flags/${encodeURIComponent(flag.key)}`, body: flag }];
  }

  private deleteFlag(): Change[] | undefined {
    const live = [...this.flags.values()];
    if (live.length < 8) return undefined;
    const flag = this.rand.pick(live);
    this.flags.delete(flag.key.toLowerCase());
    return [{ method: "DELETE", path: `/flags/${encodeURIComponent(flag.key)}` }];
  }

  private newFlag(key: string): Flag {
    const spelled = this.rand.chance(0.25) ? key.replace(/^soak-flag/, "Soak-Flag") : key;
    const flag: Flag = {
      id: `flag_${key.replaceAll("-", "_")}`,
      account_id: "acc_acme_analytics",
      environment_id: "env_production",
      key: spelled,
      rules: [],
      default_value: this.rand.chance(0.3),
    };
    for (let i = this.rand.int(0, 3); i > 0; i--) flag.rules.push(this.rule(flag));
    return flag;
  }

  /** A rule of the fixture's flags, re-identified for `flag`, with a random priority and value. */
  private rule(flag: Flag): Rule {
    const rule = structuredClone(this.rand.pick(this.ruleTemplates));
    rule.id = `rule_soak_${this.ruleSerial++}`;
    rule.flag_id = flag.id;
    rule.priority = this.rand.int(1, 20);
    rule.value = this.rand.chance(0.6);
    return rule;
  }
}
