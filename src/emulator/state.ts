/**
 * The emulator's data: flags, companies and users in the datastream wire shape, with the (key name, value)
 * index used for lookups (case-insensitive) and for the uniqueness rule, a stable order by id for REST paging,
 * and an undo journal so that a bulk change can be applied all-or-nothing.
 */
import type { Company, Fixture, Flag, User } from "../model/wire.js";

export type Keyed = { id: string; keys: Record<string, string> };

export class ConflictError extends Error {}

function pairKey(name: string, value: string): string {
  return `${name.toLowerCase()}\u0000${value.toLowerCase()}`;
}

function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Companies or users: by id, plus the lowercased (key name, value) → id index. */
export class EntityTable<T extends Keyed> {
  readonly byId = new Map<string, T>();
  /** Display names given by identify events (the wire shape has none; REST listings show them). */
  readonly names = new Map<string, string>();
  private readonly index = new Map<string, string>();
  private sorted: string[] | null = [];

  constructor(readonly noun: "company" | "user") {}

  get size(): number {
    return this.byId.size;
  }

  get(id: string): T | undefined {
    return this.byId.get(id);
  }

  /** The entity owning any of the pairs, first pair first (lookups are case-insensitive). */
  lookup(keys: Record<string, string>): T | undefined {
    for (const name in keys) {
      const value = keys[name];
      if (typeof value !== "string") continue;
      const id = this.index.get(pairKey(name, value));
      if (id !== undefined) return this.byId.get(id);
    }
    return undefined;
  }

  /** Throws ConflictError when another entity already holds one of `entity`'s (key name, value) pairs. */
  checkKeys(entity: T): void {
    for (const name in entity.keys) {
      const owner = this.index.get(pairKey(name, entity.keys[name]!));
      if (owner !== undefined && owner !== entity.id) {
        throw new ConflictError(
          `key ${JSON.stringify(name)} = ${JSON.stringify(entity.keys[name])} already belongs to ${this.noun} ${JSON.stringify(owner)}`,
        );
      }
    }
  }

  /** Stores `entity` (after checkKeys); returns the previous version. */
  put(entity: T): T | undefined {
    const prev = this.byId.get(entity.id);
    if (prev !== undefined && prev.keys === entity.keys) {
      // The same keys object (a re-tagged copy, as the benchmark feed makes): the index is already right.
      this.byId.set(entity.id, entity);
      return prev;
    }
    if (prev) this.unindex(prev);
    else this.sorted = null;
    this.byId.set(entity.id, entity);
    for (const name in entity.keys) this.index.set(pairKey(name, entity.keys[name]!), entity.id);
    return prev;
  }

  remove(id: string): T | undefined {
    const prev = this.byId.get(id);
    if (!prev) return undefined;
    this.unindex(prev);
    this.byId.delete(id);
    this.sorted = null;
    return prev;
  }

  /** Restores a previous version (undo): `prev` undefined removes `id`. */
  restore(id: string, prev: T | undefined): void {
    if (prev) this.put(prev);
    else this.remove(id);
  }

  private unindex(entity: T): void {
    for (const name in entity.keys) {
      const k = pairKey(name, entity.keys[name]!);
      if (this.index.get(k) === entity.id) this.index.delete(k);
    }
  }

  /** Ids in stable order (by id, code unit order). */
  ids(): string[] {
    if (!this.sorted) this.sorted = [...this.byId.keys()].sort(compareIds);
    return this.sorted;
  }

  page(offset: number, limit: number, only?: string[]): T[] {
    const ids = only ? [...new Set(only)].filter((id) => this.byId.has(id)).sort(compareIds) : this.ids();
    const out: T[] = [];
    const end = Math.min(ids.length, offset + limit);
    for (let i = offset; i < end; i++) out.push(this.byId.get(ids[i]!)!);
    return out;
  }

  /** A snapshot of the current order; entities removed while iterating are skipped. */
  *values(): IterableIterator<T> {
    for (const id of this.ids()) {
      const e = this.byId.get(id);
      if (e) yield e;
    }
  }
}

/** Flags by key; flag keys are unique case-insensitively (the SDKs lowercase them), flag ids unique. */
export class FlagTable {
  readonly byKey = new Map<string, Flag>();
  private readonly lower = new Map<string, string>();
  private readonly ids = new Map<string, string>();

  get size(): number {
    return this.byKey.size;
  }

  get(key: string): Flag | undefined {
    return this.byKey.get(key);
  }

  /** The flag whose key equals `key` ignoring case (the SDKs lowercase flag keys in their caches). */
  find(key: string): Flag | undefined {
    const exact = this.lower.get(key.toLowerCase());
    return exact === undefined ? undefined : this.byKey.get(exact);
  }

  check(flag: Flag): void {
    const sameKey = this.lower.get(flag.key.toLowerCase());
    if (sameKey !== undefined && sameKey !== flag.key) {
      throw new ConflictError(
        `flag key ${JSON.stringify(flag.key)} differs only in case from flag ${JSON.stringify(sameKey)}`,
      );
    }
    const idOwner = this.ids.get(flag.id);
    if (idOwner !== undefined && idOwner !== flag.key) {
      throw new ConflictError(`flag id ${JSON.stringify(flag.id)} already belongs to flag ${JSON.stringify(idOwner)}`);
    }
  }

  put(flag: Flag): Flag | undefined {
    const prev = this.byKey.get(flag.key);
    if (prev) this.ids.delete(prev.id);
    this.byKey.set(flag.key, flag);
    this.lower.set(flag.key.toLowerCase(), flag.key);
    this.ids.set(flag.id, flag.key);
    return prev;
  }

  remove(key: string): Flag | undefined {
    const prev = this.byKey.get(key);
    if (!prev) return undefined;
    this.byKey.delete(key);
    this.lower.delete(key.toLowerCase());
    this.ids.delete(prev.id);
    return prev;
  }

  restore(key: string, prev: Flag | undefined): void {
    if (prev) this.put(prev);
    else this.remove(key);
  }

  /** All flags, ordered by key. */
  list(): Flag[] {
    return [...this.byKey.keys()].sort(compareIds).map((k) => this.byKey.get(k)!);
  }
}

export class EmulatorState {
  readonly flags = new FlagTable();
  readonly companies = new EntityTable<Company>("company");
  readonly users = new EntityTable<User>("user");

  /** Loads validated entities (throws ConflictError naming the first clash). */
  load(fixture: Fixture): void {
    for (const f of fixture.flags) {
      this.flags.check(f);
      this.flags.put(f);
    }
    for (const c of fixture.companies) {
      this.companies.checkKeys(c);
      this.companies.put(c);
    }
    for (const u of fixture.users) {
      this.users.checkKeys(u);
      this.users.put(u);
    }
  }
}
