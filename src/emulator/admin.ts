/**
 * The admin API under `/_emulator/`: change entities (./changes.ts; all-or-nothing for bulk), drive connections
 * (disconnect, reload, raw frames), set faults, read the state, dump it as a fixture, list captured events. A
 * change answers once every open connection has it (docs/design/emulator.md, "What an answer guarantees").
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { type Change, ChangeSet } from "./changes.js";
import { type DatastreamHub, isValidCloseCode } from "./datastream.js";
import type { EventLog } from "./event-log.js";
import { FaultError, type Faults, parseFaults } from "./faults.js";
import { parseFeedSpec, runFeed } from "./feed.js";
import { HttpError, readJson, sendError, sendJson } from "./http.js";
import type { RestCounters } from "./rest.js";
import type { EmulatorState } from "./state.js";

export interface AdminContext {
  state: EmulatorState;
  hub: DatastreamHub;
  faults: Faults;
  counters: RestCounters;
  events: EventLog;
}

async function bulk(ctx: AdminContext, body: unknown): Promise<{ stream_id?: string; count: number }> {
  const changes = (body as { changes?: unknown } | undefined)?.changes;
  if (!Array.isArray(changes))
    throw new HttpError(400, '$.changes: expected {"changes": [{"method", "path", "body"}, ...]}');
  const set = new ChangeSet(ctx.state, ctx.hub);
  try {
    for (let i = 0; i < changes.length; i++) {
      const c = changes[i] as Change | null;
      try {
        if (typeof c !== "object" || c === null || typeof c.method !== "string" || typeof c.path !== "string") {
          throw new HttpError(400, 'expected {"method": "PUT|PATCH|DELETE", "path": "/companies/{id}", "body": {...}}');
        }
        set.apply({ method: c.method.toUpperCase(), path: c.path, body: c.body });
      } catch (err) {
        if (err instanceof HttpError) throw new HttpError(err.status, `changes[${i}]: ${err.message}`);
        throw err;
      }
    }
  } catch (err) {
    set.rollback();
    throw err;
  }
  const ids = await set.publish();
  return ids.length === 0 ? { count: 0 } : { stream_id: ids[ids.length - 1], count: ids.length };
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
      case "/events":
        if (method === "GET") {
          sendJson(res, 200, ctx.events.view(url.searchParams.get("type") ?? undefined));
          return;
        }
        if (method !== "DELETE") break;
        ctx.events.clear();
        sendJson(res, 200, {});
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
        sendJson(res, 200, await bulk(ctx, body));
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
        const set = new ChangeSet(ctx.state, ctx.hub);
        set.apply({ method, path: route, body });
        const [streamId] = await set.publish();
        sendJson(res, 200, { stream_id: streamId });
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
