/**
 * The processes of a soak, started as a user starts them: Redis in the asked topology (the test rigs of
 * test/helpers/), the emulator and the replicators from the build (`node dist/cli/*.js`, settings by environment).
 * Each topology offers the same fault primitives (kill, flush, pause, failover) and `restore()`, which undoes
 * whatever a fault left behind (a paused or dead node) before a quiet checkpoint.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { createClient, createCluster } from "redis";
import { loadConfig } from "../src/config/index.js";
import { createRedis, type RedisClient } from "../src/store/connect.js";
import { type RedisClusterServer, startCluster } from "../test/helpers/cluster.js";
import { command, parseInfo, running, stopProcess } from "../test/helpers/procs.js";
import { freePort, type RedisServer, startRedis, waitFor } from "../test/helpers/redis.js";
import { type ReplicatorProcess, startReplicator } from "../test/helpers/replicator.js";
import { type SentinelGroup, startSentinelGroup } from "../test/helpers/sentinel.js";
import type { NodeRedisLike } from "../test/helpers/topology.js";
import type { Loading, Topology } from "./plan.js";

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export const LEASE_TTL_MS = 4000;

/** Settings of the soak's replicators: timers shortened so that faults play out in seconds. */
export const SOAK_SETTINGS = {
  SCHEMATIC_API_KEY: "soak-api-key",
  LOG_FORMAT: "json",
  LOG_LEVEL: "info",
  WRITER_LOCK_TTL: `${LEASE_TTL_MS / 1000}s`,
  // A lease renewal must fit in TTL/3 (a settings check): commands time out after 1 s.
  REDIS_READ_TIMEOUT: "1s",
  REDIS_WRITE_TIMEOUT: "1s",
  MARKER_CHECK_INTERVAL: "1s",
  READY_GRACE_PERIOD: "15s",
  REPLAY_FLUSH_INTERVAL: "500ms",
  DATASTREAM_MAX_RECONNECT_DELAY: "1s",
  CIRCUIT_BREAKER_TIMEOUT: "500ms",
  ASYNC_LOADER_CIRCUIT_BREAKER_TIMEOUT: "1s",
  ASYNC_LOADER_RATE_LIMIT_RPS: "0",
  SHUTDOWN_TIMEOUT: "10s",
  // The anti-entropy pass would repair (and so hide) exactly what the soak looks for: changes the stream path lost.
  RECONCILE_INTERVAL: "0s",
} as const;

export const MARKER_CHECK_MS = 1000;
export const SHUTDOWN_TIMEOUT_MS = 10_000;

// ---- Redis -----------------------------------------------------------------------------------------------------

export interface RedisRig {
  readonly topology: Topology;
  /** The settings naming this Redis (replicators, `verify`). */
  readonly env: Record<string, string>;
  /** The soak's own client, following failovers as the replicator's does. */
  readonly client: RedisClient;
  /** Every data node's port (masters and replicas), for the write recorder. */
  dataPorts(): number[];
  /** A node-redis client for the SDK (the current master on Sentinel, a cluster client on Cluster). */
  sdkClient(): Promise<NodeRedisLike>;
  /** SIGKILL a master (the node of a single-node Redis) and start it again, empty, `downMs` later. */
  killRestart(target: number, downMs: number): Promise<string>;
  flushAll(target: number): Promise<string>;
  pause(target: number, ms: number): Promise<string>;
  failover(target: number): Promise<string>;
  killMaster(target: number, downMs: number): Promise<string>;
  /** Resumes paused nodes, starts dead ones, and waits until the topology is whole again. */
  restore(): Promise<void>;
  /** Every process of this Redis (to kill them if the soak itself is interrupted). */
  processes(): ChildProcess[];
  stop(): Promise<void>;
}

/** A client of the soak, built by the replicator's own connection code from the same settings. */
function soakClient(env: Record<string, string>): RedisClient {
  const config = loadConfig({
    ...env,
    SCHEMATIC_API_KEY: "unused",
    REDIS_READ_TIMEOUT: "1s",
    REDIS_WRITE_TIMEOUT: "1s",
    REDIS_DIAL_TIMEOUT: "1s",
    REDIS_MAX_RETRIES: "1",
  });
  const client = createRedis(config.redis, { connectionName: "schematic-soak" });
  client.on("error", () => undefined);
  return client;
}

async function pauseProcess(child: ChildProcess, ms: number): Promise<void> {
  child.kill("SIGSTOP");
  try {
    await sleep(ms);
  } finally {
    child.kill("SIGCONT");
  }
}

function resume(children: ChildProcess[]): void {
  for (const c of children) if (running(c)) c.kill("SIGCONT");
}

/** What every topology does alike: the soak's client on its settings, and stopping with every node resumed. */
abstract class BaseRig {
  readonly client: RedisClient;

  constructor(readonly env: Record<string, string>) {
    this.client = soakClient(env);
  }

  abstract processes(): ChildProcess[];
  protected abstract stopNodes(): Promise<void>;

  async stop(): Promise<void> {
    this.client.disconnect();
    resume(this.processes());
    await this.stopNodes();
  }
}

class SingleRig extends BaseRig implements RedisRig {
  readonly topology = "single";

  constructor(private readonly server: RedisServer) {
    super({ REDIS_ADDR: server.addr });
  }

  dataPorts(): number[] {
    return [this.server.port];
  }
  async sdkClient(): Promise<NodeRedisLike> {
    return createClient({ url: this.server.url });
  }
  async killRestart(_target: number, downMs: number): Promise<string> {
    await this.server.kill("SIGKILL");
    await sleep(downMs);
    await this.server.restart();
    return `SIGKILL; restarted empty after ${downMs} ms`;
  }
  async flushAll(): Promise<string> {
    await command(this.server.port, ["FLUSHALL"]);
    return `FLUSHALL on ${this.server.addr}`;
  }
  async pause(_target: number, ms: number): Promise<string> {
    await pauseProcess(this.server.process, ms);
    return `SIGSTOP ${this.server.addr} for ${ms} ms`;
  }
  failover(): Promise<string> {
    throw new Error("no failover on a single node");
  }
  killMaster(): Promise<string> {
    throw new Error("no failover on a single node");
  }
  async restore(): Promise<void> {
    resume(this.processes());
    if (!running(this.server.process)) await this.server.restart();
  }
  processes(): ChildProcess[] {
    return [this.server.process];
  }
  protected async stopNodes(): Promise<void> {
    await this.server.stop();
  }
}

class SentinelRig extends BaseRig implements RedisRig {
  readonly topology = "sentinel";

  constructor(private readonly group: SentinelGroup) {
    super({ REDIS_SENTINEL_ADDRS: group.sentinelAddrs, REDIS_SENTINEL_MASTER: group.masterName });
  }

  dataPorts(): number[] {
    return this.group.servers.map((s) => s.port);
  }
  async sdkClient(): Promise<NodeRedisLike> {
    return createClient({ url: `redis://127.0.0.1:${await this.group.masterPort()}` });
  }
  private async master() {
    const port = await this.group.masterPort();
    const node = this.group.servers.find((s) => s.port === port);
    if (!node) throw new Error(`the master on port ${port} is not one of the group's servers`);
    return node;
  }
  async killRestart(_target: number, downMs: number): Promise<string> {
    const m = await this.master();
    await stopProcess(m.process, "SIGKILL");
    await sleep(downMs);
    await this.group.restartServer(m.port);
    const now = await this.group.masterPort();
    const role = now === m.port ? "still the master: no failover happened" : `a replica of ${now}`;
    return `SIGKILL the master ${m.addr}; restarted empty ${downMs} ms later (${role})`;
  }
  async flushAll(): Promise<string> {
    const m = await this.master();
    await command(m.port, ["FLUSHALL"]);
    return `FLUSHALL on the master ${m.addr}`;
  }
  async pause(_target: number, ms: number): Promise<string> {
    const m = await this.master();
    await pauseProcess(m.process, ms);
    return `SIGSTOP the master ${m.addr} for ${ms} ms`;
  }
  async failover(): Promise<string> {
    const before = await this.group.masterPort();
    const after = await this.group.failover();
    return `SENTINEL FAILOVER: master ${before} -> ${after}`;
  }
  async killMaster(_target: number, downMs: number): Promise<string> {
    const m = await this.master();
    // Without a replica in sync there is nothing to fail over to: that would be a different fault (both copies lost).
    const info = parseInfo(String(await command(m.port, ["INFO", "replication"])));
    if (!/state=online/.test(info.slave0 ?? "")) throw new Error(`the master ${m.addr} has no replica in sync`);
    try {
      const promoted = await this.group.killMaster();
      return `SIGKILL the master ${m.port}; ${promoted} promoted; ${m.port} restarted empty ${downMs} ms later`;
    } finally {
      await sleep(downMs);
      await this.group.restartServer(m.port);
    }
  }
  async restore(): Promise<void> {
    resume(this.processes());
    for (const s of this.group.servers) if (!running(s.process)) await this.group.restartServer(s.port);
    await this.group.waitHealthy();
  }
  processes(): ChildProcess[] {
    return [...this.group.servers, ...this.group.sentinels].map((n) => n.process);
  }
  protected async stopNodes(): Promise<void> {
    await this.group.stop();
  }
}

class ClusterRig extends BaseRig implements RedisRig {
  readonly topology = "cluster";

  constructor(private readonly cluster: RedisClusterServer) {
    super({ REDIS_CLUSTER_ADDRS: cluster.nodes.map((n) => n.addr).join(",") });
  }

  dataPorts(): number[] {
    return this.cluster.nodes.map((n) => n.port);
  }
  async sdkClient(): Promise<NodeRedisLike> {
    const live = this.cluster.nodes.filter((n) => running(n.process));
    return createCluster({ rootNodes: live.map((n) => ({ url: `redis://${n.addr}` })) }) as unknown as NodeRedisLike;
  }
  /** The `target`-th master by port (targets are drawn as indexes: the masters change with failovers). */
  private async master(target: number) {
    const masters = (await this.cluster.masters()).sort((a, b) => a.port - b.port);
    if (masters.length === 0) throw new Error("no live master");
    return masters[target % masters.length]!;
  }
  private process(addr: string): ChildProcess {
    const node = this.cluster.nodes.find((n) => n.addr === addr);
    if (!node) throw new Error(`${addr} is not one of the cluster's processes`);
    return node.process;
  }
  async killRestart(target: number, downMs: number): Promise<string> {
    const m = await this.master(target);
    await stopProcess(this.process(m.addr), "SIGKILL");
    await sleep(downMs);
    await this.cluster.restartNode(m.addr);
    return `SIGKILL the master ${m.addr}; restarted empty ${downMs} ms later`;
  }
  async flushAll(target: number): Promise<string> {
    const m = await this.master(target);
    await command(m.port, ["FLUSHALL"]);
    return `FLUSHALL on the master ${m.addr} (${m.slots} slots)`;
  }
  async pause(target: number, ms: number): Promise<string> {
    const m = await this.master(target);
    await pauseProcess(this.process(m.addr), ms);
    return `SIGSTOP the master ${m.addr} for ${ms} ms`;
  }
  async failover(target: number): Promise<string> {
    const m = await this.master(target);
    const replica = (await this.cluster.topology()).find((n) => n.masterId === m.id && !n.failed);
    if (!replica) throw new Error(`the master ${m.addr} has no replica`);
    await command(replica.port, ["CLUSTER", "FAILOVER"]);
    await waitFor(async () => (await this.cluster.topology()).find((n) => n.id === replica.id)?.role === "master", {
      timeoutMs: 20_000,
      intervalMs: 100,
      what: `${replica.addr} to take over from ${m.addr}`,
    });
    return `CLUSTER FAILOVER: ${replica.addr} took over from ${m.addr}`;
  }
  async killMaster(target: number, downMs: number): Promise<string> {
    const m = await this.master(target);
    // Without a replica in sync there is nothing to fail over to: that would be a different fault (both copies lost).
    const replica = (await this.cluster.topology()).find((n) => n.masterId === m.id && !n.failed);
    const link = replica && parseInfo(String(await command(replica.port, ["INFO", "replication"]))).master_link_status;
    if (!replica || link !== "up") throw new Error(`the master ${m.addr} has no replica in sync`);
    try {
      const promoted = await this.cluster.killMaster(m.addr);
      return `SIGKILL the master ${m.addr}; ${promoted} took over; restarted empty ${downMs} ms later`;
    } finally {
      await sleep(downMs);
      await this.cluster.restartNode(m.addr);
    }
  }
  async restore(): Promise<void> {
    resume(this.processes());
    for (const n of this.cluster.nodes) if (!running(n.process)) await this.cluster.restartNode(n.addr);
    await this.cluster.waitHealthy({ replicas: true, timeoutMs: 90_000 });
  }
  processes(): ChildProcess[] {
    return this.cluster.nodes.map((n) => n.process);
  }
  protected async stopNodes(): Promise<void> {
    await this.cluster.stop();
  }
}

export async function startRedisRig(topology: Topology): Promise<RedisRig> {
  if (topology === "single") return new SingleRig(await startRedis());
  if (topology === "sentinel") return new SentinelRig(await startSentinelGroup());
  return new ClusterRig(await startCluster());
}

// ---- the emulator ----------------------------------------------------------------------------------------------

export class HarnessError extends Error {}

export interface EmulatorProcess {
  url: string;
  wsUrl: string;
  child: ChildProcess;
  /** One admin request (`/_emulator{path}`); anything but 200 is a harness error (the soak only sends valid changes). */
  admin<T = Record<string, unknown>>(method: string, path: string, body?: unknown): Promise<T>;
  stop(): Promise<void>;
}

export async function startEmulatorProcess(
  root: string,
  fixtureFile: string,
  replayLog: number,
): Promise<EmulatorProcess> {
  const child = spawn(
    process.execPath,
    [join(root, "dist/cli/emulator.js"), "--port", "0", "--fixture", fixtureFile, "--replay-log", String(replayLog)],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-8000);
  });
  const url = await new Promise<string>((resolve, reject) => {
    let out = "";
    const onData = (d: Buffer) => {
      out += d.toString();
      const m = /^schematic-emulator listening on (http:\/\/\S+)\n/.exec(out);
      if (m) {
        child.stdout.off("data", onData);
        child.stdout.resume();
        resolve(m[1]!);
      }
    };
    child.stdout.on("data", onData);
    child.once("exit", (code) => reject(new HarnessError(`the emulator exited with ${code}: ${stderr.trim()}`)));
  });
  const admin = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    const res = await fetch(`${url}/_emulator${path}`, {
      method,
      headers: body === undefined ? undefined : { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(120_000),
    });
    const text = await res.text();
    if (res.status !== 200)
      throw new HarnessError(`${method} /_emulator${path} answered ${res.status}: ${text.slice(0, 300)}`);
    return JSON.parse(text) as T;
  };
  return {
    url,
    wsUrl: `${url.replace(/^http/, "ws")}/datastream`,
    child,
    admin,
    async stop() {
      if (!running(child)) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await exited;
    },
  };
}

// ---- the replicators -------------------------------------------------------------------------------------------

export interface ProcessExit {
  slot: number;
  pid: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  /** What the soak did to it: undefined for an exit nobody asked for. */
  sent?: "SIGKILL" | "SIGTERM" | "stop";
  /** Milliseconds from the signal to the exit. */
  afterMs?: number;
}

/**
 * One replicator of the soak: a health port of its own (kept across restarts, so probes always find it) and the
 * process currently running there, if any. Every exit is recorded with what caused it.
 */
export class ReplicatorSlot {
  current: ReplicatorProcess | undefined;
  readonly exits: ProcessExit[] = [];
  /** Log lines of every process this slot ran. */
  readonly logs: string[] = [];
  private sent: { signal: ProcessExit["sent"]; at: number } | undefined;

  constructor(
    readonly index: number,
    private readonly env: Record<string, string>,
    private port: number,
    private readonly entry: string,
  ) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.alive() ? this.current?.process.pid : undefined;
  }

  alive(): boolean {
    return this.current !== undefined && running(this.current.process);
  }

  async start(): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const rep = await startReplicator({ ...this.env, HEALTH_PORT: String(this.port) }, { nodeArgs: [this.entry] });
      this.current = rep;
      this.sent = undefined;
      const started = Date.now();
      void rep.exited.then((code) => {
        this.logs.push(...rep.logs.slice(0));
        const sent = this.sent;
        this.exits.push({
          slot: this.index,
          pid: rep.process.pid ?? 0,
          code,
          signal: rep.process.signalCode,
          sent: sent?.signal,
          afterMs: sent ? Date.now() - sent.at : undefined,
        });
      });
      // A health port taken by another process meanwhile: the replicator exits at once; take another port.
      const early = await Promise.race([rep.exited.then(() => true), sleep(1500).then(() => false)]);
      if (!early) return;
      const bound = !rep.logs.some((l) => /EADDRINUSE/.test(l));
      if (bound || attempt === 3 || Date.now() - started > 10_000) {
        throw new HarnessError(`replicator ${this.index} exited at start-up:\n${rep.logs.slice(-10).join("\n")}`);
      }
      this.exits.pop();
      this.port = await freePort();
    }
  }

  /** Sends `signal` and waits for the exit (SIGKILL after `graceMs`). */
  async stop(signal: "SIGKILL" | "SIGTERM", graceMs = SHUTDOWN_TIMEOUT_MS + 10_000): Promise<ProcessExit | undefined> {
    const rep = this.current;
    if (!rep || !running(rep.process)) return undefined;
    this.sent = { signal, at: Date.now() };
    rep.process.kill(signal);
    const timer = setTimeout(() => rep.process.kill("SIGKILL"), graceMs);
    await rep.exited;
    clearTimeout(timer);
    await sleep(0);
    return this.exits.at(-1);
  }

  /** SIGSTOP, then SIGCONT `ms` later: the process freezes (a long GC pause, a stalled VM) and wakes up. */
  async pause(ms: number): Promise<string> {
    const rep = this.current;
    if (!rep || !running(rep.process)) throw new Error(`replicator ${this.index} is not running`);
    const role = await fetch(`${this.url}/health`, { signal: AbortSignal.timeout(2000) })
      .then(async (res) => ((await res.json()) as { role?: string }).role ?? "?")
      .catch(() => "?");
    await pauseProcess(rep.process, ms);
    return `replicator ${this.index} (pid ${rep.process.pid}, ${role}) frozen for ${ms} ms`;
  }

  /** Ends the process at the end of the soak (not a fault). */
  async shutdown(): Promise<void> {
    const rep = this.current;
    if (!rep || !running(rep.process)) return;
    this.sent = { signal: "stop", at: Date.now() };
    rep.process.kill("SIGKILL");
    await rep.exited;
  }

  /** Every log line so far, the running process's included. */
  allLogs(): string[] {
    return this.alive() ? [...this.logs, ...(this.current?.logs ?? [])] : this.logs;
  }
}

export function replicatorEnv(emu: EmulatorProcess, redis: RedisRig, loading: Loading): Record<string, string> {
  return {
    ...SOAK_SETTINGS,
    ...redis.env,
    SCHEMATIC_API_URL: emu.url,
    SCHEMATIC_DATASTREAM_URL: emu.wsUrl,
    USE_ASYNC_LOADING: loading === "async" ? "true" : "false",
  };
}
