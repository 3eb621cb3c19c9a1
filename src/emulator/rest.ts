/**
 * The REST side of the emulator: the listing endpoints the replicator bulk-loads from (protocol.md §5), in the
 * REST API's shapes, with API-key checks and injected faults; plus stubs for the SDK's fallback paths, which are
 * counted so that tests can prove the SDK never took them.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { companyToRest, userToRest } from "../model/rest.js";
import type { Faults } from "./faults.js";
import { HttpError, sendError, sendJson } from "./http.js";
import type { EmulatorState } from "./state.js";

export interface RestCounters {
  /** Listing requests served or failed (after the fallback stubs). */
  rest: number;
  /** `POST /flags/{key}/check` and `POST /flags/check`: the SDK fell back from the datastream to the API. */
  flag_checks: number;
  /** `POST /batch`: event capture (when the SDK's eventCaptureBaseURL points here). */
  capture_batches: number;
}

export interface RestContext {
  state: EmulatorState;
  faults: Faults;
  apiKey: string | undefined;
  counters: RestCounters;
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
    sendError(res, err.status, err.message);
  }
}

async function route(req: IncomingMessage, res: ServerResponse, url: URL, ctx: RestContext): Promise<void> {
  const path = url.pathname;
  const method = req.method ?? "GET";

  if (method === "POST" && path === "/batch") {
    ctx.counters.capture_batches++;
    req.resume();
    sendJson(res, 200, {});
    return;
  }
  if (method === "POST" && /^\/flags(\/[^/]+)?\/check$/.test(path)) {
    ctx.counters.flag_checks++;
    req.resume();
    sendError(res, 500, "the emulator does not evaluate flags over REST (use the datastream)");
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
  if (!keyAccepted(ctx.apiKey, req.headers["x-schematic-api-key"])) {
    req.resume();
    sendError(res, 401, "Unauthorized: missing or invalid X-Schematic-Api-Key");
    return;
  }

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
  const data =
    table === "companies"
      ? ctx.state.companies.page(offset, limit, ids.length ? ids : undefined).map(companyToRest)
      : ctx.state.users.page(offset, limit, ids.length ? ids : undefined).map(userToRest);
  sendJson(res, 200, { data, params: { limit, offset } });
}
