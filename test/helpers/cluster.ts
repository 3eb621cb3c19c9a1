/**
 * A real Redis Cluster for one test suite: `masters` redis-server processes with `--cluster-enabled yes` (plus one
 * replica each) on free loopback ports, joined with `redis-cli --cluster create … --cluster-replicas 1
 * --cluster-yes`. A short `cluster-node-timeout` makes a killed master's replica take over within seconds.
 * Every process is SIGKILLed when the test process exits (see procs.ts), and `stop()` removes the data directory.
 */
import { type ChildProcess, execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { Cluster, type RedisOptions } from "ioredis";
import { command, parseInfo, running, spawnTracked, stopProcess, waitForServer } from "./procs.js";
import { freePort, redisServerArgs, waitFor } from "./redis.js";
import { type FreezableProxy, startFreezableProxy } from "./topology.js";

const run = promisify(execFile);

/** A free port whose cluster-bus port (+10000) is free too. */
async function clusterPort(): Promise<number> {
  for (;;) {
    const port = await freePort();
    if (port + 10_000 <= 65_535 && (await portIsFree(port + 10_000))) return port;
  }
}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once("error", () => resolve(false));
    srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)));
  });
}

export interface ClusterNodeProcess {
  /** The port the node listens on. */
  port: number;
  /** The address clients are told to use (`127.0.0.1:PORT`): the node's own, or its proxy's. */
  addr: string;
  process: ChildProcess;
  /** With `proxied`: the proxy every client connection to this node goes through. */
  proxy?: FreezableProxy;
}

export interface ClusterTopologyNode {
  id: string;
  addr: string;
  port: number;
  role: "master" | "replica";
  /** The master's id, for a replica. */
  masterId?: string;
  failed: boolean;
  slots: number;
}

export interface RedisClusterServer {
  nodes: ClusterNodeProcess[];
  /** The seed nodes, `127.0.0.1:p1,127.0.0.1:p2,…` (the first masters' addresses). */
  seeds: string;
  password?: string;
  /** A fresh ioredis Cluster client (closed by stop()). */
  client(): Cluster;
  /** The cluster as a live node sees it (CLUSTER NODES). */
  topology(): Promise<ClusterTopologyNode[]>;
  /** The live masters that serve slots. */
  masters(): Promise<ClusterTopologyNode[]>;
  /** Waits until every live node says cluster_state:ok, all slots are served, and each master has a synced replica. */
  waitHealthy(opts?: { replicas?: boolean; timeoutMs?: number }): Promise<void>;
  /** SIGKILLs a master and waits until its replica has taken over its slots (returns the new master's address). */
  killMaster(addr: string): Promise<string>;
  /**
   * SIGKILLs a master and starts it again at once on its port: empty (no persistence), with the same node id and
   * slots (its nodes.conf). Its replica is told not to take over meanwhile, and resynchronises from the empty
   * master. Resolves once the cluster is healthy again.
   */
  restartEmpty(addr: string): Promise<void>;
  /** Migrates one slot, with its keys, from the master serving it to the master at `toAddr` (as redis-cli does). */
  migrateSlot(slot: number, toAddr: string): Promise<void>;
  /**
   * Starts a node that was killed again on its port, empty but with its cluster configuration file: it rejoins the
   * cluster (a failed-over master comes back as a replica of its successor). Resolves once it answers.
   */
  restartNode(addr: string): Promise<void>;
  stop(): Promise<void>;
}

export interface StartClusterOptions {
  masters?: number;
  /** Sets requirepass and masterauth on every node. */
  password?: string;
  /** `cluster-node-timeout` in ms (default 1500). */
  nodeTimeoutMs?: number;
  /**
   * Put a freezable TCP proxy (topology.ts) in front of every node, and make the node announce the proxy's port, so
   * that every client connection (and replication) goes through it: a test can then cut one client off from
   * chosen nodes. The cluster bus stays direct.
   */
  proxied?: boolean;
  args?: string[];
}

export async function startCluster(opts: StartClusterOptions = {}): Promise<RedisClusterServer> {
  const masterCount = opts.masters ?? 3;
  const dir = mkdtempSync(join(tmpdir(), "redis-cluster-"));
  const nodes: ClusterNodeProcess[] = [];
  const clients: Cluster[] = [];
  const auth: RedisOptions = opts.password ? { password: opts.password } : {};
  const authArgs = opts.password ? ["--requirepass", opts.password, "--masterauth", opts.password] : [];

  const stop = async () => {
    for (const c of clients) c.disconnect();
    await Promise.all(nodes.map((n) => stopProcess(n.process, "SIGKILL")));
    await Promise.all(nodes.map((n) => n.proxy?.close()));
    rmSync(dir, { recursive: true, force: true });
  };

  const spawnNode = (port: number, proxy?: FreezableProxy) =>
    spawnTracked("redis-server", [
      ...redisServerArgs(port, dir),
      "--cluster-enabled",
      "yes",
      "--cluster-config-file",
      `nodes-${port}.conf`,
      "--cluster-node-timeout",
      String(opts.nodeTimeoutMs ?? 1500),
      ...authArgs,
      ...(proxy
        ? ["--cluster-announce-port", String(proxy.port), "--cluster-announce-bus-port", String(port + 10_000)]
        : []),
      ...(opts.args ?? []),
    ]);

  try {
    for (let i = 0; i < masterCount * 2; i++) {
      // A node also listens on port + 10000 (the cluster bus), which freePort() did not check: a node that could
      // not bind it exits at once, and is started again on other ports.
      for (let attempt = 1; ; attempt++) {
        const port = await clusterPort();
        const proxy = opts.proxied ? await startFreezableProxy(port) : undefined;
        const child = spawnNode(port, proxy);
        const exited = new Promise<"exited">((resolve) => child.once("exit", () => resolve("exited")));
        const up = waitForServer(port, auth).then(
          () => "up" as const,
          (err: Error) => err,
        );
        const started = await Promise.race([up, exited]);
        if (started instanceof Error) throw started;
        if (started === "up") {
          nodes.push({ port, addr: `127.0.0.1:${proxy?.port ?? port}`, process: child, proxy });
          break;
        }
        await proxy?.close();
        if (attempt === 5) throw new Error(`redis-server (cluster node) exited at start-up ${attempt} times`);
      }
    }
    // redis-cli makes the first `masterCount` addresses masters and gives each a replica from the rest.
    await run(
      "redis-cli",
      [
        ...(opts.password ? ["-a", opts.password, "--no-auth-warning"] : []),
        "--cluster",
        "create",
        ...nodes.map((n) => `127.0.0.1:${n.port}`),
        "--cluster-replicas",
        "1",
        "--cluster-yes",
      ],
      { timeout: 60_000 },
    );
  } catch (err) {
    await stop();
    throw err;
  }

  const livePorts = () => nodes.filter((n) => running(n.process)).map((n) => n.port);

  const topology = async (): Promise<ClusterTopologyNode[]> => {
    let lastErr: unknown;
    for (const port of livePorts()) {
      try {
        return parseClusterNodes(String(await command(port, ["CLUSTER", "NODES"], auth)));
      } catch (err) {
        lastErr = err;
      }
    }
    throw new Error(`no cluster node answers: ${String(lastErr)}`);
  };

  const server: RedisClusterServer = {
    nodes,
    seeds: nodes
      .slice(0, masterCount)
      .map((n) => n.addr)
      .join(","),
    password: opts.password,
    client() {
      const c = new Cluster(
        nodes.slice(0, masterCount).map((n) => ({ host: "127.0.0.1", port: n.port })),
        { redisOptions: { ...auth, maxRetriesPerRequest: 3 }, slotsRefreshTimeout: 2000 },
      );
      c.on("error", () => {});
      c.on("node error", () => {});
      clients.push(c);
      return c;
    },
    topology,
    async masters() {
      return (await topology()).filter((n) => n.role === "master" && !n.failed && n.slots > 0);
    },
    async waitHealthy({ replicas = true, timeoutMs = 30_000 } = {}) {
      await waitFor(
        async () => {
          for (const port of livePorts()) {
            const info = parseInfo(String(await command(port, ["CLUSTER", "INFO"], auth)));
            if (info.cluster_state !== "ok" || info.cluster_slots_ok !== "16384") return false;
          }
          const topo = await topology();
          const masters = topo.filter((n) => n.role === "master" && !n.failed && n.slots > 0);
          if (masters.length !== masterCount) return false;
          if (!replicas) return true;
          for (const m of masters) {
            const replica = topo.find((n) => n.masterId === m.id && !n.failed);
            if (!replica) return false;
            const info = parseInfo(String(await command(replica.port, ["INFO", "replication"], auth)));
            if (info.master_link_status !== "up") return false;
          }
          return true;
        },
        { timeoutMs, intervalMs: 200, what: "the Redis Cluster to be healthy" },
      );
    },
    async killMaster(addr) {
      const before = await topology();
      const victim = before.find((n) => n.addr === addr && n.role === "master");
      if (!victim) throw new Error(`${addr} is not a master`);
      const replica = before.find((n) => n.masterId === victim.id && !n.failed);
      if (!replica) throw new Error(`${addr} has no replica to promote`);
      const proc = nodes.find((n) => n.addr === addr);
      if (!proc) throw new Error(`${addr} is not one of this cluster's processes`);
      await stopProcess(proc.process, "SIGKILL");
      await waitFor(
        async () => {
          const topo = await topology();
          const promoted = topo.find((n) => n.id === replica.id);
          return promoted?.role === "master" && promoted.slots > 0;
        },
        { timeoutMs: 30_000, intervalMs: 100, what: `the replica ${replica.addr} to take over from ${addr}` },
      );
      await server.waitHealthy({ replicas: false });
      return replica.addr;
    },
    async restartEmpty(addr) {
      const before = await topology();
      const victim = before.find((n) => n.addr === addr && n.role === "master");
      if (!victim) throw new Error(`${addr} is not a master`);
      const replica = before.find((n) => n.masterId === victim.id && !n.failed);
      const proc = nodes.find((n) => n.addr === addr);
      if (!proc) throw new Error(`${addr} is not one of this cluster's processes`);
      const noFailover = (on: boolean) =>
        replica ? command(replica.port, ["CONFIG", "SET", "cluster-replica-no-failover", on ? "yes" : "no"], auth) : 0;
      await noFailover(true);
      try {
        await stopProcess(proc.process, "SIGKILL");
        proc.process = spawnNode(proc.port, proc.proxy);
        await waitForServer(proc.port, auth);
        await waitFor(
          async () => {
            const again = (await topology()).find((n) => n.id === victim.id);
            return again?.role === "master" && again.slots === victim.slots && !again.failed;
          },
          { timeoutMs: 30_000, intervalMs: 100, what: `${addr} to serve its slots again` },
        );
        await server.waitHealthy();
      } finally {
        await noFailover(false);
      }
    },
    async migrateSlot(slot, toAddr) {
      const masters = await server.masters();
      const to = masters.find((m) => m.addr === toAddr);
      if (!to) throw new Error(`${toAddr} is not a master`);
      const ranges = (await command(to.port, ["CLUSTER", "SLOTS"], auth)) as [number, number, [string, number]][];
      const range = ranges.find(([start, end]) => slot >= start && slot <= end);
      const from = masters.find((m) => range && m.port === Number(range[2][1]));
      if (!from) throw new Error(`no master serves slot ${slot}`);
      if (from.id === to.id) return;
      await command(to.port, ["CLUSTER", "SETSLOT", slot, "IMPORTING", from.id], auth);
      await command(from.port, ["CLUSTER", "SETSLOT", slot, "MIGRATING", to.id], auth);
      for (;;) {
        const keys = (await command(from.port, ["CLUSTER", "GETKEYSINSLOT", slot, 100], auth)) as string[];
        if (keys.length === 0) break;
        const authArgs = opts.password ? ["AUTH", opts.password] : [];
        await command(from.port, ["MIGRATE", "127.0.0.1", to.port, "", 0, 5000, ...authArgs, "KEYS", ...keys], auth);
      }
      for (const m of [to, from, ...masters.filter((x) => x.id !== to.id && x.id !== from.id)]) {
        await command(m.port, ["CLUSTER", "SETSLOT", slot, "NODE", to.id], auth);
      }
    },
    async restartNode(addr) {
      const node = nodes.find((n) => n.addr === addr);
      if (!node) throw new Error(`${addr} is not one of this cluster's processes`);
      if (running(node.process)) throw new Error(`${addr} is still running`);
      node.process = spawnNode(node.port, node.proxy);
      await waitForServer(node.port, auth);
    },
    stop,
  };
  try {
    await server.waitHealthy();
  } catch (err) {
    await stop();
    throw err;
  }
  return server;
}

/** CLUSTER NODES: `id addr@cport flags master ping pong epoch link slot…` per line. */
export function parseClusterNodes(text: string): ClusterTopologyNode[] {
  const out: ClusterTopologyNode[] = [];
  for (const line of text.split("\n")) {
    const parts = line.trim().split(" ");
    if (parts.length < 8) continue;
    const [id, address, flags, master, , , , , ...slotRanges] = parts as [string, string, string, string, ...string[]];
    const addr = address.split("@")[0]!;
    const flagSet = new Set(flags.split(","));
    let slots = 0;
    for (const range of slotRanges) {
      if (range.startsWith("[")) continue; // a slot being migrated or imported
      const [from, to] = range.split("-").map(Number);
      slots += (to ?? from!) - from! + 1;
    }
    out.push({
      id,
      addr,
      port: Number(addr.split(":").pop()),
      role: flagSet.has("master") ? "master" : "replica",
      masterId: master === "-" ? undefined : master,
      failed: flagSet.has("fail") || flagSet.has("fail?") || flagSet.has("noaddr"),
      slots,
    });
  }
  return out;
}
