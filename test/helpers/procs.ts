/**
 * Child processes the topology and HA tests start (redis-server nodes, sentinels): spawned through
 * {@link spawnTracked}, so that every one of them is SIGKILLed when the test process exits, even after a failure
 * or a crash of the test itself. Each helper also stops its processes in its own `stop()`.
 */
import { type ChildProcess, type SpawnOptions, spawn } from "node:child_process";
import { Redis, type RedisOptions } from "ioredis";

const live = new Set<ChildProcess>();
let hooked = false;

function killAll(): void {
  for (const child of live) {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
  live.clear();
}

export function spawnTracked(command: string, args: string[], options: SpawnOptions = {}): ChildProcess {
  if (!hooked) {
    hooked = true;
    process.once("exit", killAll);
    for (const signal of ["SIGINT", "SIGTERM"] as const) {
      process.once(signal, () => {
        killAll();
        process.exit(130);
      });
    }
  }
  const child = spawn(command, args, { stdio: ["ignore", "ignore", "pipe"], ...options });
  live.add(child);
  child.once("exit", () => live.delete(child));
  return child;
}

export function running(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

/** Sends `signal` (SIGTERM by default) and resolves once the process is gone (SIGKILL after `graceMs`). */
export async function stopProcess(
  child: ChildProcess,
  signal: NodeJS.Signals = "SIGTERM",
  graceMs = 5000,
): Promise<void> {
  if (!running(child)) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill(signal);
  const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  await exited;
  clearTimeout(timer);
}

/** A one-shot ioredis connection (no retries), for probes and admin commands of the helpers. */
export function probeClient(port: number, options: RedisOptions = {}): Redis {
  const client = new Redis({
    host: "127.0.0.1",
    port,
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: 2000,
    commandTimeout: 5000,
    ...options,
  });
  client.on("error", () => {});
  return client;
}

/** Runs one command on a fresh connection and closes it. */
export async function command(port: number, args: (string | number)[], options: RedisOptions = {}): Promise<unknown> {
  const client = probeClient(port, options);
  try {
    await client.connect();
    return await client.call(String(args[0]), ...args.slice(1).map(String));
  } finally {
    client.disconnect();
  }
}

/** Polls PING until the server on `port` answers (10 s). */
export async function waitForServer(
  port: number,
  options: RedisOptions = {},
  what = `redis on port ${port}`,
): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      if ((await command(port, ["PING"], options)) === "PONG") return;
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`${what} did not start: ${String(err)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** `INFO section` parsed into a record. */
export function parseInfo(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const i = line.indexOf(":");
    if (i > 0 && !line.startsWith("#")) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}
