/**
 * Shared pieces of the topology and HA tests (test/topology-*.test.ts, test/ha-*.test.ts):
 *
 * - the official TypeScript SDK in replicator mode on any node-redis v4 client (a cluster client from
 *   `createCluster`, a TLS client), and the end-to-end SDK table of test/e2e-sdk.test.ts run through it;
 * - bursts of changes through `POST /_emulator/bulk` while a fault happens;
 * - "Redis equals the emulator" on any ioredis client (Cluster included);
 * - a replicator run that must fail at start-up, with its exit code and stderr;
 * - a MONITOR recorder that attributes every data write Redis executes to the replicator connection that sent it;
 * - a TCP proxy that freezes chosen clients' connections to Redis (a partition of one instance only).
 */
import assert from "node:assert/strict";
import { type AddressInfo, connect, createServer, type Server, type Socket } from "node:net";
import sdk from "@schematichq/schematic-typescript-node";
import { type Cluster, Redis, type RedisOptions } from "ioredis";
import type { Fixture } from "../../src/model/wire.js";
import { type Difference, diffRedis } from "../../src/verify/diff.js";
import {
  type ApiStub,
  admin,
  checkSdk,
  comparable,
  defaultKeys,
  emulatorDump,
  formatDifferences,
  type SdkClient,
  type SdkResult,
  startApiStub,
} from "./e2e.js";
import type { BulkChange } from "./faults.js";
import { waitFor } from "./redis.js";
import type { ReplicatorProcess } from "./replicator.js";
import { parseCommand } from "./resp.js";
import { allChecks, CONDITION_TYPES, conditionTypes, RULE_TYPES, rulesById } from "./sdk-table.js";

// ---- the SDK on any node-redis client ---------------------------------------------------------------------------

/** The part of a node-redis v4 client (single or cluster) the tests need besides what the SDK uses. */
export interface NodeRedisLike {
  connect(): Promise<unknown>;
  quit?(): Promise<unknown>;
  disconnect(): Promise<unknown>;
  on(event: "error", listener: (err: Error) => void): unknown;
}

type SdkRedisClient = NonNullable<
  NonNullable<ConstructorParameters<typeof sdk.SchematicClient>[0]>["dataStream"]
>["redisClient"];

interface DataStreamInternals {
  isReplicatorReady(): boolean;
  getReplicatorCacheVersion(): string | undefined;
}

export interface SdkOnRedis {
  client: SdkClient;
  stub: ApiStub;
  close(): Promise<void>;
}

/**
 * The official SDK in replicator mode reading through `redis` (connected here; closed by close()), polling
 * `healthUrl` every 200 ms, its API pointed at a stub that counts and fails every request. Resolves once the SDK
 * reports the replicator ready with `expectVersion`.
 */
export async function startSdkOn(redis: NodeRedisLike, healthUrl: string, expectVersion: string): Promise<SdkOnRedis> {
  const stub = await startApiStub();
  redis.on("error", () => undefined);
  await redis.connect();
  const client = new sdk.SchematicClient({
    apiKey: "sch_topology_replicator_mode",
    basePath: stub.url,
    eventCaptureBaseURL: stub.captureUrl,
    logLevel: "error",
    useDataStream: true,
    dataStream: {
      replicatorMode: true,
      redisClient: redis as unknown as SdkRedisClient,
      replicatorHealthURL: healthUrl,
      replicatorHealthCheck: 200,
    },
  });
  // Bounded: a node-redis cluster client whose master died can leave commands (and so close()) pending forever.
  const close = async () => {
    await within(5000, client.close(), "closing the SDK").catch(() => undefined);
    await within(5000, redis.disconnect(), "disconnecting the SDK's Redis client").catch(() => undefined);
    await stub.close();
  };
  const ds = (client as unknown as { datastreamClient?: DataStreamInternals }).datastreamClient;
  try {
    assert.ok(ds, "the SDK started its DataStream client");
    await waitFor(() => ds.isReplicatorReady() && ds.getReplicatorCacheVersion() === expectVersion, {
      timeoutMs: 30_000,
      what: "the SDK to report the replicator ready with its cache version",
    });
  } catch (err) {
    await close();
    throw err;
  }
  return { client, stub, close };
}

/**
 * The end-to-end SDK table (test/helpers/sdk-table.ts), as test/e2e-sdk.test.ts runs it: for every check the
 * replicator-mode SDK equals the direct-mode SDK and the hand-written value, every company and user context resolves
 * from Redis, the deciding rules cover every rule type and condition type, and the API is never called.
 */
export async function assertSdkTable(viaRedis: SdkOnRedis, direct: SdkClient, fixture: Fixture): Promise<void> {
  const checks = allChecks();
  const mismatches: string[] = [];
  const ruleTypes = new Set<string>();
  const conditions = new Set<string>();
  const rules = rulesById(fixture);
  let trues = 0;
  for (const c of checks) {
    const r: SdkResult = await checkSdk(viaRedis.client, c.row.context, c.flag);
    const d: SdkResult = await checkSdk(direct, c.row.context, c.flag);
    assert.deepEqual(comparable(r), comparable(d), `${c.name}: replicator mode vs direct mode`);
    if (r.value !== c.expected) mismatches.push(`${c.name} = ${r.value}, written by hand: ${c.expected}`);
    if (c.row.context.company) assert.ok(r.companyId, `${c.name}: the company was found in Redis`);
    if (c.row.context.user) assert.ok(r.userId, `${c.name}: the user was found in Redis`);
    if (r.value) trues++;
    if (r.ruleType) ruleTypes.add(r.ruleType);
    const rule = r.ruleId ? rules.get(r.ruleId) : undefined;
    if (rule) for (const t of conditionTypes(rule)) conditions.add(t);
  }
  assert.deepEqual(mismatches, []);
  assert.deepEqual(viaRedis.stub.calls, [], "the replicator-mode SDK never called the API");
  assert.ok(trues >= 50 && checks.length - trues >= 50, `${trues} true of ${checks.length}`);
  assert.deepEqual([...ruleTypes].sort(), [...RULE_TYPES].sort(), "rule types that decided a check");
  assert.deepEqual([...conditions].sort(), [...CONDITION_TYPES].sort(), "condition types of deciding rules");
}

/** `promise`, or a rejection naming `what` after `ms` (for calls that could otherwise hang a test). */
export async function within<T>(ms: number, promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

// ---- Redis equals the emulator ------------------------------------------------------------------------------------

/** Polls until diffRedis (any client, Cluster included) finds zero differences against the emulator's dump. */
export async function waitEqual(
  db: Redis | Cluster,
  emulatorUrl: string,
  { timeoutMs = 40_000, what = "Redis to equal the emulator", logs = () => [] as string[] } = {},
): Promise<void> {
  let last: Difference[] = [];
  try {
    await waitFor(
      async () => {
        const source = await emulatorDump(emulatorUrl);
        last = (await within(15_000, diffRedis(db, defaultKeys(), source), "diffRedis")).differences;
        return last.length === 0;
      },
      { timeoutMs, intervalMs: 250, what },
    );
  } catch (err) {
    throw new Error(
      `${(err as Error).message}; ${last.length} differences:\n${formatDifferences(last)}\n--- logs ---\n${logs()
        .slice(-25)
        .join("\n")}`,
    );
  }
}

/** Sends `changes` through POST /_emulator/bulk in chunks, `pauseMs` apart; resolves with the last stream id. */
export async function burst(emulatorUrl: string, changes: BulkChange[], chunk = 50, pauseMs = 30): Promise<string> {
  let last = "";
  for (let i = 0; i < changes.length; i += chunk) {
    last = String((await admin(emulatorUrl, "POST", "/bulk", { changes: changes.slice(i, i + chunk) })).stream_id);
    if (pauseMs > 0) await new Promise((r) => setTimeout(r, pauseMs));
  }
  return last;
}

// ---- who writes: MONITOR ------------------------------------------------------------------------------------------

export interface WriteEvent {
  /** Order in the MONITOR stream (Redis executes commands one at a time). */
  seq: number;
  /** Server time (s, from MONITOR). */
  time: number;
  /** The client name (CLIENT SETNAME), or its address when it set none. */
  writer: string;
  /** `SET key`, `DEL key`, `PEXPIRE key`, … */
  command: string;
  key: string;
}

export interface WriteMonitor {
  /** Data writes Redis executed (inside scripts or not), lease commands excluded. */
  writes: WriteEvent[];
  /** Every command clients sent (not those scripts ran), as `{ seq, writer, command: "EVALSHA" }`. */
  commands: { seq: number; writer: string; command: string }[];
  /** Every client name seen, by address. */
  names: Map<string, string>;
  stop(): Promise<void>;
}

const WRITE_COMMANDS = new Set(["set", "del", "unlink", "pexpire", "expire", "persist", "getdel", "setex", "psetex"]);

/**
 * Records, through a MONITOR connection, every write command Redis executes on a key other than `leaseKey`,
 * attributed to the client that sent it: commands a script runs appear as `lua` right after the script's own line
 * and are attributed to that script's caller. Names come from each connection's CLIENT SETNAME (sent first by
 * ioredis), so a write is attributed to the replicator whose connection name holds its pid.
 */
export async function monitorWrites(port: number, leaseKey: string, options: RedisOptions = {}): Promise<WriteMonitor> {
  const names = new Map<string, string>();
  const writes: WriteEvent[] = [];
  const commands: WriteMonitor["commands"] = [];
  const base = new Redis({ host: "127.0.0.1", port, lazyConnect: true, maxRetriesPerRequest: 1, ...options });
  base.on("error", () => undefined);
  await base.connect();
  // Connections opened before the monitor: their names from CLIENT LIST.
  for (const line of String(await base.call("CLIENT", "LIST")).split("\n")) {
    const addr = /\baddr=(\S+)/.exec(line)?.[1];
    const name = /\bname=(\S*)/.exec(line)?.[1];
    if (addr && name) names.set(addr, name);
  }
  const monitor = await base.monitor();
  let seq = 0;
  let caller = "";
  monitor.on("monitor", (time: string, args: string[], source: string) => {
    seq++;
    const cmd = (args[0] ?? "").toLowerCase();
    if (source !== "lua") {
      caller = source;
      if (cmd === "client" && (args[1] ?? "").toLowerCase() === "setname" && args[2]) names.set(source, args[2]);
      commands.push({ seq, writer: names.get(source) ?? source, command: cmd.toUpperCase() });
    }
    if (!WRITE_COMMANDS.has(cmd)) return;
    const key = args[1] ?? "";
    if (key === leaseKey) return;
    const from = source === "lua" ? caller : source;
    writes.push({
      seq,
      time: Number(time),
      writer: names.get(from) ?? from,
      command: `${cmd.toUpperCase()} ${key}`,
      key,
    });
  });
  return {
    writes,
    commands,
    names,
    async stop() {
      monitor.disconnect();
      base.disconnect();
    },
  };
}

/**
 * The writers in the order they wrote, one entry per run of consecutive writes (`[a, b]`: a wrote, then only b).
 * A writer appearing twice means two instances wrote interleaved.
 */
export function writerRuns(writes: WriteEvent[]): string[] {
  const runs: string[] = [];
  for (const w of writes) if (runs.at(-1) !== w.writer) runs.push(w.writer);
  return runs;
}

/** The connection name of a replicator process as the monitor saw it (its pid ends the name). */
export function connectionName(monitor: WriteMonitor, r: ReplicatorProcess): string {
  const names = [...new Set(monitor.names.values())].filter((n) => n.endsWith(`-${r.process.pid}`));
  assert.equal(names.length, 1, `one connection name for pid ${r.process.pid}: ${names.join(", ")}`);
  return names[0]!;
}

/**
 * Waits until `writer` has written since `since` (an index into `monitor.writes`): a fault meant to hit a writer in
 * the middle of a burst must wait for the burst to reach Redis, however slow the machine.
 */
export async function untilWrote(monitor: WriteMonitor, writer: string, since: number): Promise<void> {
  await waitFor(() => monitor.writes.slice(since).some((w) => w.writer === writer), {
    what: `${writer} to write part of the burst`,
  });
}

// ---- a TCP proxy that can freeze one replicator's connections --------------------------------------------------

export interface FreezableProxy {
  port: number;
  /**
   * Stops forwarding, in both directions, on every connection whose client name (its CLIENT SETNAME, read from the
   * first commands it sends) `match` accepts, and on those opened later (default: every connection). Connections stay
   * open: a network partition, not a reset. What the clients send meanwhile is held, and delivered on thaw().
   * With `when`, such a connection keeps forwarding until it sends bytes that `when` accepts: those are held (a
   * partition that starts just as that client sends them).
   */
  freeze(match?: (name: string | undefined) => boolean, when?: (sent: string) => boolean): void;
  thaw(): void;
  /** The bytes held so far from frozen clients (what they sent into the partition), as text. */
  held(): string;
  close(): Promise<void>;
}

interface ProxiedConnection {
  downstream: Socket;
  upstream: Socket;
  /** undefined until the client's first commands were read; "" for a client that sets no name. */
  name: string | undefined;
  frozen: boolean;
  /** What is still to be delivered each way, in order: bytes, or null for the end of the stream. */
  toServer: (Buffer | null)[];
  toClient: (Buffer | null)[];
}

/**
 * A loopback TCP proxy to `targetPort` (listening on `port`, or a free port), for cutting chosen clients off from a
 * Redis server without touching the others. A frozen connection delivers nothing either way, not even the end of a
 * stream (a client's close, or the server's after CLIENT KILL): everything waits, in order, for thaw(), as in a
 * network that heals. The server then gets what the client sent before anything else.
 */
export async function startFreezableProxy(targetPort: number, port = 0): Promise<FreezableProxy> {
  const connections = new Set<ProxiedConnection>();
  let match: ((name: string | undefined) => boolean) | undefined;
  let when: ((sent: string) => boolean) | undefined;
  const sent = (c: ProxiedConnection) => Buffer.concat(c.toServer.filter((b): b is Buffer => b !== null));
  const deliver = (c: ProxiedConnection) => {
    if (c.name === undefined) c.name = clientName(sent(c));
    if (!c.frozen && c.name !== undefined && match?.(c.name || undefined)) {
      c.frozen = !when || when(sent(c).toString("utf8"));
    }
    if (c.frozen || c.name === undefined) return;
    for (const item of c.toServer.splice(0)) item ? c.upstream.write(item) : c.upstream.end();
    for (const item of c.toClient.splice(0)) item ? c.downstream.write(item) : c.downstream.end();
  };
  const server: Server = createServer({ allowHalfOpen: true }, (downstream) => {
    const upstream = connect({ port: targetPort, host: "127.0.0.1", allowHalfOpen: true });
    const c: ProxiedConnection = { downstream, upstream, name: undefined, frozen: false, toServer: [], toClient: [] };
    connections.add(c);
    const relay = (from: Socket, queue: (Buffer | null)[]) => {
      from.on("data", (chunk: Buffer) => {
        queue.push(chunk);
        deliver(c);
      });
      const end = () => {
        if (queue.at(-1) !== null) queue.push(null);
        deliver(c);
      };
      from.on("end", end);
      from.on("error", end);
      from.on("close", () => {
        end();
        if (downstream.destroyed && upstream.destroyed) connections.delete(c);
      });
    };
    relay(downstream, c.toServer);
    relay(upstream, c.toClient);
  });
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    freeze(accept = () => true, trigger = undefined) {
      match = accept;
      when = trigger;
      for (const c of connections) deliver(c);
    },
    thaw() {
      match = undefined;
      when = undefined;
      for (const c of connections) {
        c.frozen = false;
        deliver(c);
      }
    },
    held() {
      return [...connections]
        .filter((c) => c.frozen)
        .map((c) => sent(c).toString("utf8"))
        .join("");
    },
    async close() {
      for (const c of connections) {
        c.downstream.destroy();
        c.upstream.destroy();
      }
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * The client name a connection sets first thing (ioredis sends `CLIENT SETNAME` before anything else but AUTH), ""
 * when its first other command is something else, undefined while more bytes are needed to tell.
 */
function clientName(bytes: Buffer): string | undefined {
  let rest = bytes;
  for (;;) {
    const command = parseCommand(rest);
    if (!command) return rest.length > 64 * 1024 ? "" : undefined;
    const [name = "", sub = "", value = ""] = command.args;
    if (/^auth$/i.test(name)) {
      rest = rest.subarray(command.length);
      continue;
    }
    return /^client$/i.test(name) && /^setname$/i.test(sub) ? value : "";
  }
}
