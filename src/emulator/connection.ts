/**
 * One datastream connection as the hub sees it: what it subscribed to, and its writes — sent in order, and
 * followed to the socket (ws compresses asynchronously) or to the client (a ping after them), so that a change
 * can answer once a connection has it (docs/design/emulator.md, "What an answer guarantees").
 */
import type { WebSocket } from "ws";
import type { StreamKind } from "./replay.js";

/** How often a change waiting for its frames to reach the sockets looks again (see {@link Connection.written}). */
const WRITTEN_POLL_MS = 5;
/** How often a change waiting for a client to confirm it looks whether the client still reads. */
const STALL_POLL_MS = 50;

export class Connection {
  companies = false;
  users = false;
  flags = false;
  /** permessage-deflate was negotiated: ws compresses asynchronously, so a send returns before its frame is written. */
  readonly compressed: boolean;
  /** Pings sent by {@link delivered} (each carries its number, so that its pong can be told apart). */
  private pings = 0;
  /** Frames sent on a compressed connection whose write ws has not yet reported. */
  private unwritten = 0;
  /** Callers of {@link written} waiting for the next write report. */
  private readonly waiting = new Set<() => void>();
  private readonly onWritten = () => {
    this.unwritten--;
    for (const wake of this.waiting) wake();
  };

  constructor(
    readonly ws: WebSocket,
    /** The X-Schematic-Datastream-Mode header (replicator, datastream, direct, ...). */
    readonly mode: string,
  ) {
    this.compressed = ws.extensions.includes("permessage-deflate");
  }

  send(frame: Buffer | string): void {
    if (this.ws.readyState !== 1) return;
    if (!this.compressed) {
      if (typeof frame === "string") this.ws.send(frame);
      else this.ws.send(frame, { binary: false });
      return;
    }
    this.unwritten++;
    this.ws.send(frame, { binary: false }, this.onWritten);
  }

  /**
   * Resolves once every frame sent so far is on the socket: written out, or queued in the socket behind a reader
   * that is not keeping up (nobody waits for a slow reader). Immediate for an uncompressed connection, whose
   * sends are synchronous socket writes (docs/design/emulator.md, "What an answer guarantees").
   */
  async written(): Promise<void> {
    while (this.unwritten > 0 && this.ws.readyState === 1 && !this.onlySocketHolds()) {
      // A write report wakes us at once; the timer notices a frame queued in the socket of a slow reader.
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          this.waiting.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, WRITTEN_POLL_MS);
        this.waiting.add(wake);
      });
    }
  }

  /**
   * Resolves once the client has received every frame sent so far: its pong to a ping sent after them (a
   * WebSocket client answers a ping only after it has read, inflated and handed on every earlier message); or
   * once the client has taken nothing from its socket for `stallMs` (it does not read: nobody waits for it); or
   * when the connection closes.
   */
  async delivered(stallMs: number): Promise<void> {
    if (this.ws.readyState !== 1) return;
    const token = Buffer.from(`emulator-${++this.pings}`);
    await new Promise<void>((resolve) => {
      // Frames still queued for the client: while this moves, the client reads (or we send); it is not stalled.
      let queued = this.ws.bufferedAmount;
      let movedAt = Date.now();
      const watch = setInterval(
        () => {
          if (this.ws.bufferedAmount !== queued) {
            queued = this.ws.bufferedAmount;
            movedAt = Date.now();
          } else if (Date.now() - movedAt >= stallMs) done();
        },
        Math.min(stallMs, STALL_POLL_MS),
      );
      const done = () => {
        clearInterval(watch);
        this.ws.off("pong", onPong);
        this.ws.off("close", done);
        resolve();
      };
      const onPong = (data: Buffer) => {
        if (data.equals(token)) done();
      };
      this.ws.on("pong", onPong);
      this.ws.once("close", done);
      this.ws.ping(token);
    });
  }

  /** ws holds nothing back (every frame left its compressor for the socket), though the socket may still buffer. */
  private onlySocketHolds(): boolean {
    const socket = this.ws as unknown as { _socket?: { writableLength: number } };
    return this.ws.bufferedAmount === (socket._socket?.writableLength ?? 0);
  }

  /** The TCP socket under the WebSocket (ws keeps it in `_socket`), to batch many frames into one write. */
  private socket(): { cork(): void; uncork(): void } | undefined {
    return (this.ws as unknown as { _socket?: { cork(): void; uncork(): void } })._socket;
  }

  cork(): void {
    this.socket()?.cork();
  }

  uncork(): void {
    this.socket()?.uncork();
  }

  wants(kind: StreamKind): boolean {
    return kind === "company" ? this.companies : kind === "user" ? this.users : this.flags;
  }
}
