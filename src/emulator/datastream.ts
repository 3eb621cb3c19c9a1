/**
 * The `/datastream` WebSocket side of the emulator: requests from replicators and direct-mode SDKs, the flags
 * snapshot, lookups, subscriptions with replay, and the fan-out of every change to the connections that asked
 * for it. Every frame is one JSON object in one text frame; a change is serialised once and the same bytes are
 * queued on every connection (the socket buffers for slow readers: nothing is dropped, nobody waits).
 */
import type { IncomingMessage } from "node:http";
import type { WebSocket } from "ws";
import { ENTITY_TYPES } from "../model/wire.js";
import { Connection } from "./connection.js";
import { type LogEntry, ReplayLog, StreamClock, type StreamId, type StreamKind } from "./replay.js";
import type { EmulatorState } from "./state.js";

const ENTITY_TYPE_OF: Record<StreamKind, string> = {
  company: ENTITY_TYPES.company,
  user: ENTITY_TYPES.user,
  flag: ENTITY_TYPES.flag,
};

export type ChangeType = "full" | "partial" | "delete";

/** The X-Schematic-Datastream-Mode header of replicators (the TypeScript SDK in direct mode sends "datastream"). */
const REPLICATOR_MODE = "replicator";

/** One server frame; `dataJson` is the serialised data, `extra` more members (`,"stream_id":"…"`). */
function frame(entityType: string, messageType: string, entityId: string | null, dataJson: string, extra = ""): string {
  const id = entityId === null ? "null" : JSON.stringify(entityId);
  return `{"entity_type":${JSON.stringify(entityType)},"message_type":"${messageType}","entity_id":${id}${extra},"data":${dataJson}}`;
}

/** The text of a change frame with its stream id (`dataJson`: the serialised data). */
export function changeFrame(
  kind: StreamKind,
  type: ChangeType,
  entityId: string | null,
  sid: StreamId,
  dataJson: string,
): string {
  return frame(ENTITY_TYPE_OF[kind], type, entityId, dataJson, `,"stream_id":"${sid.id}"`);
}

function isStringMap(v: unknown): v is Record<string, string> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return false;
  for (const k in v) if (typeof (v as Record<string, unknown>)[k] !== "string") return false;
  return true;
}

export function isValidCloseCode(code: unknown): code is number {
  return (
    typeof code === "number" &&
    Number.isInteger(code) &&
    ((code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) ||
      (code >= 3000 && code <= 4999))
  );
}

export class DatastreamHub {
  readonly connections = new Set<Connection>();
  readonly clock = new StreamClock();
  readonly log: ReplayLog;
  private flagsSnapshot: string | null = null;

  constructor(
    private readonly state: EmulatorState,
    replayLogSize: number,
    /** How long a change waits for a direct-mode client that has stopped reading (see {@link delivered}). */
    private readonly deliveryTimeoutMs = 1000,
  ) {
    this.log = new ReplayLog(replayLogSize);
  }

  connectionsByMode(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const c of this.connections) out[c.mode] = (out[c.mode] ?? 0) + 1;
    return out;
  }

  /** How many connections negotiated permessage-deflate (accepted whenever a client offers it). */
  compressedConnections(): number {
    let n = 0;
    for (const c of this.connections) if (c.compressed) n++;
    return n;
  }

  attach(ws: WebSocket, req: IncomingMessage): Connection {
    const header = (name: string) => {
      const v = req.headers[name];
      return (Array.isArray(v) ? v[0] : v) ?? "";
    };
    const conn = new Connection(ws, header("x-schematic-datastream-mode"));
    this.connections.add(conn);
    ws.on("message", (data, isBinary) => {
      const text = Array.isArray(data) ? Buffer.concat(data).toString("utf8") : data.toString("utf8");
      this.onRequest(conn, text, isBinary);
    });
    ws.on("close", () => this.connections.delete(conn));
    ws.on("error", () => this.connections.delete(conn));
    return conn;
  }

  /** Publishes one change: assigns its stream id, logs it and queues it on every connection that wants it. */
  publish(kind: StreamKind, type: ChangeType, entityId: string | null, data: unknown): string {
    return this.publishJson(kind, type, entityId, JSON.stringify(data ?? null));
  }

  /** {@link publish} with the data already serialised (the benchmark feed builds its frames ahead of time). */
  publishJson(kind: StreamKind, type: ChangeType, entityId: string | null, dataJson: string): string {
    const sid = this.clock.next();
    return this.publishFrame(kind, sid, Buffer.from(changeFrame(kind, type, entityId, sid, dataJson), "utf8"));
  }

  /**
   * Logs and queues a frame built by {@link changeFrame} with a stream id from this hub's clock. Frames must be
   * published in the order of their ids (the benchmark feed builds a run of frames, then publishes them all).
   */
  publishFrame(kind: StreamKind, sid: StreamId, buf: Buffer): string {
    if (kind === "flag") this.flagsSnapshot = null;
    this.log.append({ ms: sid.ms, seq: sid.seq, id: sid.id, kind, frame: buf });
    for (const c of this.connections) if (c.wants(kind)) c.send(buf);
    return sid.id;
  }

  /**
   * Resolves once the frames published so far have reached every open connection: received by each direct-mode
   * client (an SDK; unless it stopped reading for `deliveryTimeoutMs`), on the socket of each
   * replicator (which may push back by not reading: nobody waits for that). See docs/design/emulator.md.
   */
  async delivered(): Promise<void> {
    await Promise.all(
      [...this.connections].map((c) =>
        c.mode === REPLICATOR_MODE ? c.written() : c.delivered(this.deliveryTimeoutMs),
      ),
    );
  }

  /** Runs `fn` (which publishes many changes) with every socket corked, so the frames leave in few writes. */
  batch<T>(fn: () => T): T {
    const corked = [...this.connections];
    for (const c of corked) c.cork();
    try {
      return fn();
    } finally {
      for (const c of corked) c.uncork();
    }
  }

  /** Sends a text frame as given to every connection. */
  broadcastRaw(text: string): void {
    const buf = Buffer.from(text, "utf8");
    for (const c of this.connections) c.send(buf);
  }

  broadcastReload(): void {
    this.broadcastRaw(frame(ENTITY_TYPES.companies, "reload", null, "null"));
  }

  disconnect(opts: { code?: number; drop?: boolean }): void {
    for (const c of [...this.connections]) {
      this.connections.delete(c);
      if (opts.drop) c.ws.terminate();
      else c.ws.close(opts.code ?? 1012, "emulator disconnect");
    }
  }

  /** Set by {@link closeAll}: the server is shutting down (a running benchmark feed stops). */
  closed = false;

  closeAll(): void {
    this.closed = true;
    for (const c of this.connections) c.ws.terminate();
    this.connections.clear();
  }

  private flagsFrame(): string {
    if (this.flagsSnapshot === null) {
      this.flagsSnapshot = frame(ENTITY_TYPES.flags, "full", null, JSON.stringify(this.state.flags.list()));
    }
    return this.flagsSnapshot;
  }

  private error(conn: Connection, entityType: string, message: string, keys?: Record<string, string>): void {
    const data: Record<string, unknown> = { error: message };
    if (keys) {
      data.keys = keys;
      data.entity_type = entityType;
    }
    conn.send(frame(entityType, "error", null, JSON.stringify(data)));
  }

  private onRequest(conn: Connection, text: string, isBinary: boolean): void {
    let msg: unknown;
    try {
      if (isBinary) throw new Error("binary frames are not supported");
      msg = JSON.parse(text);
    } catch (err) {
      this.error(conn, "", `invalid request: ${(err as Error).message}`);
      return;
    }
    const req = (msg as { data?: unknown } | null)?.data;
    if (typeof req !== "object" || req === null || Array.isArray(req)) {
      this.error(conn, "", 'invalid request: expected {"data": {...}}');
      return;
    }
    const {
      action,
      entity_type: entityType,
      keys,
      replay_from: replayFrom,
      page_size: pageSize,
    } = req as Record<string, unknown>;
    if (typeof entityType !== "string") {
      this.error(conn, "", "invalid request: entity_type must be a string");
      return;
    }
    if (action !== undefined && action !== null && action !== "" && action !== "start" && action !== "stop") {
      this.error(conn, entityType, `invalid request: unknown action ${JSON.stringify(action)}`);
      return;
    }
    const stop = action === "stop";
    if (replayFrom !== undefined && replayFrom !== null && typeof replayFrom !== "string") {
      this.error(conn, entityType, "invalid request: replay_from must be a string");
      return;
    }
    switch (entityType) {
      case ENTITY_TYPES.flags:
        if (stop) conn.flags = false;
        else this.sendFlags(conn, pageSize);
        return;
      case ENTITY_TYPES.companies:
      case ENTITY_TYPES.users: {
        const kind: StreamKind = entityType === ENTITY_TYPES.companies ? "company" : "user";
        if (stop) {
          if (kind === "company") conn.companies = false;
          else conn.users = false;
          return;
        }
        this.subscribe(conn, kind, entityType, replayFrom || undefined);
        return;
      }
      case ENTITY_TYPES.company:
      case ENTITY_TYPES.user: {
        if (stop) return;
        if (!isStringMap(keys) || Object.keys(keys).length === 0) {
          this.error(conn, entityType, "invalid request: keys must be a non-empty object of strings", {});
          return;
        }
        this.lookup(conn, entityType === ENTITY_TYPES.company ? "company" : "user", entityType, keys);
        return;
      }
      default:
        this.error(conn, entityType, `unsupported entity_type ${JSON.stringify(entityType)}`);
    }
  }

  private sendFlags(conn: Connection, pageSize: unknown): void {
    if (typeof pageSize === "number" && Number.isInteger(pageSize) && pageSize > 0) {
      // Opt-in paginated snapshot (newest protocol revision): pages of at most page_size flags.
      const flags = this.state.flags.list();
      const pages = Math.max(1, Math.ceil(flags.length / pageSize));
      for (let p = 0; p < pages; p++) {
        const pagination = { has_more: p < pages - 1, page: p + 1, total: flags.length };
        conn.send(
          frame(
            ENTITY_TYPES.flags,
            "full",
            null,
            JSON.stringify(flags.slice(p * pageSize, (p + 1) * pageSize)),
            `,"pagination":${JSON.stringify(pagination)}`,
          ),
        );
      }
    } else conn.send(this.flagsFrame());
    conn.flags = true;
  }

  private subscribe(conn: Connection, kind: StreamKind, entityType: string, replayFrom: string | undefined): void {
    conn.send(frame(entityType, "full", null, '{"subscribed":true}'));
    if (replayFrom !== undefined) {
      const backlog: LogEntry[] | null = this.log.after(replayFrom);
      if (backlog === null) conn.send(frame(entityType, "reload", null, "null"));
      else for (const e of backlog) if (e.kind === kind) conn.send(e.frame);
    }
    // Live pushes start only now, so none can overtake the backlog.
    if (kind === "company") conn.companies = true;
    else conn.users = true;
  }

  private lookup(conn: Connection, kind: "company" | "user", entityType: string, keys: Record<string, string>): void {
    const entity = kind === "company" ? this.state.companies.lookup(keys) : this.state.users.lookup(keys);
    if (entity) conn.send(frame(entityType, "full", entity.id, JSON.stringify(entity)));
    else this.error(conn, entityType, kind === "company" ? "Company not found" : "User not found", keys);
    // A direct-mode SDK caches what it looked up: from now on it gets this entity type's changes.
    if (kind === "company") conn.companies = true;
    else conn.users = true;
  }
}
