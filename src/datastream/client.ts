/**
 * The datastream WebSocket: dial with the replicator's handshake headers, keep the connection alive with pings,
 * reconnect forever with capped exponential backoff, and give up only when the API key is rejected (HTTP 401/403
 * on upgrade, or close code 4001), which no retry can fix. Flow control: `pause()` stops reading the socket, so a
 * full pipeline pushes back on the server through TCP instead of dropping messages.
 */
import type { IncomingMessage } from "node:http";
import WebSocket from "ws";
import type { Logger } from "../util/log.js";
import { backoffDelay, sleep } from "../util/time.js";
import { CLIENT_NAME } from "./protocol.js";

export class AuthRejectedError extends Error {}

/** How long stop() waits for the peer to answer our close frame before cutting the connection. */
const CLOSE_GRACE_MS = 1000;

export interface DatastreamOptions {
  url: string;
  apiKey: string;
  clientVersion: string;
  pingIntervalMs: number;
  pongWaitMs: number;
  maxReconnectDelayMs: number;
  /** First backoff step (default 1 s, never above the cap). */
  minReconnectDelayMs?: number;
  handshakeTimeoutMs?: number;
  /** Offer permessage-deflate (default false). */
  compression?: boolean;
}

export interface DatastreamHandlers {
  /** Called once per connection, before any frame of it is delivered. */
  onOpen(session: number): void;
  /** Called for every text frame, in order. */
  onFrame(text: string, session: number): void;
  onClose(info: { session: number; code: number; reason: string }): void;
  /** The API key was rejected: the client has stopped for good. */
  onFatal(err: Error): void;
}

export class DatastreamClient {
  private ws: WebSocket | undefined;
  private stopped = false;
  private paused = false;
  private session = 0;
  private loop: Promise<void> | undefined;
  private readonly abort = new AbortController();
  connected = false;
  reconnects = 0;

  constructor(
    private readonly opts: DatastreamOptions,
    private readonly handlers: DatastreamHandlers,
    private readonly log: Logger,
  ) {}

  start(): void {
    this.loop ??= this.run();
  }

  /**
   * Stops reconnecting and closes the socket (code 1000). No frame is delivered after this call: what the server
   * sent meanwhile was never applied, so the cursor stays short of it and a replay brings it again. A socket held
   * paused by backpressure is resumed so the close handshake can complete, and cut if the peer does not answer
   * within CLOSE_GRACE_MS (ws itself would wait 30 s).
   */
  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    const ws = this.ws;
    if (ws) {
      // A socket still connecting has no receiver yet: resume() would throw (and close() aborts the handshake).
      const open = ws.readyState === WebSocket.OPEN;
      ws.close(1000, "replicator shutting down");
      if (open) ws.resume();
      const cut = setTimeout(() => ws.terminate(), CLOSE_GRACE_MS);
      cut.unref();
      await this.loop;
      clearTimeout(cut);
      return;
    }
    await this.loop;
  }

  /** Closes the current connection; the loop dials again at once (used to resynchronise from scratch). */
  restart(reason: string): void {
    this.log.info({ reason }, "restarting the datastream connection");
    this.ws?.terminate();
  }

  send(text: string): void {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(text);
  }

  pause(): void {
    if (this.paused) return;
    this.paused = true;
    this.ws?.pause();
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.ws?.resume();
  }

  private async run(): Promise<void> {
    let failures = 0;
    const minDelay = Math.min(this.opts.minReconnectDelayMs ?? 1000, this.opts.maxReconnectDelayMs);
    while (!this.stopped) {
      const openedAt = Date.now();
      const outcome = await this.connectOnce();
      if (this.stopped) break;
      if (outcome.fatal) {
        this.stopped = true;
        this.handlers.onFatal(outcome.fatal);
        break;
      }
      // A connection that lived a while resets the backoff; dial failures and instant closes back off.
      failures = outcome.opened && Date.now() - openedAt > 5000 ? 0 : failures + 1;
      const delay =
        outcome.opened && failures <= 1 ? 0 : backoffDelay(failures, minDelay, this.opts.maxReconnectDelayMs);
      this.reconnects++;
      if (delay > 0) {
        this.log.warn(
          { attempt: failures, delayMs: delay, err: outcome.error },
          "datastream reconnecting after a delay",
        );
      }
      await sleep(delay, this.abort.signal);
    }
  }

  private connectOnce(): Promise<{ opened: boolean; fatal?: Error; error?: string }> {
    return new Promise((resolve) => {
      const ws = new WebSocket(this.opts.url, {
        headers: {
          "X-Schematic-Api-Key": this.opts.apiKey,
          "X-Schematic-Datastream-Mode": "replicator",
          "X-Schematic-Client": CLIENT_NAME,
          "X-Schematic-Client-Version": this.opts.clientVersion,
        },
        perMessageDeflate: this.opts.compression ?? false,
        handshakeTimeout: this.opts.handshakeTimeoutMs ?? 30_000,
        maxPayload: 256 * 1024 * 1024,
      });
      this.ws = ws;
      let opened = false;
      let settled = false;
      let lastPong = Date.now();
      let keepalive: NodeJS.Timeout | undefined;
      const session = ++this.session;
      const finish = (result: { opened: boolean; fatal?: Error; error?: string }) => {
        if (settled) return;
        settled = true;
        clearInterval(keepalive);
        if (this.ws === ws) this.ws = undefined;
        this.connected = false;
        resolve(result);
      };

      ws.on("unexpected-response", (_req, res: IncomingMessage) => {
        const status = res.statusCode ?? 0;
        res.resume();
        ws.terminate();
        if (status === 401 || status === 403) {
          finish({ opened, fatal: new AuthRejectedError(`the datastream rejected the API key (HTTP ${status})`) });
        } else {
          finish({ opened, error: `datastream upgrade refused with HTTP ${status}` });
        }
      });
      ws.on("open", () => {
        opened = true;
        this.connected = true;
        lastPong = Date.now();
        if (this.paused) ws.pause();
        this.log.info({ url: this.opts.url, session }, "datastream connected");
        keepalive = setInterval(() => {
          // While we hold the socket paused the pongs sit unread in the kernel: that is our doing, not a dead peer.
          if (this.paused) lastPong = Date.now();
          if (Date.now() - lastPong > this.opts.pongWaitMs) {
            this.log.warn({ pongWaitMs: this.opts.pongWaitMs }, "datastream peer stopped answering pings");
            ws.terminate();
            return;
          }
          ws.ping();
        }, this.opts.pingIntervalMs);
        keepalive.unref();
        this.handlers.onOpen(session);
      });
      ws.on("pong", () => {
        lastPong = Date.now();
      });
      ws.on("message", (data, isBinary) => {
        if (this.stopped) return;
        if (isBinary) {
          this.log.warn("ignoring a binary datastream frame");
          return;
        }
        this.handlers.onFrame(data.toString(), session);
      });
      ws.on("close", (code, reasonBuf) => {
        const reason = reasonBuf.toString();
        if (opened) this.handlers.onClose({ session, code, reason });
        if (code === 4001) {
          finish({
            opened,
            fatal: new AuthRejectedError(`the datastream rejected the API key (close 4001 ${reason})`),
          });
          return;
        }
        if (opened && !this.stopped) this.log.warn({ code, reason }, "datastream closed");
        finish({ opened, error: `closed with code ${code}` });
      });
      ws.on("error", (err) => {
        this.log.debug({ err: err.message }, "datastream socket error");
        // 'close' follows when the socket was opened; a failed dial only reports 'error'.
        if (!opened) finish({ opened, error: err.message });
      });
    });
  }
}
