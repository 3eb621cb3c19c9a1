/**
 * What the soak watches all the time, faults or not, for the invariants of invariants.ts:
 *
 * - {@link ReadySampler}: every 250 ms, whether the anchor companies are in Redis, then every replicator's /ready
 *   (status and role);
 * - {@link LeasePoller}: every 100 ms, the writer lease's token;
 * - {@link WriteRecorder}: a MONITOR connection on every data node (reconnected after restarts), attributing each
 *   data write Redis executes to the replicator process whose named connection sent it (commands a script runs are
 *   attributed to the script's caller);
 * - {@link DebugCounters}: every 2 s, each replicator's /debug message counters (kept per process).
 */
import { Redis } from "ioredis";
import { type RedisClient, redisConnectionName, WRITER_CONNECTION_PREFIX } from "../src/store/connect.js";
import { command } from "../test/helpers/procs.js";
import type { LeasePoll, ReadySample, WriteEvent } from "./invariants.js";
import type { ReplicatorSlot } from "./rig.js";

abstract class Loop {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(private readonly everyMs: number) {}

  protected abstract tick(): Promise<void>;

  start(): void {
    const step = async () => {
      if (this.stopped) return;
      const started = Date.now();
      this.running = this.tick().catch(() => undefined);
      await this.running;
      if (!this.stopped) this.timer = setTimeout(step, Math.max(0, this.everyMs - (Date.now() - started)));
    };
    void step();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }
}

function within<T>(ms: number, promise: Promise<T>): Promise<T> {
  return Promise.race([
    promise,
    new Promise<T>((_, reject) => setTimeout(() => reject(new Error("timeout")), ms).unref()),
  ]);
}

async function getJson(url: string, timeoutMs: number): Promise<{ status: number; body: Record<string, unknown> }> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    const text = await res.text();
    return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  } catch {
    return { status: 0, body: {} };
  }
}

export class ReadySampler extends Loop {
  readonly samples: ReadySample[] = [];

  constructor(
    private readonly redis: RedisClient,
    private readonly anchorKeys: string[],
    private readonly slots: ReplicatorSlot[],
    private readonly epoch: number,
  ) {
    super(250);
  }

  protected async tick(): Promise<void> {
    let missing: number | undefined;
    try {
      const found = await within(1500, Promise.all(this.anchorKeys.map((k) => this.redis.exists(k))));
      missing = found.filter((n) => n === 0).length;
    } catch {
      missing = undefined;
    }
    const probes = await Promise.all(
      this.slots
        .filter((s) => s.alive())
        .map(async (s) => {
          const pid = s.pid;
          const { status, body } = await getJson(`${s.url}/ready`, 2000);
          return { slot: s.index, pid, status, role: typeof body.role === "string" ? body.role : undefined };
        }),
    );
    this.samples.push({ t: Date.now() - this.epoch, missing, probes });
  }
}

export class LeasePoller extends Loop {
  readonly polls: LeasePoll[] = [];

  constructor(
    private readonly redis: RedisClient,
    private readonly leaseKey: string,
  ) {
    super(100);
  }

  protected async tick(): Promise<void> {
    const sent = Date.now();
    const token = await within(800, this.redis.get(this.leaseKey));
    this.polls.push({ sent, received: Date.now(), token });
  }

  /** Drops polls answered before `time` except the last one (still needed to judge writes after it). */
  forgetBefore(time: number): void {
    let i = 0;
    while (i + 1 < this.polls.length && this.polls[i + 1]!.received < time) i++;
    // A stretch without a lease is judged against the last poll that saw one (its holder): keep it.
    let held = i;
    while (held >= 0 && this.polls[held]!.token === null) held--;
    this.polls.splice(0, held >= 0 ? held : i);
  }
}

const WRITE_COMMANDS = new Set([
  "set",
  "mset",
  "del",
  "unlink",
  "getdel",
  "setex",
  "psetex",
  "expire",
  "pexpire",
  "expireat",
  "pexpireat",
  "persist",
]);

const REPLICATION = "(replication link)";

/**
 * Whether a write to `key` is judged by the one-writer check: every key but the lease itself and a load's private
 * scratch sets (`datastream:load-seen:…`, named by a random token per load: no other process reads them, so a
 * deposed writer deleting its own, as it does when its load stops, changes nothing anyone sees).
 */
export function judgedWrite(key: string, leaseKey: string): boolean {
  return key !== leaseKey && !/(^|:)datastream:load-seen:/.test(key);
}

/** One MONITOR connection per data node; names of connections from CLIENT LIST and CLIENT SETNAME. */
export class WriteRecorder {
  readonly writes: WriteEvent[] = [];
  /** Writes from connections that carry no replicator name: not judged. */
  unattributed = 0;
  /** The first few of them, to say which connections they came from. */
  readonly unattributedSamples: string[] = [];
  private readonly names = new Map<string, string>();
  private readonly monitors: Redis[] = [];
  private readonly pending: { time: number; port: number; source: string; command: string }[] = [];
  private namer: NodeJS.Timeout | undefined;

  constructor(
    private readonly ports: number[],
    private readonly leaseKey: string,
  ) {}

  async start(): Promise<void> {
    await this.refreshNames();
    for (const port of this.ports) {
      const monitor = new Redis({
        host: "127.0.0.1",
        port,
        monitor: true,
        retryStrategy: () => 250,
        maxRetriesPerRequest: 0,
        connectionName: "schematic-soak-monitor",
      });
      monitor.on("error", () => undefined);
      let caller = "";
      monitor.on("monitor", (time: string, args: string[], source: string) => {
        const cmd = (args[0] ?? "").toLowerCase();
        if (source !== "lua") {
          caller = source;
          if (cmd === "client" && (args[1] ?? "").toLowerCase() === "setname" && args[2]) {
            this.names.set(`${port} ${source}`, args[2]);
          }
        }
        if (!WRITE_COMMANDS.has(cmd) || !judgedWrite(args[1] ?? "", this.leaseKey)) return;
        this.pending.push({
          time: Number(time) * 1000,
          port,
          source: source === "lua" ? caller : source,
          command: `${cmd.toUpperCase()} ${args[1] ?? ""}`,
        });
      });
      this.monitors.push(monitor);
    }
    const tick = async () => {
      await this.refreshNames().catch(() => undefined);
      this.namer = setTimeout(tick, 1000);
    };
    this.namer = setTimeout(tick, 1000);
  }

  /** Moves recorded writes whose connection is known into `writes` (writes of unknown connections wait). */
  resolve(final = false): void {
    const keep: typeof this.pending = [];
    for (const w of this.pending) {
      const name = this.names.get(`${w.port} ${w.source}`);
      const pid = replicatorPid(name);
      if (name === REPLICATION) continue;
      if (pid !== undefined) {
        this.writes.push({ time: w.time, pid, port: w.port, command: w.command });
      } else if (name !== undefined || final || w.time < Date.now() - 5000) {
        this.unattributed++;
        if (this.unattributedSamples.length < 5) {
          this.unattributedSamples.push(
            `${w.command} on port ${w.port} at ${new Date(w.time).toISOString()} from ${w.source} (name ${name ?? "unknown"})`,
          );
        }
      } else keep.push(w);
    }
    this.pending.splice(0, this.pending.length, ...keep);
  }

  async stop(): Promise<void> {
    clearTimeout(this.namer);
    for (const m of this.monitors) m.disconnect();
    this.resolve(true);
  }

  private async refreshNames(): Promise<void> {
    await Promise.all(
      this.ports.map(async (port) => {
        try {
          const list = String(await command(port, ["CLIENT", "LIST"]));
          for (const line of list.split("\n")) {
            const addr = /\baddr=(\S+)/.exec(line)?.[1];
            // A replica's link to its master (flag M) replays the master's writes: already judged on the master.
            const name = /\bflags=\S*M/.test(line) ? REPLICATION : /\bname=(\S*)/.exec(line)?.[1];
            if (addr && name) this.names.set(`${port} ${addr}`, name);
          }
        } catch {
          // a node that is down or paused: its names are read again next time
        }
      }),
    );
  }
}

/**
 * The replicator process a connection name belongs to: its shared connections (`schematic-replicator:{host}-{pid}`)
 * and, on Cluster, its writer's own (`schematic-replicator-writer:{host}-{pid}`); undefined for anything else.
 */
export function replicatorPid(name: string | undefined): number | undefined {
  if (!name || !(name.startsWith(redisConnectionName("")) || name.startsWith(WRITER_CONNECTION_PREFIX)))
    return undefined;
  const pid = Number(/-(\d+)$/.exec(name)?.[1]);
  return Number.isFinite(pid) ? pid : undefined;
}

/**
 * Every second, each data node's role (master, or replica of which master, with its link state): changes go to the
 * timeline, so that a failure can be read against which node served what, and when (a promotion seconds after a
 * restart, a replica that never resynchronised).
 */
export class RoleWatch extends Loop {
  private readonly last = new Map<number, string>();

  constructor(
    private readonly ports: () => number[],
    private readonly report: (text: string) => void,
  ) {
    super(1000);
  }

  protected async tick(): Promise<void> {
    const changes: string[] = [];
    await Promise.all(
      this.ports().map(async (port) => {
        let role: string;
        try {
          const reply = (await within(500, command(port, ["ROLE"]))) as unknown[];
          role = reply[0] === "master" ? "master" : `replica of ${reply[1]}:${reply[2]} (${reply[3]})`;
        } catch {
          role = "down";
        }
        if (this.last.get(port) === role) return;
        this.last.set(port, role);
        changes.push(`${port} ${role}`);
      }),
    );
    if (changes.length > 0) this.report(changes.sort().join("; "));
  }
}

export interface MessageCounts {
  received: number;
  applied: number;
  coalesced: number;
  retried: number;
  skipped: number;
  dropped: number;
}

/** The last /debug message counters of every replicator process the soak ran, by pid. */
export class DebugCounters extends Loop {
  readonly byPid = new Map<number, MessageCounts>();

  constructor(private readonly slots: ReplicatorSlot[]) {
    super(2000);
  }

  protected async tick(): Promise<void> {
    await Promise.all(
      this.slots.map(async (s) => {
        const pid = s.pid;
        if (pid === undefined) return;
        const { status, body } = await getJson(`${s.url}/debug`, 2000);
        if (status === 200 && body.messages) this.byPid.set(pid, body.messages as MessageCounts);
      }),
    );
  }

  total(): MessageCounts {
    const sum: MessageCounts = { received: 0, applied: 0, coalesced: 0, retried: 0, skipped: 0, dropped: 0 };
    for (const c of this.byPid.values())
      for (const k of Object.keys(sum) as (keyof MessageCounts)[]) sum[k] += c[k] ?? 0;
    return sum;
  }
}
