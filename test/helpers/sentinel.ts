/**
 * A real Sentinel group for one test suite: a master and a replica (redis-server) and three sentinels
 * (`redis-server sentinel-N.conf --sentinel`; Debian's redis-server runs in Sentinel mode that way even without the
 * redis-sentinel package), all on free loopback ports, with a short `down-after-milliseconds` so a killed master is
 * replaced within seconds. Optionally the data nodes require a password and the sentinels another one.
 * Every process is SIGKILLed when the test process exits (see procs.ts); `stop()` removes the directory.
 */
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis, type RedisOptions } from "ioredis";
import { command, parseInfo, running, spawnTracked, stopProcess, waitForServer } from "./procs.js";
import { freePort, redisServerArgs, waitFor } from "./redis.js";

export interface SentinelNode {
  port: number;
  addr: string;
  process: ChildProcess;
}

export interface SentinelGroup {
  masterName: string;
  /** The data nodes (the first one starts as master). */
  servers: SentinelNode[];
  sentinels: SentinelNode[];
  /** `127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3` */
  sentinelAddrs: string;
  password?: string;
  sentinelPassword?: string;
  /** The master's port as the sentinels report it. */
  masterPort(): Promise<number>;
  /** A fresh ioredis client on the current master (closed by stop()). */
  masterClient(): Promise<Redis>;
  /** SENTINEL FAILOVER; resolves with the new master's port once every sentinel and the new master agree. */
  failover(): Promise<number>;
  /** SIGKILLs the master; resolves with the new master's port once a replica has been promoted. */
  killMaster(): Promise<number>;
  /** Waits until the master has `replicas` replicas with their link up and every sentinel knows them all. */
  waitHealthy(replicas?: number): Promise<void>;
  /**
   * Starts a killed data node again on its port (empty): as a replica of the current master, or as a master if the
   * sentinels still name it (killed and restarted before they noticed).
   */
  restartServer(port: number): Promise<void>;
  stop(): Promise<void>;
}

export interface StartSentinelOptions {
  masterName?: string;
  /** requirepass/masterauth of the data nodes (and `sentinel auth-pass`). */
  password?: string;
  /** requirepass of the sentinels. */
  sentinelPassword?: string;
  /** Data nodes: a master and `servers - 1` replicas (default 2). */
  servers?: number;
}

export async function startSentinelGroup(opts: StartSentinelOptions = {}): Promise<SentinelGroup> {
  const masterName = opts.masterName ?? "mymaster";
  const dir = mkdtempSync(join(tmpdir(), "redis-sentinel-"));
  const servers: SentinelNode[] = [];
  const sentinels: SentinelNode[] = [];
  const clients: Redis[] = [];
  const dataAuth: RedisOptions = opts.password ? { password: opts.password } : {};
  const sentinelAuth: RedisOptions = opts.sentinelPassword ? { password: opts.sentinelPassword } : {};

  const stop = async () => {
    for (const c of clients) c.disconnect();
    await Promise.all([...sentinels, ...servers].map((n) => stopProcess(n.process, "SIGKILL")));
    rmSync(dir, { recursive: true, force: true });
  };

  const sentinelCall = async (args: (string | number)[]) => {
    let lastErr: unknown;
    for (const s of sentinels.filter((n) => running(n.process))) {
      try {
        return await command(s.port, args, sentinelAuth);
      } catch (err) {
        lastErr = err;
      }
    }
    throw new Error(`no sentinel answers: ${String(lastErr)}`);
  };

  const masterPort = async () => {
    const reply = (await sentinelCall(["SENTINEL", "GET-MASTER-ADDR-BY-NAME", masterName])) as string[] | null;
    if (!reply) throw new Error(`the sentinels do not know ${masterName}`);
    return Number(reply[1]);
  };

  const waitHealthy = async (replicas = (opts.servers ?? 2) - 1) => {
    await waitFor(
      async () => {
        const port = await masterPort();
        const info = parseInfo(String(await command(port, ["INFO", "replication"], dataAuth)));
        if (info.role !== "master" || Number(info.connected_slaves) < replicas) return false;
        for (let i = 0; i < replicas; i++) if (!/state=online/.test(info[`slave${i}`] ?? "")) return false;
        for (const s of sentinels) {
          const flat = (await command(s.port, ["SENTINEL", "MASTER", masterName], sentinelAuth)) as string[];
          const m = new Map<string, string>();
          for (let i = 0; i + 1 < flat.length; i += 2) m.set(flat[i]!, flat[i + 1]!);
          if (Number(m.get("port")) !== port || m.get("flags") !== "master") return false;
          if (Number(m.get("num-slaves")) < replicas || Number(m.get("num-other-sentinels")) < sentinels.length - 1) {
            return false;
          }
          const known = (await command(s.port, ["SENTINEL", "REPLICAS", masterName], sentinelAuth)) as string[][];
          const up = known.filter((r) => {
            const flags = r[r.indexOf("flags") + 1] ?? "";
            return flags === "slave";
          });
          if (up.length < replicas) return false;
        }
        return true;
      },
      { timeoutMs: 30_000, intervalMs: 200, what: "the Sentinel group to be healthy" },
    );
  };

  const awaitNewMaster = async (old: number) =>
    await waitFor(
      async () => {
        const ports = new Set<number>();
        for (const s of sentinels) {
          const reply = (await command(s.port, ["SENTINEL", "GET-MASTER-ADDR-BY-NAME", masterName], sentinelAuth)) as
            | string[]
            | null;
          ports.add(Number(reply?.[1]));
        }
        const [port] = [...ports];
        if (ports.size !== 1 || port === undefined || port === old) return undefined;
        const role = (await command(port, ["ROLE"], dataAuth)) as unknown[];
        return role[0] === "master" ? port : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 100, what: `a new master to replace port ${old}` },
    );

  const authArgs = opts.password ? ["--requirepass", opts.password, "--masterauth", opts.password] : [];
  const spawnServer = (port: number, replicaOf?: number) =>
    spawnTracked("redis-server", [
      ...redisServerArgs(port, dir),
      ...authArgs,
      ...(replicaOf === undefined ? [] : ["--replicaof", "127.0.0.1", String(replicaOf)]),
    ]);

  try {
    const count = opts.servers ?? 2;
    for (let i = 0; i < count; i++) {
      const port = await freePort();
      const child = spawnServer(port, i === 0 ? undefined : servers[0]!.port);
      servers.push({ port, addr: `127.0.0.1:${port}`, process: child });
    }
    await Promise.all(servers.map((s) => waitForServer(s.port, dataAuth)));
    for (let i = 0; i < 3; i++) {
      const port = await freePort();
      const conf = join(dir, `sentinel-${port}.conf`);
      writeFileSync(
        conf,
        [
          `port ${port}`,
          "bind 127.0.0.1",
          `dir ${dir}`,
          `sentinel monitor ${masterName} 127.0.0.1 ${servers[0]!.port} 2`,
          `sentinel down-after-milliseconds ${masterName} 1000`,
          `sentinel failover-timeout ${masterName} 10000`,
          `sentinel parallel-syncs ${masterName} 1`,
          ...(opts.password ? [`sentinel auth-pass ${masterName} ${opts.password}`] : []),
          ...(opts.sentinelPassword
            ? [`requirepass ${opts.sentinelPassword}`, `sentinel sentinel-pass ${opts.sentinelPassword}`]
            : []),
          "",
        ].join("\n"),
      );
      const child = spawnTracked("redis-server", [conf, "--sentinel"]);
      sentinels.push({ port, addr: `127.0.0.1:${port}`, process: child });
    }
    await Promise.all(sentinels.map((s) => waitForServer(s.port, sentinelAuth, `sentinel on port ${s.port}`)));
    await waitHealthy();
  } catch (err) {
    await stop();
    throw err;
  }

  return {
    masterName,
    servers,
    sentinels,
    sentinelAddrs: sentinels.map((s) => s.addr).join(","),
    password: opts.password,
    sentinelPassword: opts.sentinelPassword,
    masterPort,
    async masterClient() {
      const c = new Redis({ host: "127.0.0.1", port: await masterPort(), ...dataAuth, maxRetriesPerRequest: 3 });
      c.on("error", () => {});
      clients.push(c);
      return c;
    },
    async failover() {
      const old = await masterPort();
      await sentinelCall(["SENTINEL", "FAILOVER", masterName]);
      return await awaitNewMaster(old);
    },
    async killMaster() {
      const old = await masterPort();
      const victim = servers.find((s) => s.port === old);
      if (!victim) throw new Error(`the master (port ${old}) is not one of this group's servers`);
      await stopProcess(victim.process, "SIGKILL");
      return await awaitNewMaster(old);
    },
    waitHealthy,
    async restartServer(port) {
      const node = servers.find((s) => s.port === port);
      if (!node) throw new Error(`port ${port} is not one of this group's servers`);
      if (running(node.process)) throw new Error(`the server on port ${port} is still running`);
      const master = await masterPort();
      node.process = spawnServer(port, master === port ? undefined : master);
      await waitForServer(port, dataAuth);
    },
    stop,
  };
}
