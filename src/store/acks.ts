/**
 * Replica acknowledgements: a batch counts as written only once a replica has it too, wherever a replica could be
 * promoted over the master (Sentinel and Cluster). Redis replicates asynchronously: without this, a master that is
 * killed, or demoted by a failover while it still takes our writes, loses the writes its replica had not received,
 * and the replay cursor (which only moves past applied changes) would already be past them.
 *
 * Per master connection, each batch is followed by `WAIT 1 <timeout>` in the same round trip when that master was
 * seen with a replica within the last {@link AckOptions.graceMs}; fewer than one acknowledgement fails the batch
 * (nothing is lost: the caller retries it, and every op is idempotent). A master without replicas is asked `ROLE`
 * at most once a second (in the batch's round trip); when a replica appears, that batch waits for it at once.
 *
 * The grace period covers a failover: the old master sees its replica go the moment the replica is promoted, but
 * may take our writes until the failover reconfigures it or our client moves to the new master. Writes to it keep
 * failing (and are retried, reaching the new master) for that long. A master whose replicas are gone for longer
 * than the grace is written without acknowledgements (logged once), so a dead replica stalls writes only briefly.
 *
 * Keyed by the connection's socket: a reconnect (Sentinel moving to a new master) starts from scratch.
 */
import type { Redis } from "ioredis";
import type { StoreLog } from "./log.js";

export interface AckOptions {
  /** WAIT timeout in ms. */
  timeoutMs: number;
  /** How long after a replica was last seen writes still require its acknowledgement. */
  graceMs: number;
  /** How often a master without replicas is asked ROLE (default 1000 ms). */
  roleIntervalMs?: number;
  log?: StoreLog;
  /** Monotonic ms (default performance.now). */
  now?: () => number;
}

/** The batch reached the master, but no replica acknowledged it in time (it is retried; ops are idempotent). */
export class NotReplicatedError extends Error {
  override readonly name = "NotReplicatedError";
}

interface NodeState {
  /** Last time a replica acknowledged or was listed by ROLE (ms), or -Infinity. */
  seenAt: number;
  /** Last ROLE answer (ms), or -Infinity. */
  roleAt: number;
  /** ROLE is not allowed (ACL): acknowledgements are off for this connection. */
  disabled: boolean;
  /** Whether "writing without acknowledgements" was logged since replicas were last seen. */
  warnedUnacked: boolean;
}

export interface AckPlan {
  /** Pipeline `ROLE` before the writes. */
  role: boolean;
  /** Pipeline `WAIT 1 timeout` after the writes. */
  wait: boolean;
}

const NO_PLAN: AckPlan = { role: false, wait: false };

export class ReplicaAcks {
  readonly timeoutMs: number;
  private readonly graceMs: number;
  private readonly roleIntervalMs: number;
  private readonly log: StoreLog | undefined;
  private readonly now: () => number;
  private readonly states = new WeakMap<object, NodeState>();

  constructor(opts: AckOptions) {
    this.timeoutMs = Math.max(1, Math.round(opts.timeoutMs));
    this.graceMs = opts.graceMs;
    this.roleIntervalMs = opts.roleIntervalMs ?? 1000;
    this.log = opts.log;
    this.now = opts.now ?? (() => performance.now());
  }

  /** What to send around a batch to `node`. */
  plan(node: Redis): AckPlan {
    const s = this.state(node);
    if (s.disabled) return NO_PLAN;
    const now = this.now();
    if (now - s.seenAt < this.graceMs) return { role: false, wait: true };
    return { role: now - s.roleAt >= this.roleIntervalMs, wait: false };
  }

  /**
   * Takes the ROLE and WAIT replies of a batch sent with `plan` (`undefined` when not sent; an Error when it failed)
   * and throws {@link NotReplicatedError} unless the batch is durable. When ROLE shows a replica the batch did not
   * wait for, waits for it now (one more round trip).
   */
  async settle(node: Redis, plan: AckPlan, role: unknown, wait: unknown): Promise<void> {
    const s = this.state(node);
    const now = this.now();
    let mustWait = false;
    if (plan.role) {
      if (role instanceof Error) {
        if (/NOPERM|unknown command/i.test(role.message)) {
          s.disabled = true;
          this.log?.warn(
            { err: role.message, node: describe(node) },
            "cannot run ROLE on Redis: writes are not confirmed by a replica (a failover may lose the latest writes)",
          );
          return;
        }
        throw role;
      }
      s.roleAt = now;
      const replicas = connectedReplicas(role);
      if (replicas > 0) {
        s.seenAt = now;
        s.warnedUnacked = false;
        mustWait = true;
      } else if (!s.warnedUnacked && s.seenAt > Number.NEGATIVE_INFINITY) {
        s.warnedUnacked = true;
        this.log?.warn(
          { node: describe(node), graceMs: this.graceMs },
          "Redis master has had no replica for a while: writing without replica acknowledgements",
        );
      }
    }
    if (plan.wait) {
      if (wait instanceof Error) throw wait;
      if (Number(wait) >= 1) {
        s.seenAt = this.now();
        return;
      }
      throw new NotReplicatedError(
        `no replica of Redis ${describe(node)} acknowledged the batch within ${this.timeoutMs} ms (retried)`,
      );
    }
    if (mustWait) {
      const acked = await node.call("WAIT", "1", String(this.timeoutMs));
      if (Number(acked) >= 1) {
        s.seenAt = this.now();
        return;
      }
      throw new NotReplicatedError(
        `no replica of Redis ${describe(node)} acknowledged the batch within ${this.timeoutMs} ms (retried)`,
      );
    }
  }

  /** Confirms everything written so far on `node` (used after writes whose round trip carried no WAIT). */
  async confirm(node: Redis): Promise<void> {
    const plan = this.plan(node);
    if (!plan.role && !plan.wait) return;
    const pipe = node.pipeline();
    if (plan.role) pipe.call("ROLE");
    if (plan.wait) pipe.call("WAIT", "1", String(this.timeoutMs));
    const replies = ((await pipe.exec()) ?? []).map(([err, value]) => err ?? value);
    await this.settle(node, plan, plan.role ? replies[0] : undefined, plan.wait ? replies.at(-1) : undefined);
  }

  private state(node: Redis): NodeState {
    // The socket identifies the server this connection talks to; a reconnect may reach another one.
    const key = (node as unknown as { stream?: object }).stream ?? node;
    let s = this.states.get(key);
    if (!s) {
      s = {
        seenAt: Number.NEGATIVE_INFINITY,
        roleAt: Number.NEGATIVE_INFINITY,
        disabled: false,
        warnedUnacked: false,
      };
      this.states.set(key, s);
    }
    return s;
  }
}

/** Replicas a master's ROLE reply lists (`["master", offset, [[ip, port, offset], …]]`); 0 for a replica's. */
export function connectedReplicas(role: unknown): number {
  if (!Array.isArray(role) || role[0] !== "master") return 0;
  const list = role[2];
  return Array.isArray(list) ? list.length : 0;
}

function describe(node: Redis): string {
  const stream = (node as unknown as { stream?: { remoteAddress?: string; remotePort?: number } }).stream;
  if (stream?.remoteAddress && stream.remotePort) return `${stream.remoteAddress}:${stream.remotePort}`;
  return `${node.options.host}:${node.options.port}`;
}
