/**
 * Changes to the emulator's entities — from the admin API, its bulk endpoint and captured events — validated as
 * strictly as the SDK parses the stream, applied to the state, then pushed on the datastream. A {@link ChangeSet}
 * applies several changes all-or-nothing and pushes them in order; its answer comes once every frame is on the
 * sockets (docs/design/emulator.md, "What an answer guarantees").
 */
import {
  COMPANY_PARTIAL_FIELDS,
  EntityError,
  parseCompany,
  parseCompanyPartial,
  parseFlag,
  parseUser,
  parseUserPartial,
  USER_PARTIAL_FIELDS,
} from "../model/entities.js";
import { mergeCompany, mergeUser } from "../model/merge.js";
import type { Company, User } from "../model/wire.js";
import type { ChangeType, DatastreamHub } from "./datastream.js";
import { HttpError } from "./http.js";
import type { StreamKind } from "./replay.js";
import { ConflictError, type EmulatorState, type EntityTable, type FlagTable } from "./state.js";

/** One change, as a bulk element or from an admin request's method and path. */
export interface Change {
  method: string;
  /** `/companies/{id}`, `/users/{id}` or `/flags/{key}` (a leading `/_emulator` is accepted). */
  path: string;
  body?: unknown;
}

/** A change applied to the state but not yet pushed. */
interface Applied {
  kind: StreamKind;
  type: ChangeType;
  entityId: string | null;
  data: unknown;
  undo(): void;
}

function target(path: string): { collection: string; id: string } {
  const p = path.startsWith("/_emulator/") ? path.slice("/_emulator".length) : path;
  const parts = p.split("/");
  if (parts.length !== 3 || parts[0] !== "" || !parts[2]) {
    throw new HttpError(
      404,
      `unknown path ${JSON.stringify(path)} (expected /companies/{id}, /users/{id} or /flags/{key})`,
    );
  }
  let id: string;
  try {
    id = decodeURIComponent(parts[2]);
  } catch {
    throw new HttpError(400, `malformed percent-encoding in ${JSON.stringify(path)}`);
  }
  if (parts[1] !== "companies" && parts[1] !== "users" && parts[1] !== "flags") {
    throw new HttpError(404, `unknown collection ${JSON.stringify(parts[1])}`);
  }
  return { collection: parts[1], id };
}

function applyEntity<T extends Company | User>(
  table: EntityTable<T>,
  kind: "company" | "user",
  method: string,
  id: string,
  body: unknown,
): Applied {
  const parseFull = (kind === "company" ? parseCompany : parseUser) as (raw: unknown, mode: "wire") => T;
  switch (method) {
    case "PUT": {
      const entity = parseFull(body, "wire");
      if (entity.id !== id) {
        throw new HttpError(
          400,
          `$.id: ${JSON.stringify(entity.id)} differs from the ${kind} id in the path (${JSON.stringify(id)})`,
        );
      }
      table.checkKeys(entity);
      const prev = table.put(entity);
      return { kind, type: "full", entityId: id, data: entity, undo: () => table.restore(id, prev) };
    }
    case "PATCH": {
      const base = table.get(id);
      if (!base) throw new HttpError(404, `no ${kind} with id ${JSON.stringify(id)}`);
      if (typeof body !== "object" || body === null || Array.isArray(body)) {
        throw new HttpError(400, "$: expected a JSON object of the fields to merge");
      }
      const allowed = kind === "company" ? COMPANY_PARTIAL_FIELDS : USER_PARTIAL_FIELDS;
      for (const [k, v] of Object.entries(body)) {
        if (!allowed.has(k)) throw new HttpError(400, `$.${k}: unknown field for a ${kind} partial`);
        if (k === "id" && v !== id) throw new HttpError(400, "$.id: the id cannot be changed by PATCH");
      }
      const partial = (
        kind === "company" ? parseCompanyPartial(body, "wire") : parseUserPartial(body, "wire")
      ) as Partial<T>;
      delete partial.id;
      if (Object.keys(partial).length === 0) throw new HttpError(400, "$: no fields to merge");
      // The merge the clients apply to the pushed partial (docs/reference/redis-contract.md §8), so all sides agree.
      const merged = parseFull(
        kind === "company"
          ? mergeCompany(base as Company, partial as Record<string, unknown>)
          : mergeUser(base as User, partial as Record<string, unknown>),
        "wire",
      );
      table.checkKeys(merged);
      table.put(merged);
      return { kind, type: "partial", entityId: id, data: partial, undo: () => table.restore(id, base) };
    }
    case "DELETE": {
      const prev = table.remove(id);
      if (!prev) throw new HttpError(404, `no ${kind} with id ${JSON.stringify(id)}`);
      return { kind, type: "delete", entityId: id, data: prev, undo: () => table.restore(id, prev) };
    }
    default:
      throw new HttpError(405, `method ${method} not allowed on ${kind}s (PUT, PATCH, DELETE)`);
  }
}

function applyFlag(flags: FlagTable, method: string, key: string, body: unknown): Applied {
  switch (method) {
    case "PUT": {
      const flag = parseFlag(body, "wire");
      if (flag.key !== key) {
        throw new HttpError(
          400,
          `$.key: ${JSON.stringify(flag.key)} differs from the flag key in the path (${JSON.stringify(key)})`,
        );
      }
      flags.check(flag);
      const prev = flags.put(flag);
      return { kind: "flag", type: "full", entityId: null, data: flag, undo: () => flags.restore(key, prev) };
    }
    case "DELETE": {
      const prev = flags.remove(key);
      if (!prev) throw new HttpError(404, `no flag with key ${JSON.stringify(key)}`);
      return { kind: "flag", type: "delete", entityId: null, data: prev, undo: () => flags.restore(key, prev) };
    }
    default:
      throw new HttpError(405, `method ${method} not allowed on flags (PUT, DELETE)`);
  }
}

/** Validates and applies one change to the state (throws HttpError, changing nothing, when it is refused). */
export function applyChange(state: EmulatorState, change: Change): Applied {
  const { collection, id } = target(change.path);
  try {
    if (collection === "companies") return applyEntity(state.companies, "company", change.method, id, change.body);
    if (collection === "users") return applyEntity(state.users, "user", change.method, id, change.body);
    return applyFlag(state.flags, change.method, id, change.body);
  } catch (err) {
    if (err instanceof EntityError || err instanceof ConflictError) throw new HttpError(400, err.message);
    throw err;
  }
}

/** Changes applied to the state one by one, kept or undone together, and pushed in order. */
export class ChangeSet {
  private readonly applied: Applied[] = [];

  constructor(
    private readonly state: EmulatorState,
    private readonly hub: DatastreamHub,
  ) {}

  get size(): number {
    return this.applied.length;
  }

  /** Validates and applies one change (throws HttpError when it is refused; earlier ones stay until rollback). */
  apply(change: Change): void {
    this.applied.push(applyChange(this.state, change));
  }

  /** Undoes every applied change, newest first. */
  rollback(): void {
    for (let i = this.applied.length - 1; i >= 0; i--) this.applied[i]!.undo();
    this.applied.length = 0;
  }

  /**
   * Pushes every applied change in order (call it in the same turn as the applies, so no other change comes
   * between); resolves with their stream ids once every open connection has them ({@link DatastreamHub.delivered}).
   */
  async publish(): Promise<string[]> {
    const ids = this.hub.batch(() => this.applied.map((a) => this.hub.publish(a.kind, a.type, a.entityId, a.data)));
    this.applied.length = 0;
    await this.hub.delivered();
    return ids;
  }
}
