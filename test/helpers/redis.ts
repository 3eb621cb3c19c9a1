/**
 * Starts a private `redis-server` on a free loopback port for one test suite, so tests never touch a server
 * somebody else started. No persistence, so a restart comes back empty (used by the self-healing tests).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";

/** The arguments every test redis-server gets: loopback only, no persistence, its files in `dir`. */
export function redisServerArgs(port: number, dir: string): string[] {
  return [
    ...["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir],
    // A replica still writes the RDB of each full sync to disk, and loads it when it starts: one file per server
    // (nodes share a directory), removed before a server that should come back empty is started again.
    ...["--dbfilename", rdbFile(port)],
  ];
}

/** The RDB file a server started with {@link redisServerArgs} writes in its directory. */
export function rdbFile(port: number): string {
  return `dump-${port}.rdb`;
}

/** Removes what a server left on disk, so that it starts again empty (nodes without persistence, see above). */
export function forgetData(dir: string, port: number): void {
  rmSync(join(dir, rdbFile(port)), { force: true });
}

export async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const address = srv.address();
      const port = typeof address === "object" && address ? address.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export interface RedisServer {
  port: number;
  host: string;
  /** `redis://127.0.0.1:PORT` */
  url: string;
  /** `127.0.0.1:PORT` */
  addr: string;
  /** The server's working directory (its persistence files, when a test turns persistence on). */
  dir: string;
  process: ChildProcess;
  /** A fresh ioredis client; closed by `stop()`. */
  client(): Redis;
  /** Kill the server (SIGKILL) without cleaning up, for fault tests. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Start the server again on the same port (empty unless the test turned persistence on). */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export interface StartRedisOptions {
  /** Extra `redis-server` arguments, e.g. `["--requirepass", "secret"]`. */
  args?: string[];
  port?: number;
}

export async function startRedis(options: StartRedisOptions = {}): Promise<RedisServer> {
  let port = options.port ?? (await freePort());
  const dir = mkdtempSync(join(tmpdir(), "redis-test-"));
  const clients: Redis[] = [];
  let proc: ChildProcess;

  /** Starts redis-server on `port`; false when it exited before answering (the port was taken meanwhile). */
  const tryLaunch = async (): Promise<boolean> => {
    proc = spawn("redis-server", [...redisServerArgs(port, dir), ...(options.args ?? [])], {
      stdio: ["ignore", "ignore", "inherit"],
    });
    const exited = new Promise<false>((resolve) => proc.once("exit", () => resolve(false)));
    const up = waitForPing(port, options.args).then(
      () => true,
      (err: Error) => err,
    );
    const started = await Promise.race([up, exited]);
    if (started instanceof Error) throw started;
    return started;
  };
  const launch = async () => {
    if (!(await tryLaunch())) throw new Error(`redis-server on port ${port} exited at start-up`);
  };
  // Another process may take a free port between freePort() and the bind: then try other ports.
  for (let attempt = 1; !(await tryLaunch()); attempt++) {
    if (options.port !== undefined || attempt === 5) throw new Error(`redis-server on port ${port} exited at start-up`);
    port = await freePort();
  }

  const server: RedisServer = {
    port,
    host: "127.0.0.1",
    url: `redis://127.0.0.1:${port}`,
    addr: `127.0.0.1:${port}`,
    dir,
    get process() {
      return proc;
    },
    client() {
      const password = passwordFrom(options.args);
      const c = new Redis({ host: "127.0.0.1", port, password, lazyConnect: false, maxRetriesPerRequest: 3 });
      clients.push(c);
      return c;
    },
    async kill(signal: NodeJS.Signals = "SIGKILL") {
      const exited = new Promise((resolve) => proc.once("exit", resolve));
      proc.kill(signal);
      await exited;
    },
    restart: launch,
    async stop() {
      for (const c of clients) c.disconnect();
      if (proc.exitCode === null && proc.signalCode === null) {
        const exited = new Promise((resolve) => proc.once("exit", resolve));
        proc.kill("SIGTERM");
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return server;
}

function passwordFrom(args: string[] | undefined): string | undefined {
  const i = args?.indexOf("--requirepass") ?? -1;
  return i >= 0 ? args?.[i + 1] : undefined;
}

async function waitForPing(port: number, args: string[] | undefined): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const probe = new Redis({
      host: "127.0.0.1",
      port,
      password: passwordFrom(args),
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    probe.on("error", () => undefined); // connect() rejects with it; no "Unhandled error event" noise
    try {
      await probe.connect();
      await probe.ping();
      probe.disconnect();
      return;
    } catch (err) {
      probe.disconnect();
      if (Date.now() > deadline) throw new Error(`redis-server on port ${port} did not start: ${String(err)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** Polls `check` until it returns a truthy value or the timeout passes (generous by default). */
export async function waitFor<T>(
  check: () => Promise<T> | T,
  { timeoutMs = 20_000, intervalMs = 50, what = "condition" } = {},
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/**
 * What a Redis refusing our TLS client certificate does to a connection's socket: an alert, a reset, then it is
 * gone. A second 'error' event nobody listens for throws here (in the service: kills the process).
 */
export function failSocketTwice(stream: Redis["stream"]): void {
  stream.emit("error", Object.assign(new Error("tlsv13 alert unknown ca"), { code: "ERR_SSL_TLSV1_ALERT_UNKNOWN_CA" }));
  stream.emit("error", Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" }));
  stream.destroy();
}
