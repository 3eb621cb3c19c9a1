// Child processes of the benchmark: a private Redis (single node or a 3-master cluster), the emulator and the
// replicator, each started from dist/ with plain `node`, plus /proc readers for their memory and CPU time.
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Cluster, Redis } from "ioredis";

export const ROOT = fileURLToPath(new URL("../..", import.meta.url));
/** Where the emulator and the replicator are run from (`--root`, for A/B runs of another build); default ROOT. */
let productRoot = ROOT;
export function setProductRoot(dir) {
  productRoot = dir;
}
const children = new Set();

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const nowNs = () => process.hrtime.bigint();

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export async function waitFor(what, check, { timeoutMs = 60_000, everyMs = 50 } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch {}
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}

/**
 * Variables of the benchmark's own environment that would change how a child runs (Node flags, glibc's malloc),
 * so that every figure is of plain `node` unless `--env` / `--node-args` say otherwise.
 */
const TUNING_VARIABLE = /^(NODE_OPTIONS|GLIBC_TUNABLES|LD_PRELOAD|MALLOC_\w*)$/;
const inheritedEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !TUNING_VARIABLE.test(k)));
/** The names of the variables above that were set (and are not passed on). */
export const droppedEnv = Object.keys(process.env).filter((k) => TUNING_VARIABLE.test(k));

/** Spawns a child that the benchmark owns (killed on exit); stderr is kept for error messages. */
export function startChild(name, command, args, { env = {}, onStdout, cwd = ROOT } = {}) {
  const child = spawn(command, args, { cwd, env: { ...inheritedEnv, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  let stderr = "";
  child.stderr.on("data", (d) => {
    stderr = (stderr + d).slice(-8000);
  });
  if (onStdout) child.stdout.on("data", onStdout);
  else child.stdout.resume();
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  exited.then(() => children.delete(child));
  return {
    name,
    child,
    pid: child.pid,
    exited,
    stderr: () => stderr,
    async stop(signal = "SIGTERM", timeoutMs = 30_000) {
      if (child.exitCode !== null || child.signalCode !== null) return exited;
      child.kill(signal);
      const t = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
      const r = await exited;
      clearTimeout(t);
      return r;
    },
  };
}

/** Runs `node SCRIPT JSON(options)` to the end; resolves with the JSON object it printed (its one result line). */
export async function runJsonScript(name, script, options) {
  let out;
  const child = startChild(name, process.execPath, [script, JSON.stringify(options)], {
    onStdout: (d) => {
      const m = /(\{.*\})/.exec(String(d));
      if (m) out = JSON.parse(m[1]);
    },
  });
  const { code } = await child.exited;
  if (code !== 0 || !out) throw new Error(`${name} failed: ${child.stderr()}`);
  return out;
}

export function killAllChildren() {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
}

// ---- Redis -----------------------------------------------------------------------------------------------------

async function startRedisNode(dir, port, extra) {
  const proc = startChild(`redis:${port}`, "redis-server", [
    "--port",
    String(port),
    "--bind",
    "127.0.0.1",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    dir,
    ...extra,
  ]);
  const probe = new Redis({ port, host: "127.0.0.1", lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: null });
  probe.on("error", () => undefined);
  await waitFor(`redis-server on port ${port}`, async () => {
    if (probe.status !== "ready") await probe.connect().catch(() => probe.disconnect());
    return (await probe.ping()) === "PONG";
  });
  probe.disconnect();
  return proc;
}

/** A private Redis: one node, or (cluster) three masters without replicas. */
export async function startRedis({ cluster = false } = {}) {
  if (spawnSync("redis-server", ["--version"]).status !== 0) {
    throw new Error("redis-server is not installed (apt-get install -y redis-server)");
  }
  const dir = mkdtempSync(join(tmpdir(), "schematic-bench-redis-"));
  const nodes = [];
  const ports = [];
  for (let i = 0; i < (cluster ? 3 : 1); i++) {
    const port = await freePort();
    const extra = cluster
      ? [
          "--cluster-enabled",
          "yes",
          "--cluster-config-file",
          join(dir, `nodes-${port}.conf`),
          "--dbfilename",
          `d${port}.rdb`,
        ]
      : [];
    nodes.push(await startRedisNode(dir, port, extra));
    ports.push(port);
  }
  const addrs = ports.map((p) => `127.0.0.1:${p}`);
  if (cluster) {
    const r = spawnSync("redis-cli", ["--cluster", "create", ...addrs, "--cluster-replicas", "0", "--cluster-yes"], {
      encoding: "utf8",
    });
    if (r.status !== 0) throw new Error(`redis-cli --cluster create failed: ${r.stderr || r.stdout}`);
    for (const port of ports) {
      const c = new Redis({ port, host: "127.0.0.1" });
      await waitFor("cluster_state:ok", async () => (await c.cluster("INFO")).includes("cluster_state:ok"));
      c.disconnect();
    }
  }
  const clients = [];
  let infoClients;
  const api = {
    cluster,
    addrs,
    pids: nodes.map((n) => n.pid),
    /** Environment for the replicator. */
    env: cluster ? { REDIS_CLUSTER_ADDRS: addrs.join(",") } : { REDIS_ADDR: addrs[0] },
    /** A new client (Redis or Cluster). */
    client() {
      const c = cluster
        ? new Cluster(ports.map((port) => ({ host: "127.0.0.1", port })))
        : new Redis({ port: ports[0], host: "127.0.0.1" });
      clients.push(c);
      return c;
    },
    /** One plain client per master (keyspace notifications, FLUSHALL, CONFIG). */
    nodeClients() {
      return ports.map((port) => {
        const c = new Redis({ port, host: "127.0.0.1" });
        clients.push(c);
        return c;
      });
    },
    async eachNode(fn) {
      const cs = api.nodeClients();
      try {
        return await Promise.all(cs.map(fn));
      } finally {
        for (const c of cs) c.disconnect();
      }
    },
    async flush() {
      await api.eachNode((c) => c.flushall());
    },
    async usedMemory() {
      const infos = await api.infoAll("memory");
      return infos.reduce((sum, info) => sum + Number(/used_memory:(\d+)/.exec(info)?.[1] ?? 0), 0);
    },
    /** `INFO section` of every master, over connections kept open (no connect in a measurement window). */
    async infoAll(section) {
      infoClients ??= api.nodeClients();
      return await Promise.all(infoClients.map((c) => c.info(section)));
    },
    async stop() {
      for (const c of clients) c.disconnect();
      for (const n of nodes) await n.stop("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return api;
}

// ---- emulator and replicator -----------------------------------------------------------------------------------

export async function startEmulator(generate, extraArgs = []) {
  let buffer = "";
  let resolveUrl;
  const urlReady = new Promise((r) => {
    resolveUrl = r;
  });
  const proc = startChild(
    "emulator",
    process.execPath,
    ["dist/cli/emulator.js", "--port", "0", "--generate", generate, ...extraArgs],
    {
      cwd: productRoot,
      onStdout: (d) => {
        buffer += d;
        const m = /listening on (http:\/\/\S+)/.exec(buffer);
        if (m) resolveUrl(m[1]);
      },
    },
  );
  const url = await Promise.race([
    urlReady,
    proc.exited.then(() => {
      throw new Error(`the emulator exited: ${proc.stderr()}`);
    }),
  ]);
  return { ...proc, url };
}

/**
 * The replicator with the given settings on top of the defaults (LOG_FORMAT json, a free HEALTH_PORT). Its log
 * lines are parsed; `waitLog(msg)` resolves with the first line whose msg matches.
 */
export async function startReplicator({ env, nodeArgs = [] }) {
  const healthPort = await freePort();
  const logs = [];
  const waiters = [];
  let partial = "";
  const proc = startChild("replicator", process.execPath, [...nodeArgs, "dist/cli/replicator.js"], {
    cwd: productRoot,
    env: { SCHEMATIC_API_KEY: "bench-key", HEALTH_PORT: String(healthPort), LOG_FORMAT: "json", ...env },
    onStdout: (d) => {
      const lines = (partial + d).split("\n");
      partial = lines.pop();
      for (const line of lines) {
        let entry;
        try {
          entry = JSON.parse(line);
        } catch {
          continue;
        }
        if (logs.length < 5000) logs.push(entry);
        for (const w of [...waiters]) {
          if (w.test(entry)) {
            waiters.splice(waiters.indexOf(w), 1);
            w.resolve(entry);
          }
        }
      }
    },
  });
  const base = `http://127.0.0.1:${healthPort}`;
  return {
    ...proc,
    healthPort,
    logs,
    base,
    waitLog(test) {
      const hit = logs.find(test);
      if (hit) return Promise.resolve(hit);
      return new Promise((resolve) => waiters.push({ test, resolve }));
    },
    async ready() {
      try {
        const res = await fetch(`${base}/ready`);
        const body = await res.json();
        return res.status === 200 ? body : undefined;
      } catch {
        return undefined;
      }
    },
    async debug() {
      return await (await fetch(`${base}/debug`)).json();
    },
  };
}

// ---- /proc --------------------------------------------------------------------------------------------------------

/** RSS and peak RSS (VmHWM) of a process, in bytes. */
export function memoryOf(pid) {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const kb = (name) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? 0) * 1024;
    return { rss: kb("VmRSS"), hwm: kb("VmHWM") };
  } catch {
    return { rss: 0, hwm: 0 };
  }
}

const CLK_TCK = 100;
/**
 * CPU seconds used by a process so far: the sum of its threads' run time from /proc/PID/task/TID/schedstat
 * (nanoseconds, so a window of a few hundred changes is measured exactly), or user + system time in clock ticks
 * (10 ms) where the kernel keeps no schedstat.
 */
export function cpuSecondsOf(pid) {
  try {
    let ns = 0;
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]);
      } catch {} // a thread that just ended
    }
    if (ns > 0) return ns / 1e9;
  } catch {}
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return 0;
  }
}

/** Samples a process's RSS every `everyMs` until stopped; `peak` is the highest sample. */
export function rssSampler(pid, everyMs = 50) {
  let peak = 0;
  const timer = setInterval(() => {
    peak = Math.max(peak, memoryOf(pid).rss);
  }, everyMs);
  timer.unref();
  return {
    get peak() {
      return Math.max(peak, memoryOf(pid).rss);
    },
    reset() {
      peak = 0;
    },
    stop() {
      clearInterval(timer);
    },
  };
}

// ---- machine load ---------------------------------------------------------------------------------------------------

function statTicks(path) {
  const stat = readFileSync(path, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { own: Number(f[11]) + Number(f[12]), children: Number(f[13]) + Number(f[14]) };
}

/**
 * A snapshot of CPU use: the machine's busy time and the part of it used by the benchmark and its children (live
 * ones from /proc/PID/stat, exited ones from our cutime/cstime). See {@link otherLoad}.
 */
export function cpuSnapshot() {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  const total = line.reduce((a, b) => a + b, 0);
  const busy = total - line[3] - (line[4] ?? 0);
  const self = statTicks("/proc/self/stat");
  let ours = self.own + self.children;
  for (const c of children) {
    try {
      ours += statTicks(`/proc/${c.pid}/stat`).own;
    } catch {}
  }
  return { busy, ours, at: process.hrtime.bigint() };
}

/** Cores' worth of CPU used by processes outside the benchmark between two snapshots (other work on the host). */
export function otherLoad(a, b) {
  const seconds = Number(b.at - a.at) / 1e9;
  if (seconds <= 0) return 0;
  return Math.max(0, (b.busy - a.busy - (b.ours - a.ours)) / CLK_TCK / seconds);
}
