/**
 * The REST side of the emulator: the listing endpoints the replicator bulk-loads from (docs/reference/protocol.md §5),
 * in the REST API's shapes, with API-key checks and injected faults; the flag checks of an SDK in its default mode
 * (./checks.ts) and event capture (./capture.ts), which faults leave alone.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { companyToRest, userToRest } from "../model/rest.js";
import { capture } from "./capture.js";
import { check } from "./checks.js";
import type { DatastreamHub } from "./datastream.js";
import type { EventLog } from "./event-log.js";
import type { Faults } from "./faults.js";
import { HttpError, readJson, sendError, sendJson } from "./http.js";
import type { EmulatorState } from "./state.js";

export interface RestCounters {
  /** Listing requests served or failed. */
  rest: number;
  /** `POST /flags/{key}/check`, `/flags/check` and `/flags/check-bulk`: REST checks, or an SDK's fallbacks. */
  flag_checks: number;
  /** `POST /batch`: event capture (when the SDK's eventCaptureBaseURL points here). */
  capture_batches: number;
}

export interface RestContext {
  state: EmulatorState;
  hub: DatastreamHub;
  faults: Faults;
  apiKey: string | undefined;
  counters: RestCounters;
  events: EventLog;
}

/** With `--api-key`, only that key; without, any non-empty key. */
export function keyAccepted(apiKey: string | undefined, given: string | string[] | undefined): boolean {
  const key = Array.isArray(given) ? given[0] : given;
  if (!key) return false;
  return apiKey === undefined || key === apiKey;
}

const DEFAULT_LIMIT = 100;

function intParam(url: URL, name: string, def: number, min: number): number {
  const raw = url.searchParams.get(name);
  if (raw === null || raw === "") return def;
  if (!/^\d+$/.test(raw))
    throw new HttpError(400, `${name}: expected a non-negative integer, got ${JSON.stringify(raw)}`);
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < min) throw new HttpError(400, `${name}: must be at least ${min}`);
  return n;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function handleRest(req: IncomingMessage, res: ServerResponse, url: URL, ctx: RestContext): Promise<void> {
  try {
    await route(req, res, url, ctx);
  } catch (err) {
    if (!(err instanceof HttpError)) throw err;
    req.resume();
    sendError(res, err.status, err.message, undefined, err.extra);
  }
}

function authorise(req: IncomingMessage, ctx: RestContext): void {
  if (!keyAccepted(ctx.apiKey, req.headers["x-schematic-api-key"])) {
    throw new HttpError(401, "Unauthorized: missing or invalid X-Schematic-Api-Key");
  }
}

async function route(req: IncomingMessage, res: ServerResponse, url: URL, ctx: RestContext): Promise<void> {
  const path = url.pathname;
  const method = req.method ?? "GET";

  if (method === "POST" && path === "/batch") {
    ctx.counters.capture_batches++;
    authorise(req, ctx);
    sendJson(res, 200, await capture(ctx, await readJson(req)));
    return;
  }
  if (method === "POST" && (path === "/flags/check-bulk" || /^\/flags(\/[^/]+)?\/check$/.test(path))) {
    ctx.counters.flag_checks++;
    authorise(req, ctx);
    sendJson(res, 200, await check(ctx.state, path, await readJson(req)));
    return;
  }

  ctx.counters.rest++;
  const fault = ctx.faults.rest(path);
  if (fault.latencyMs > 0) await sleep(fault.latencyMs);
  if (fault.failStatus > 0) {
    req.resume();
    const headers: Record<string, string> =
      fault.retryAfterS !== undefined ? { "retry-after": String(fault.retryAfterS) } : {};
    sendError(res, fault.failStatus, "injected fault", headers);
    return;
  }
  authorise(req, ctx);

  const table =
    path === "/companies" || path === "/companies/count"
      ? "companies"
      : path === "/users" || path === "/users/count"
        ? "users"
        : null;
  if (table === null) {
    sendError(res, 404, `not found: ${method} ${path}`);
    return;
  }
  if (method !== "GET") {
    sendError(res, 405, `method not allowed: ${method} ${path}`, { allow: "GET" });
    return;
  }
  const size = table === "companies" ? ctx.state.companies.size : ctx.state.users.size;
  if (path.endsWith("/count")) {
    sendJson(res, 200, { data: { count: size }, params: {} });
    return;
  }
  const limit = intParam(url, "limit", DEFAULT_LIMIT, 1);
  const offset = intParam(url, "offset", 0, 0);
  // `ids` (repeated, as the API's clients send an array): only those entities, in id order, then limit/offset.
  const ids = url.searchParams.getAll("ids");
  const only = ids.length ? ids : undefined;
  // Names given by identify events replace the synthesised ones.
  const named = <T extends { id: string; name: string }>(names: Map<string, string>, r: T): T => {
    const name = names.get(r.id);
    return name === undefined ? r : { ...r, name };
  };
  const { companies, users } = ctx.state;
  const data =
    table === "companies"
      ? companies.page(offset, limit, only).map((c) => named(companies.names, companyToRest(c)))
      : users.page(offset, limit, only).map((u) => named(users.names, userToRest(u)));
  sendJson(res, 200, { data, params: { limit, offset } });
}
