/**
 * The admin API under `/_emulator/` (DESIGN.md §4): change entities (validated as strictly as the SDK parses
 * the stream; all-or-nothing for bulk), drive connections (disconnect, reload, raw frames), set faults, read
 * the state and dump it as a fixture. A change answers once its push is queued on every open connection.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
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
import { type ChangeType, type DatastreamHub, isValidCloseCode } from "./datastream.js";
import { FaultError, type Faults, parseFaults } from "./faults.js";
import { parseFeedSpec, runFeed } from "./feed.js";
import { HttpError, readJson, sendError, sendJson } from "./http.js";
import type { StreamKind } from "./replay.js";
import type { RestCounters } from "./rest.js";
import { ConflictError, type EmulatorState, type EntityTable, type FlagTable } from "./state.js";

export interface AdminContext {
  state: EmulatorState;
  hub: DatastreamHub;
  faults: Faults;
  counters: RestCounters;
}

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
      // The merge the clients apply to the pushed partial (redis-contract.md §8), so all sides agree.
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

function push(hub: DatastreamHub, a: Applied): string {
  return hub.publish(a.kind, a.type, a.entityId, a.data);
}

function bulk(ctx: AdminContext, body: unknown): { stream_id?: string; count: number } {
  const changes = (body as { changes?: unknown } | undefined)?.changes;
  if (!Array.isArray(changes))
    throw new HttpError(400, '$.changes: expected {"changes": [{"method", "path", "body"}, ...]}');
  const applied: Applied[] = [];
  try {
    for (let i = 0; i < changes.length; i++) {
      const c = changes[i] as Change | null;
      try {
        if (typeof c !== "object" || c === null || typeof c.method !== "string" || typeof c.path !== "string") {
          throw new HttpError(400, 'expected {"method": "PUT|PATCH|DELETE", "path": "/companies/{id}", "body": {...}}');
        }
        applied.push(applyChange(ctx.state, { method: c.method.toUpperCase(), path: c.path, body: c.body }));
      } catch (err) {
        if (err instanceof HttpError) throw new HttpError(err.status, `changes[${i}]: ${err.message}`);
        throw err;
      }
    }
  } catch (err) {
    for (let i = applied.length - 1; i >= 0; i--) applied[i]!.undo();
    throw err;
  }
  let last: string | undefined;
  ctx.hub.batch(() => {
    for (const a of applied) last = push(ctx.hub, a);
  });
  return last === undefined ? { count: 0 } : { stream_id: last, count: applied.length };
}

function objectBody(body: unknown, allowed: readonly string[]): Record<string, unknown> {
  if (body === undefined) return {};
  if (typeof body !== "object" || body === null || Array.isArray(body))
    throw new HttpError(400, "$: expected a JSON object");
  for (const k of Object.keys(body)) {
    if (!allowed.includes(k))
      throw new HttpError(400, `$.${k}: unknown field (expected ${allowed.join(", ") || "none"})`);
  }
  return body as Record<string, unknown>;
}

function stateView(ctx: AdminContext): Record<string, unknown> {
  const { state, hub } = ctx;
  return {
    companies: state.companies.size,
    users: state.users.size,
    flags: state.flags.size,
    connections: hub.connections.size,
    stream_id: hub.clock.last?.id ?? null,
    replay_log: { size: hub.log.size, oldest: hub.log.oldest()?.id ?? null, capacity: hub.log.capacity },
    connections_by_mode: hub.connectionsByMode(),
    connections_compressed: hub.compressedConnections(),
    requests: { ...ctx.counters },
  };
}

async function write(res: ServerResponse, chunk: string): Promise<void> {
  if (!res.write(chunk)) await new Promise<void>((resolve) => res.once("drain", resolve));
}

/** Streams the whole state as a fixture (companies and users in id order, flags in key order). */
async function dump(res: ServerResponse, state: EmulatorState): Promise<void> {
  res.writeHead(200, { "content-type": "application/json" });
  await write(res, `{"flags":${JSON.stringify(state.flags.list())}`);
  for (const [name, table] of [
    ["companies", state.companies],
    ["users", state.users],
  ] as const) {
    await write(res, `,"${name}":[`);
    let batch: string[] = [];
    let first = true;
    for (const e of table.values()) {
      batch.push(JSON.stringify(e));
      if (batch.length === 500) {
        await write(res, (first ? "" : ",") + batch.join(","));
        first = false;
        batch = [];
      }
    }
    if (batch.length > 0) await write(res, (first ? "" : ",") + batch.join(","));
    await write(res, "]");
  }
  res.end("}");
}

export async function handleAdmin(
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
  ctx: AdminContext,
): Promise<void> {
  const method = req.method ?? "GET";
  const route = url.pathname.slice("/_emulator".length);
  try {
    switch (route) {
      case "/state":
        if (method !== "GET") break;
        sendJson(res, 200, stateView(ctx));
        return;
      case "/dump":
        if (method !== "GET") break;
        await dump(res, ctx.state);
        return;
      case "/faults":
        if (method === "GET") {
          sendJson(res, 200, ctx.faults.settings);
          return;
        }
        if (method !== "POST") break;
        try {
          ctx.faults.set(parseFaults((await readJson(req)) ?? {}));
        } catch (err) {
          if (err instanceof FaultError) throw new HttpError(400, err.message);
          throw err;
        }
        sendJson(res, 200, {});
        return;
      case "/bulk": {
        if (method !== "POST") break;
        const body = await readJson(req);
        const generate = (body as { generate?: unknown } | undefined)?.generate;
        if (generate !== undefined) {
          if ((body as { changes?: unknown }).changes !== undefined) {
            throw new HttpError(400, "$: give either changes or generate, not both");
          }
          sendJson(res, 200, await runFeed(ctx.state, ctx.hub, parseFeedSpec(generate)));
          return;
        }
        sendJson(res, 200, bulk(ctx, body));
        return;
      }
      case "/disconnect": {
        if (method !== "POST") break;
        const body = objectBody(await readJson(req), ["code", "drop"]);
        if (body.code !== undefined && !isValidCloseCode(body.code)) {
          throw new HttpError(400, `$.code: ${JSON.stringify(body.code)} is not a close code a server may send`);
        }
        if (body.drop !== undefined && typeof body.drop !== "boolean")
          throw new HttpError(400, "$.drop: expected a boolean");
        ctx.hub.disconnect({ code: body.code as number | undefined, drop: body.drop === true });
        sendJson(res, 200, {});
        return;
      }
      case "/reload":
        if (method !== "POST") break;
        objectBody(await readJson(req), []);
        ctx.hub.broadcastReload();
        sendJson(res, 200, {});
        return;
      case "/raw": {
        if (method !== "POST") break;
        const body = objectBody(await readJson(req), ["frame"]);
        if (typeof body.frame !== "string") throw new HttpError(400, "$.frame: expected a string");
        ctx.hub.broadcastRaw(body.frame);
        sendJson(res, 200, {});
        return;
      }
      default: {
        if (!/^\/(companies|users|flags)\/[^/]+$/.test(route)) {
          throw new HttpError(404, `not found: ${method} ${url.pathname}`);
        }
        const body = method === "DELETE" ? undefined : await readJson(req);
        if (method === "DELETE") req.resume();
        const applied = applyChange(ctx.state, { method, path: route, body });
        sendJson(res, 200, { stream_id: push(ctx.hub, applied) });
        return;
      }
    }
    throw new HttpError(405, `method not allowed: ${method} ${url.pathname}`);
  } catch (err) {
    if (err instanceof HttpError) {
      req.resume();
      sendError(res, err.status, err.message);
      return;
    }
    throw err;
  }
}
