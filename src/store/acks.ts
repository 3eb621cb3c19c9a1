/**
 * Replica acknowledgements: a write counts as done only once the replicas have it too, wherever a replica can be
 * promoted over the master (Sentinel and Cluster). Redis replicates asynchronously: without this, a master that is
 * killed, or demoted by a failover while it still takes our writes, loses the writes its replicas had not received,
 * and the replay cursor (which only moves past applied changes) would already be past them.
 *
 * Every write round trip to a master carries `ROLE` first and ends with `WAIT n <timeout>`, where n is the number of
 * replicas that master was seen with (in ROLE) within the last {@link AckOptions.graceMs}. Fewer acknowledgements
 * fail the round trip with {@link NotReplicatedError}; nothing is lost, the caller retries (every op is idempotent).
 * After a shortfall the WAIT timeout drops to 100 ms until acknowledgements succeed again, because WAIT holds up
 * everything queued behind it on the connection.
 *
 * Why every replica seen recently, not just one: when a failover promotes replica R, the old master M may keep
 * taking our writes until the sentinels reconfigure it (seconds), and its other replica R2 may still acknowledge
 * them, only to drop them when it resynchronises from R. Counting R as still wanted makes those writes fail, so they
 * are retried until the client has moved to R. A replica gone for longer than the grace stops being wanted (logged),
 * so a dead replica stalls writes to its master only briefly. The state is kept per client and per server address
 * (a reconnect to the same server keeps it; the new master starts afresh).
 *
 * A user whose ACL forbids ROLE gets no acknowledgements (logged once).
 */
import type { ChainableCommander, Redis } from "ioredis";
import type { StoreLog } from "./log.js";

export interface AckOptions {
  /** WAIT timeout in ms. */
  timeoutMs: number;
  /** How long after a replica was last seen writes still require its acknowledgement. */
  graceMs: number;
  log?: StoreLog;
  /** Monotonic ms (default performance.now). */
  now?: () => number;
  /** Called (not awaited) when fewer replicas acknowledged than wanted, e.g. to look for a new master. */
  onShortfall?: (node: Redis) => void;
}

/** Default grace: how long writes insist on a replica that went away. */
export const ACK_GRACE_MS = 15_000;

/** The write reached the master, but not every replica acknowledged it in time (retry it; ops are idempotent). */
export class NotReplicatedError extends Error {
  override readonly name = "NotReplicatedError";
}

interface ServerState {
  /** Replica address → when ROLE last listed it (ms). */
  replicas: Map<string, number>;
  /** ROLE is not allowed (ACL): acknowledgements are off for this server. */
  disabled: boolean;
  /** The last WAIT fell short: wait briefly until one succeeds again (see plan()). */
  short: boolean;
}

export interface AckPlan {
  /** Send ROLE before the writes. */
  role: boolean;
  /** Send `WAIT want timeoutMs` after the writes (0: no WAIT). */
  want: number;
  timeoutMs: number;
}

/**
 * WAIT timeout while a server's replicas fall short. WAIT blocks the connection, and every command queued behind it
 * (other batches, the lease renewal) waits too: while acknowledgements fail, each attempt must cost little.
 */
const SHORT_WAIT_MS = 100;

/** Per client (any object: a Redis, a Cluster), per server address. */
const STATES = new WeakMap<object, Map<string, ServerState>>();

export class ReplicaAcks {
  readonly timeoutMs: number;
  private readonly graceMs: number;
  private readonly log: StoreLog | undefined;
  private readonly now: () => number;
  private readonly onShortfall: ((node: Redis) => void) | undefined;
  private readonly servers: Map<string, ServerState>;

  /** `owner`: the client whose connections these are (state is shared by every ReplicaAcks of one client). */
  constructor(owner: object, opts: AckOptions) {
    this.timeoutMs = Math.max(1, Math.round(opts.timeoutMs));
    this.graceMs = opts.graceMs;
    this.log = opts.log;
    this.now = opts.now ?? (() => performance.now());
    this.onShortfall = opts.onShortfall;
    let servers = STATES.get(owner);
    if (!servers) {
      servers = new Map();
      STATES.set(owner, servers);
    }
    this.servers = servers;
  }

  /** What to send around a write to `node`. */
  plan(node: Redis): AckPlan {
    const s = this.state(node);
    if (s.disabled) return { role: false, want: 0, timeoutMs: 0 };
    return {
      role: true,
      want: this.wanted(s),
      timeoutMs: s.short ? Math.min(SHORT_WAIT_MS, this.timeoutMs) : this.timeoutMs,
    };
  }

  /** Adds ROLE (first) to a pipeline being built. */
  begin(pipe: ChainableCommander, plan: AckPlan): void {
    if (plan.role) pipe.call("ROLE");
  }

  /** Adds WAIT (last) to a pipeline being built. */
  end(pipe: ChainableCommander, plan: AckPlan): void {
    if (plan.want > 0) pipe.call("WAIT", String(plan.want), String(plan.timeoutMs));
  }

  /**
   * Takes the ROLE and WAIT replies of a round trip built with `plan` (undefined when not sent, an Error when it
   * failed) and throws {@link NotReplicatedError} unless every replica wanted acknowledged. When ROLE shows a replica
   * the round trip did not wait for, waits for it now (one more round trip).
   */
  async settle(node: Redis, plan: AckPlan, role: unknown, wait: unknown): Promise<void> {
    const s = this.state(node);
    if (plan.role) {
      if (role instanceof Error) {
        if (/NOPERM|unknown command/i.test(role.message)) {
          s.disabled = true;
          this.log?.warn(
            { err: role.message, redis: serverAddress(node) },
            "cannot run ROLE on Redis: writes are not confirmed by its replicas (a failover may lose the latest writes)",
          );
          return;
        }
        throw role;
      }
      const now = this.now();
      for (const replica of replicasOf(role)) s.replicas.set(replica, now);
    }
    if (plan.want > 0) {
      if (wait instanceof Error) throw wait;
      if (Number(wait) < plan.want) throw this.shortfall(s, node, Number(wait), plan.want, plan.timeoutMs);
    }
    const want = this.wanted(s);
    if (want > plan.want) {
      const acked = Number(await node.call("WAIT", String(want), String(plan.timeoutMs || this.timeoutMs)));
      if (acked < want) throw this.shortfall(s, node, acked, want, plan.timeoutMs || this.timeoutMs);
    }
    s.short = false;
  }

  /** Confirms everything written so far on `node` (after writes whose round trip carried no WAIT). */
  async confirm(node: Redis): Promise<void> {
    const plan = this.plan(node);
    if (!plan.role) return;
    const pipe = node.pipeline();
    this.begin(pipe, plan);
    this.end(pipe, plan);
    const replies = ((await pipe.exec()) ?? []).map(([err, value]) => err ?? value);
    await this.settle(node, plan, replies[0], plan.want > 0 ? replies[1] : undefined);
  }

  /** Replicas seen within the grace; forgets (and logs) the others. */
  private wanted(s: ServerState): number {
    const now = this.now();
    let n = 0;
    for (const [replica, seen] of s.replicas) {
      if (now - seen < this.graceMs) {
        n++;
        continue;
      }
      s.replicas.delete(replica);
      this.log?.warn(
        { replica, graceMs: this.graceMs },
        "a Redis replica has been gone longer than the grace: writes no longer wait for it",
      );
    }
    return n;
  }

  private shortfall(s: ServerState, node: Redis, acked: number, want: number, ms: number): NotReplicatedError {
    s.short = true;
    this.onShortfall?.(node);
    return new NotReplicatedError(
      `${acked} of ${want} replicas of Redis ${serverAddress(node)} acknowledged the write within ${ms} ms (retried)`,
    );
  }

  private state(node: Redis): ServerState {
    const key = serverAddress(node);
    let s = this.servers.get(key);
    if (!s) {
      s = { replicas: new Map(), disabled: false, short: false };
      this.servers.set(key, s);
    }
    return s;
  }
}

/** Replica addresses a master's ROLE reply lists (`["master", offset, [[ip, port, offset], …]]`). */
export function replicasOf(role: unknown): string[] {
  if (!Array.isArray(role) || role[0] !== "master" || !Array.isArray(role[2])) return [];
  return (role[2] as unknown[]).filter(Array.isArray).map((r) => `${(r as unknown[])[0]}:${(r as unknown[])[1]}`);
}

/** The server a connection talks to: its socket's peer (Sentinel resolves it at connect time), else its options. */
export function serverAddress(node: Redis): string {
  const stream = (node as unknown as { stream?: { remoteAddress?: string; remotePort?: number } }).stream;
  if (stream?.remoteAddress && stream.remotePort) return `${stream.remoteAddress}:${stream.remotePort}`;
  return `${node.options.host}:${node.options.port}`;
}
