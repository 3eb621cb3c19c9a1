/**
 * The emulator's HTTP server: REST, admin API and the `/datastream` WebSocket upgrade on one port.
 */
import { createServer, type IncomingMessage, type Server, STATUS_CODES } from "node:http";
import type { Duplex } from "node:stream";
import { WebSocketServer } from "ws";
import type { Fixture } from "../model/wire.js";
import { handleAdmin } from "./admin.js";
import { DatastreamHub } from "./datastream.js";
import { EventLog } from "./event-log.js";
import { Faults } from "./faults.js";
import { sendError } from "./http.js";
import { handleRest, keyAccepted, type RestCounters } from "./rest.js";
import { EmulatorState } from "./state.js";

export interface EmulatorServerOptions {
  /** Only this key is accepted (REST and datastream); without it, any non-empty key. */
  apiKey?: string;
  /** How many changes the replay log keeps (default 10000). */
  replayLog?: number;
  /** Initial data, already validated (see loadFixtureFile / parseFixture / generateFixture). */
  fixture?: Fixture;
  /** After how long without reading a direct-mode client is no longer waited for (default 1000 ms). */
  deliveryTimeoutMs?: number;
}

export class EmulatorServer {
  readonly state = new EmulatorState();
  readonly faults = new Faults();
  readonly hub: DatastreamHub;
  readonly counters: RestCounters = { rest: 0, flag_checks: 0, capture_batches: 0 };
  readonly events = new EventLog();
  readonly http: Server;
  /** permessage-deflate is accepted when a client offers it (the replicator does only with DATASTREAM_COMPRESSION). */
  private readonly wss = new WebSocketServer({ noServer: true, perMessageDeflate: true });
  private readonly apiKey: string | undefined;

  constructor(opts: EmulatorServerOptions = {}) {
    this.apiKey = opts.apiKey;
    if (opts.fixture) this.state.load(opts.fixture);
    this.hub = new DatastreamHub(this.state, opts.replayLog ?? 10_000, opts.deliveryTimeoutMs);
    this.http = createServer((req, res) => {
      const url = new URL(req.url ?? "/", "http://emulator");
      const handler =
        url.pathname === "/_emulator" || url.pathname.startsWith("/_emulator/") ? handleAdmin : handleRest;
      const ctx = {
        state: this.state,
        hub: this.hub,
        faults: this.faults,
        counters: this.counters,
        apiKey: this.apiKey,
        events: this.events,
      };
      handler(req, res, url, ctx).catch((err: unknown) => {
        if (!res.headersSent) sendError(res, 500, `internal error: ${(err as Error).message}`);
        else res.destroy(err as Error);
      });
    });
    this.http.keepAliveTimeout = 5_000;
    this.http.on("upgrade", (req, socket, head) => this.upgrade(req, socket, head));
  }

  private refuse(socket: Duplex, status: number, message: string): void {
    const body = JSON.stringify({ error: message });
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? "Error"}\r\nConnection: close\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
  }

  private upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on("error", () => socket.destroy());
    const path = (req.url ?? "/").split("?")[0]!;
    const authorised = keyAccepted(this.apiKey, req.headers["x-schematic-api-key"]);
    const refuseStatus = this.faults.settings.datastream_refuse_status;
    if (path.startsWith("/_emulator")) this.refuse(socket, 404, "no WebSocket here (use /datastream)");
    else if (refuseStatus !== undefined) this.refuse(socket, refuseStatus, "injected fault: datastream refused");
    else if (!authorised && (this.faults.settings.auth_failure ?? "http401") === "http401") {
      this.refuse(socket, 401, "Unauthorized: invalid X-Schematic-Api-Key");
    } else {
      this.wss.handleUpgrade(req, socket, head, (ws) => {
        if (!authorised) ws.close(4001, "unauthorized");
        else this.hub.attach(ws, req);
      });
    }
  }

  listen(port: number, host: string): Promise<number> {
    return new Promise((resolve, reject) => {
      this.http.once("error", reject);
      this.http.listen(port, host, () => {
        this.http.off("error", reject);
        const addr = this.http.address();
        resolve(typeof addr === "object" && addr ? addr.port : port);
      });
    });
  }

  async close(): Promise<void> {
    this.hub.closeAll();
    for (const ws of this.wss.clients) ws.terminate();
    await new Promise<void>((resolve) => {
      this.http.close(() => resolve());
      this.http.closeAllConnections();
    });
  }
}
