/**
 * The writer lease (docs/design/decisions.md "Writer lease"): one key,
 * `SET key token NX PX ttl`, renewed every ttl/3 with a compare-and-PEXPIRE script (a renewal that fails, as during
 * a failover, is tried again every ttl/15 until one succeeds or the tenure ends), released with a compare-and-DEL
 * script. An instance that cannot get it stands by and keeps trying forever.
 *
 * Safety: {@link WriterLease.holds} is true only while `confirmedAt + ttl − margin > now`, where `confirmedAt` is
 * read BEFORE the command that acquired or renewed the lease was sent and margin = ttl/3. The key cannot have
 * expired before `confirmedAt + ttl`, so a writer that stops when holds() turns false stops at least `margin`
 * before anyone else could acquire it (given clock-rate drift and pauses below the margin). On a single node and
 * Sentinel the writes are additionally fenced by the token (see StoreWriter). On Sentinel and Cluster an acquisition or
 * renewal counts only once the master's replicas acknowledged it (acks.ts), so a lease taken or renewed on a master
 * that a failover is replacing does not count.
 *
 * Events: "acquired" `(token)`; "lost" `({ reason })` with reason "taken" (the renewal found another owner or no
 * key) or "unconfirmed" (no renewal confirmed in time). After "lost" the instance is a standby again and keeps
 * trying to re-acquire, with a fresh token. release() and stop() emit nothing.
 */
import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import type { ReplicaAcks } from "./acks.js";
import type { RedisClient } from "./connect.js";
import { errorMessage, type StoreLog } from "./log.js";
import { LuaScript } from "./script.js";
import { durably, NotReplicatedError, replicaAcks } from "./writer.js";

const RENEW = new LuaScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`);

const RELEASE = new LuaScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`);

export interface WriterLeaseOptions {
  key: string;
  ttlMs: number;
  /** `hostname-pid`; the token is `{owner}-{32 hex}`. */
  owner: string;
  /** Monotonic milliseconds (default `performance.now`). */
  now?: () => number;
  /** Renewal period while held (default ttl/3). */
  renewIntervalMs?: number;
  /** Acquisition attempts while standing by (default ttl/3). */
  retryIntervalMs?: number;
  log?: StoreLog;
}

export type LeaseLostReason = "taken" | "unconfirmed";
export type LeaseState = "idle" | "standby" | "held" | "stopped";

export interface WriterLeaseEvents {
  acquired: [token: string];
  lost: [info: { reason: LeaseLostReason }];
}

export class WriterLease extends EventEmitter<WriterLeaseEvents> {
  readonly key: string;
  readonly ttlMs: number;
  readonly owner: string;
  private readonly now: () => number;
  private readonly renewIntervalMs: number;
  private readonly retryIntervalMs: number;
  private readonly marginMs: number;
  /** Delay before the next renewal attempt after one failed (ttl/15, 50 ms at least, at most the period). */
  private readonly retryAfterFailureMs: number;
  private readonly log: StoreLog | undefined;
  /** Sentinel and Cluster: acquisitions and renewals count only once the replicas have them (see acks.ts). */
  private readonly acks: ReplicaAcks | undefined;

  private state: LeaseState = "idle";
  private currentToken: string | undefined;
  private confirmedAt = Number.NEGATIVE_INFINITY;
  /** Bumped whenever the tenure changes, so late replies of an earlier tenure are ignored. */
  private generation = 0;
  /** The attempt in flight (acquire or renew), if any; attempts never overlap. */
  private inFlight = 0;
  private attempts = 0;
  private tickTimer: NodeJS.Timeout | undefined;
  private deadlineTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly client: RedisClient,
    opts: WriterLeaseOptions,
  ) {
    super();
    if (!(opts.ttlMs > 0)) throw new Error("writer lease TTL must be positive");
    this.key = opts.key;
    this.ttlMs = Math.round(opts.ttlMs);
    this.owner = opts.owner;
    this.now = opts.now ?? (() => performance.now());
    this.marginMs = this.ttlMs / 3;
    this.renewIntervalMs = Math.max(1, opts.renewIntervalMs ?? this.ttlMs / 3);
    this.retryIntervalMs = Math.max(1, opts.retryIntervalMs ?? this.ttlMs / 3);
    this.retryAfterFailureMs = Math.min(this.renewIntervalMs, Math.max(50, this.ttlMs / 15));
    this.log = opts.log;
    this.acks = replicaAcks(client, undefined, opts.log);
  }

  get status(): LeaseState {
    return this.state;
  }

  /** Starts trying to acquire at once, then keeps acquiring (standby) or renewing (held) until stop(). */
  start(): void {
    if (this.state !== "idle") return;
    this.state = "standby";
    void this.tick();
    this.schedule();
  }

  /** True while the last confirmed acquisition or renewal is recent enough to keep a margin of ttl/3. */
  holds(): boolean {
    return this.state === "held" && this.confirmedAt + this.ttlMs - this.marginMs > this.now();
  }

  /** The token while held (for fencing), else undefined. */
  token(): string | undefined {
    return this.holds() ? this.currentToken : undefined;
  }

  /**
   * Reads the lease key now: true while it holds our token. Otherwise the lease is lost at once ("taken"), without
   * waiting for the next renewal: a key that vanished with its master's data (a FLUSHALL, a restart without
   * persistence) may already be another instance's, which the timing of holds() cannot know. Redis errors propagate.
   */
  async confirm(): Promise<boolean> {
    const generation = this.generation;
    const token = this.currentToken;
    if (this.state !== "held" || token === undefined) return false;
    const value = await this.client.get(this.key);
    if (generation !== this.generation) return false;
    if (value === token) return this.holds();
    this.lose("taken");
    return false;
  }

  /** Stops the loop without touching Redis; holds() is false from now on. */
  stop(): void {
    this.state = "stopped";
    this.generation++;
    clearTimeout(this.tickTimer);
    clearTimeout(this.deadlineTimer);
    this.tickTimer = undefined;
    this.deadlineTimer = undefined;
  }

  /** Stops, then deletes the lease key if it still holds our token. True when it did. */
  async release(): Promise<boolean> {
    const token = this.currentToken;
    this.stop();
    this.currentToken = undefined;
    if (token === undefined) return false;
    return (await RELEASE.run(this.client, [this.key], [token])) === 1;
  }

  /** A writer holds the lease right now: the key exists with an expiry (what standbys report on /ready). */
  static async liveWriter(client: RedisClient, key: string): Promise<boolean> {
    return (await client.pttl(key)) > 0;
  }

  /** The current holder's token, or null. */
  static async holder(client: RedisClient, key: string): Promise<string | null> {
    return await client.get(key);
  }

  private schedule(delayMs?: number): void {
    if (this.state === "stopped") return;
    const delay = delayMs ?? (this.state === "held" ? this.renewIntervalMs : this.retryIntervalMs);
    this.tickTimer = setTimeout(() => {
      void this.tick();
      this.schedule();
    }, delay);
  }

  private async tick(): Promise<void> {
    if (this.inFlight !== 0 || this.state === "stopped" || this.state === "idle") return;
    const attempt = ++this.attempts;
    this.inFlight = attempt;
    try {
      if (this.state === "held") await this.renew();
      else await this.acquire();
    } finally {
      if (this.inFlight === attempt) this.inFlight = 0;
    }
  }

  private async acquire(): Promise<void> {
    const generation = this.generation;
    const token = `${this.owner}-${randomBytes(16).toString("hex")}`;
    const sentAt = this.now();
    let reply: unknown;
    try {
      [reply] = await durably(this.client, this.key, (p) => p.set(this.key, token, "PX", this.ttlMs, "NX"), this.acks);
      if (reply instanceof Error) throw reply;
    } catch (err) {
      // Not acknowledged by the replicas: the key may be set on a master about to be replaced. Take it back.
      if (err instanceof NotReplicatedError) RELEASE.run(this.client, [this.key], [token]).catch(() => {});
      this.log?.debug({ err: errorMessage(err), key: this.key }, "writer lease: acquisition attempt failed");
      return;
    }
    if (reply !== "OK") return;
    if (generation !== this.generation || this.state !== "standby") {
      // Stopped meanwhile: give it back rather than leave a lease nobody renews.
      RELEASE.run(this.client, [this.key], [token]).catch(() => {});
      return;
    }
    this.generation++;
    this.state = "held";
    this.currentToken = token;
    this.confirmedAt = sentAt;
    this.armDeadline();
    this.rescheduleTick();
    this.log?.info({ key: this.key, owner: this.owner }, "writer lease acquired");
    this.emit("acquired", token);
  }

  private async renew(): Promise<void> {
    const generation = this.generation;
    const token = this.currentToken;
    if (token === undefined) return;
    const sentAt = this.now();
    let reply: unknown;
    try {
      [reply] = await durably(
        this.client,
        this.key,
        (p) => p.eval(RENEW.source, 1, this.key, token, this.ttlMs),
        this.acks,
      );
      if (reply instanceof Error) throw reply;
    } catch (err) {
      // Keep going: the deadline timer ends the tenure if no renewal is confirmed in time. Until then, try again
      // soon rather than a whole renewal period later: a failover or a blip of a few seconds must not cost the lease.
      this.log?.warn({ err: errorMessage(err), key: this.key }, "writer lease: renewal failed");
      if (generation === this.generation && this.state === "held") this.rescheduleTick(this.retryAfterFailureMs);
      return;
    }
    if (generation !== this.generation) return;
    if (reply === 1) {
      this.confirmedAt = Math.max(this.confirmedAt, sentAt);
      this.armDeadline();
    } else {
      this.lose("taken");
    }
  }

  /** Fires when holds() turns false, unless a renewal pushed the deadline further first. */
  private armDeadline(): void {
    clearTimeout(this.deadlineTimer);
    const delay = Math.max(0, this.confirmedAt + this.ttlMs - this.marginMs - this.now());
    this.deadlineTimer = setTimeout(() => {
      this.deadlineTimer = undefined;
      if (this.state !== "held") return;
      if (this.holds()) this.armDeadline();
      else this.lose("unconfirmed");
    }, delay + 1);
  }

  private lose(reason: LeaseLostReason): void {
    const token = this.currentToken;
    this.generation++;
    this.state = "standby";
    this.currentToken = undefined;
    this.confirmedAt = Number.NEGATIVE_INFINITY;
    clearTimeout(this.deadlineTimer);
    this.deadlineTimer = undefined;
    // A stale renewal may still be pending (Redis paused): it must not hold up the standby loop.
    this.inFlight = 0;
    if (reason === "unconfirmed" && token !== undefined) {
      // If the key still holds our old token once Redis answers again, free it for the next writer (maybe us).
      RELEASE.run(this.client, [this.key], [token]).catch(() => {});
    }
    this.rescheduleTick();
    this.log?.warn({ key: this.key, owner: this.owner, reason }, "writer lease lost");
    this.emit("lost", { reason });
  }

  private rescheduleTick(delayMs?: number): void {
    if (this.state === "stopped") return;
    clearTimeout(this.tickTimer);
    this.schedule(delayMs);
  }
}
