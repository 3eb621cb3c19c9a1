/**
 * Redis connections for every topology operators run: a single node, Cluster (all masters,
 * single-key commands only) and Sentinel, each optionally over TLS with a CA file and an ACL user name.
 *
 * Settings map onto ioredis as follows:
 * - `dialTimeoutMs` → `connectTimeout`; `max(readTimeoutMs, writeTimeoutMs)` → `commandTimeout` (ioredis has one
 *   timeout per command, not separate read and write deadlines);
 * - `maxRetries` → `maxRetriesPerRequest` (reconnect attempts a queued command waits through before it fails), and
 *   the start-up attempts before a failure that waiting cannot heal is fatal ({@link waitForRedis});
 * - `maxRedirects` → Cluster `maxRedirections` (for commands the cluster client routes; the batch writer sends
 *   redirected ops through it, see writer.ts);
 * - `routeByLatency` has no ioredis equivalent (go-redis sends read-only commands to the closest node); reads go
 *   to masters (`scaleReads: "master"`), which is also what read-your-writes needs. A warning is logged.
 * Connections are lazy: nothing is dialled until the first command, normally {@link waitForRedis}'s PING.
 * After start-up the client reconnects forever (capped backoff); commands fail after `maxRetries` reconnects.
 */
import { connect as netConnect, type Socket } from "node:net";
import { type ConnectionOptions, connect as tlsConnect } from "node:tls";
import { Cluster, type ClusterOptions, Redis, type RedisOptions } from "ioredis";
import type { RedisConfig, RedisTlsConfig } from "../config/types.js";
import { backoffDelay, sleep } from "../util/time.js";
import { errorMessage, type StoreLog } from "./log.js";
import { type ServerVersion, serverVersions, versionProblem } from "./server-version.js";
import { GuardedSentinelConnector, GuardedStandaloneConnector } from "./socket-errors.js";

export type RedisClient = Redis | Cluster;

export interface CreateRedisOptions {
  /** Logs connection errors (at most one line per distinct message every 30 s) and setting caveats. */
  log?: StoreLog;
  /** Connection name shown by CLIENT LIST. */
  connectionName?: string;
}

export function createRedis(cfg: RedisConfig, options: CreateRedisOptions = {}): RedisClient {
  const log = options.log;
  const tls = tlsOptions(cfg.tls);
  const commandTimeout = Math.max(cfg.readTimeoutMs, cfg.writeTimeoutMs);
  const common: RedisOptions = {
    username: cfg.username,
    password: cfg.password,
    connectTimeout: cfg.dialTimeoutMs > 0 ? cfg.dialTimeoutMs : undefined,
    commandTimeout: commandTimeout > 0 ? commandTimeout : undefined,
    maxRetriesPerRequest: cfg.maxRetries,
    connectionName: options.connectionName,
    lazyConnect: true,
    // Also the Cluster's node connections (redisOptions): a second socket error must not kill the process.
    Connector: GuardedStandaloneConnector,
  };
  const reconnect = (times: number) => Math.min(100 * times, 2000);

  let client: RedisClient;
  const topo = cfg.topology;
  if (topo.kind === "cluster") {
    if (cfg.routeByLatency) {
      log?.warn(
        { setting: "REDIS_ROUTE_BY_LATENCY" },
        "REDIS_ROUTE_BY_LATENCY has no effect: the Redis client (ioredis) cannot route by latency; reads go to masters",
      );
    }
    const clusterOptions: ClusterOptions = {
      redisOptions: { ...common, ...(tls ? { tls } : {}) },
      maxRedirections: cfg.maxRedirects,
      scaleReads: "master",
      lazyConnect: true,
      clusterRetryStrategy: reconnect,
      slotsRefreshTimeout: Math.max(cfg.dialTimeoutMs, 1000),
      // Redirects and closed connections refresh the slot map at once; this also finds masters added later.
      slotsRefreshInterval: 5000,
      // With TLS the certificates name the hosts the cluster announces; resolving them to IPs first (the
      // default) would break verification, so hand the announced names straight to the TLS connection.
      ...(tls
        ? { dnsLookup: (address: string, callback: (err: null, address: string) => void) => callback(null, address) }
        : {}),
    };
    client = new Cluster(
      topo.nodes.map((n) => ({ host: n.host, port: n.port })),
      clusterOptions,
    );
  } else if (topo.kind === "sentinel") {
    client = new Redis({
      ...common,
      Connector: GuardedSentinelConnector,
      sentinels: topo.sentinels.map((s) => ({ host: s.host, port: s.port })),
      name: topo.masterName,
      role: "master",
      sentinelPassword: topo.sentinelPassword,
      db: topo.db,
      retryStrategy: reconnect,
      sentinelRetryStrategy: (times: number) => Math.min(250 * times, 2000),
      failoverDetector: true,
      // A demoted master answers writes with READONLY: ask the sentinels again (the write is retried by the caller).
      reconnectOnError: (err: Error) => (/^READONLY\b/.test(err.message) ? 1 : false),
      // go-redis uses one TLS configuration for the sentinels and the master; so do we.
      ...(tls ? { tls, enableTLSForSentinelMode: true, sentinelTLS: tls } : {}),
    });
  } else {
    client = new Redis({
      ...common,
      host: topo.host,
      port: topo.port,
      db: topo.db,
      retryStrategy: reconnect,
      ...(tls ? { tls } : {}),
    });
  }

  logErrors(client, describeRedis(cfg), log);
  return client;
}

/**
 * Without a listener ioredis prints every connection error to the console. Until Redis first answers, waitForRedis
 * reports the failures (with a diagnosis); afterwards each distinct error is logged at most every 30 s, and the
 * first answer after errors is logged too.
 */
function logErrors(client: RedisClient, where: string, log: StoreLog | undefined): void {
  let last = { message: "", at: 0 };
  let everReady = false;
  let failingSince: number | undefined;
  const onError = (err: unknown) => {
    const message = errorMessage(err);
    const now = Date.now();
    failingSince ??= now;
    connectionProblems.set(client, { message, since: failingSince });
    log?.debug({ err: message, redis: where }, "Redis connection error");
    if (!everReady || (message === last.message && now - last.at < 30_000)) return;
    last = { message, at: now };
    log?.warn({ err: message, redis: where }, "Redis connection error");
  };
  client.on("error", onError);
  if (client instanceof Cluster) client.on("node error", onError);
  client.on("ready", () => {
    if (everReady && failingSince !== undefined) {
      log?.info(
        { redis: where, downMs: Date.now() - failingSince, lastErr: last.message || undefined },
        "Redis answers again",
      );
    }
    everReady = true;
    failingSince = undefined;
    last = { message: "", at: 0 };
    connectionProblems.delete(client);
  });
}

/**
 * A second client of the same cluster, with the same settings but connections named `connectionName` (the batch
 * writer's own, see writer.ts). Connects on first use; disconnect() it when done.
 */
export function namedDuplicate(cluster: Cluster, connectionName: string, log?: StoreLog): Cluster {
  const copy = cluster.duplicate([], { redisOptions: { ...cluster.options.redisOptions, connectionName } });
  logErrors(copy, `cluster (connections named ${connectionName})`, log);
  return copy;
}

/**
 * Waits until a cluster client is ready, connecting it on first use, for at most `ms` (default: its dial timeout,
 * else 10 s). ioredis's own Cluster.connect() promise is not awaited: when its ready check fails (a master down,
 * a connection closed during CLUSTER INFO) it reconnects and that promise never settles, which left a new writer
 * waiting for ever with the lease held.
 */
export async function clusterReady(cluster: Cluster, ms?: number): Promise<void> {
  if (cluster.status === "ready") return;
  if (cluster.status === "wait") cluster.connect().catch(() => {});
  const limit = ms ?? cluster.options.redisOptions?.connectTimeout ?? 10_000;
  await new Promise<void>((resolve, reject) => {
    const settle = (err?: Error) => {
      clearTimeout(timer);
      cluster.off("ready", onReady);
      cluster.off("end", onEnd);
      if (err) reject(err);
      else resolve();
    };
    const onReady = () => settle();
    const onEnd = () => settle(new Error("the Redis Cluster client was closed"));
    const timer = setTimeout(() => settle(new Error(`the Redis Cluster was not ready within ${limit} ms`)), limit);
    cluster.on("ready", onReady);
    cluster.on("end", onEnd);
    if (cluster.status === "ready") settle();
  });
}

const connectionProblems = new WeakMap<RedisClient, { message: string; since: number }>();

/** The last connection error of a client made by {@link createRedis}, while it has not answered since. */
export function connectionProblem(client: RedisClient): { message: string; since: number } | undefined {
  return connectionProblems.get(client);
}

function tlsOptions(tls: RedisTlsConfig | undefined): ConnectionOptions | undefined {
  if (!tls) return undefined;
  const out: ConnectionOptions = {};
  if (tls.ca) out.ca = tls.ca;
  if (tls.cert) out.cert = tls.cert;
  if (tls.key) out.key = tls.key;
  if (tls.serverName) out.servername = tls.serverName;
  return out;
}

/**
 * `schematic-replicator:{id}` as a CLIENT SETNAME name: Redis refuses spaces and anything outside printable ASCII,
 * which a host name could hold, so those become `_`.
 */
export function redisConnectionName(id: string): string {
  return `schematic-replicator:${id}`.replace(/[^!-~]/g, "_");
}

/** Names of the connections a writer writes through on a Cluster start with this (see writer.ts). */
export const WRITER_CONNECTION_PREFIX = "schematic-replicator-writer:";

/** The name of a writer's own write connections on a Cluster: {@link WRITER_CONNECTION_PREFIX} + `id`, as above. */
export function writerConnectionName(id: string): string {
  return `${WRITER_CONNECTION_PREFIX}${id}`.replace(/[^!-~]/g, "_");
}

/** `127.0.0.1:6379`, `cluster 10.0.0.1:7000,10.0.0.2:7000`, `Sentinel master "mymaster" (sentinels a:26379)`. */
export function describeRedis(cfg: RedisConfig): string {
  const topo = cfg.topology;
  const join = (nodes: { host: string; port: number }[]) => nodes.map((n) => `${n.host}:${n.port}`).join(",");
  if (topo.kind === "cluster") return `cluster ${join(topo.nodes)}`;
  if (topo.kind === "sentinel") return `Sentinel master "${topo.masterName}" (sentinels ${join(topo.sentinels)})`;
  return `${topo.host}:${topo.port}`;
}

export function isCluster(client: RedisClient): client is Cluster {
  return client instanceof Cluster || (client as { isCluster?: boolean }).isCluster === true;
}

/** Every master of a cluster (as known from the last slots refresh), or the client itself. */
export function masters(client: RedisClient): Redis[] {
  return isCluster(client) ? client.nodes("master") : [client];
}

/** {@link masters}, after a first command when a cluster client knows none yet (it learns them from its slot map). */
export async function connectedMasters(client: RedisClient): Promise<Redis[]> {
  const nodes = masters(client);
  if (nodes.length > 0) return nodes;
  await client.ping();
  return masters(client);
}

/** The keys of one node matching `pattern`, a SCAN page at a time (empty pages skipped); stops when `signal` aborts. */
export async function* scanNode(
  node: Redis,
  pattern: string,
  count = 1000,
  signal?: AbortSignal,
): AsyncGenerator<string[]> {
  let cursor = "0";
  do {
    if (signal?.aborted) return;
    const [next, page] = await node.scan(cursor, "MATCH", pattern, "COUNT", count);
    cursor = next;
    if (page.length > 0) yield page;
  } while (cursor !== "0");
}

const lastMasterCheck = new WeakMap<Redis, number>();

/**
 * Sentinel only: asks every sentinel which server is the master and, when a majority names another server than the
 * one `client` is connected to, makes the client reconnect (ioredis then asks the sentinels again). After a
 * failover ioredis reconnects on the first `+switch-master` it hears, and may land on the old master again when the
 * sentinel it asks has not heard of the switch yet; the old master keeps taking writes until the sentinels
 * reconfigure it, seconds later. Called when writes stop being acknowledged by the replicas (acks.ts); at most once
 * a second. Resolves true when it made the client reconnect.
 */
export async function followSentinelMaster(client: Redis, log?: StoreLog): Promise<boolean> {
  const o = client.options;
  if (!o.sentinels?.length || !o.name) return false;
  const now = performance.now();
  if (now - (lastMasterCheck.get(client) ?? Number.NEGATIVE_INFINITY) < 1000) return false;
  lastMasterCheck.set(client, now);
  const answers = await Promise.all(
    o.sentinels.map(async (sentinel) => {
      const probe = new Redis({
        host: sentinel.host,
        port: sentinel.port,
        username: o.sentinelUsername,
        password: o.sentinelPassword,
        lazyConnect: true,
        maxRetriesPerRequest: 0,
        retryStrategy: () => null,
        Connector: GuardedStandaloneConnector,
        connectTimeout: 1000,
        commandTimeout: 1000,
        ...(o.enableTLSForSentinelMode && o.sentinelTLS ? { tls: o.sentinelTLS } : {}),
      });
      probe.on("error", () => {});
      try {
        await probe.connect();
        const reply = (await probe.call("SENTINEL", "GET-MASTER-ADDR-BY-NAME", o.name as string)) as string[] | null;
        return reply ? `${reply[0]}:${reply[1]}` : undefined;
      } catch {
        return undefined;
      } finally {
        probe.disconnect();
      }
    }),
  );
  const votes = new Map<string, number>();
  for (const a of answers) if (a) votes.set(a, (votes.get(a) ?? 0) + 1);
  const majority = Math.floor(o.sentinels.length / 2) + 1;
  const master = [...votes].find(([, n]) => n >= majority)?.[0];
  const stream = (client as unknown as { stream?: { remoteAddress?: string; remotePort?: number } }).stream;
  const current = stream?.remoteAddress ? `${stream.remoteAddress}:${stream.remotePort}` : undefined;
  if (!master || !current || master === current) return false;
  log?.warn({ from: current, to: master }, "the sentinels name another Redis master: reconnecting to it");
  client.disconnect(true);
  return true;
}

/** Start-up failure: `message` is one line naming the cause. */
export class RedisStartupError extends Error {
  override readonly name = "RedisStartupError";
  constructor(
    message: string,
    readonly kind: "unreachable" | "auth" | "tls" | "rejected",
    override readonly cause?: unknown,
  ) {
    super(message);
  }
}

const TLS_CODES = new Set([
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "CERT_UNTRUSTED",
  "CERT_REJECTED",
  "CERT_SIGNATURE_FAILURE",
  "EPROTO",
]);

type Classified = { kind: RedisStartupError["kind"]; permanent: boolean; message: string };

function classify(err: unknown, cfg: RedisConfig, attempts: number): Classified {
  const where = describeRedis(cfg);
  const tries = `after ${attempts} attempt${attempts === 1 ? "" : "s"}`;
  const raw = errorMessage(err)
    .replace(/\s+/g, " ")
    .replace(/^All sentinels are unreachable\. Retrying from scratch after \d+ms\. Last error: (.*)$/, "$1")
    .trim();
  const code = (err as { code?: unknown } | null)?.code;
  const topo = cfg.topology;
  const sentinelAuth =
    topo.kind === "sentinel" &&
    (/^All sentinels are unreachable/.test(errorMessage(err)) || (err as { sentinel?: boolean } | null)?.sentinel);
  if (sentinelAuth && /^(WRONGPASS|NOAUTH)\b|invalid username-password|invalid password/i.test(raw)) {
    const sentinels = topo.sentinels.map((n) => `${n.host}:${n.port}`).join(",");
    const what = /^NOAUTH\b/.test(raw)
      ? "Redis Sentinel requires a password (set REDIS_SENTINEL_PASSWORD)"
      : "Redis Sentinel rejected REDIS_SENTINEL_PASSWORD";
    return { kind: "auth", permanent: true, message: `${what} (${raw}) at sentinels ${sentinels}` };
  }
  if (/^(WRONGPASS|NOAUTH|NOPERM)\b|invalid username-password|invalid password/i.test(raw)) {
    const what = /^NOAUTH\b/.test(raw)
      ? "Redis requires a password"
      : cfg.username
        ? "Redis rejected the user name or password"
        : "Redis rejected the password";
    return { kind: "auth", permanent: true, message: `${what} (${raw}) at ${where}` };
  }
  if (
    (typeof code === "string" && (TLS_CODES.has(code) || code.startsWith("ERR_SSL_") || code.startsWith("ERR_TLS_"))) ||
    /certificate|ssl routines|\btls\b/i.test(raw)
  ) {
    // OpenSSL's "…:SSL routines:ssl3_read_bytes:tlsv13 alert certificate required:…" → the reason alone.
    const reason = /SSL routines:[^:]*:([^:]+)/.exec(raw)?.[1]?.trim() ?? raw;
    const hint = /certificate required/i.test(reason)
      ? " (the server requires a client certificate: set REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE)"
      : /unknown ca|bad certificate|certificate unknown/i.test(reason)
        ? " (the server does not accept the client certificate: is it signed by a CA the server trusts?)"
        : /self.signed|unable to (verify|get)|issuer/i.test(reason)
          ? " (REDIS_TLS_CA_FILE must hold the CA that signed the server's certificate)"
          : /altnames|does not match/i.test(reason)
            ? " (REDIS_TLS_SERVER_NAME, or the address, must be a name the server's certificate holds)"
            : "";
    return { kind: "tls", permanent: true, message: `TLS handshake with Redis at ${where} failed: ${reason}${hint}` };
  }
  if ((err as { name?: unknown } | null)?.name === "ReplyError") {
    // A bad database index cannot heal by waiting; CLUSTERDOWN, MASTERDOWN, LOADING and the like can.
    const permanent = /DB index|invalid DB/i.test(raw);
    const message = `Redis at ${where} refused the connection set-up: ${raw}`;
    return { kind: "rejected", permanent, message: permanent ? message : `${message} (${tries})` };
  }
  if (cfg.topology.kind === "sentinel" && /No such master/i.test(raw)) {
    const sentinels = cfg.topology.sentinels.map((n) => `${n.host}:${n.port}`).join(",");
    const message = `Redis Sentinel (${sentinels}) does not know master "${cfg.topology.masterName}": ${raw}`;
    return {
      kind: "rejected",
      permanent: false,
      message: `${message} (${tries})`,
    };
  }
  let note = tries;
  if (!cfg.tls && (/ECONNRESET/.test(raw) || code === "ECONNRESET"))
    note += "; if this Redis expects TLS, set REDIS_TLS=true";
  if (cfg.tls && /ECONNRESET|ETIMEDOUT|timed out/.test(raw)) note += "; is TLS enabled on that port?";
  return { kind: "unreachable", permanent: false, message: `Redis at ${where} is unreachable: ${raw} (${note})` };
}

/** The most telling error: a connection-level error seen on the client beats the command's generic rejection. */
function pickCause(commandError: unknown, eventError: unknown): unknown {
  const nodeError = (e: unknown) => (e as { lastNodeError?: unknown } | null)?.lastNodeError ?? e;
  const cmd = nodeError(commandError);
  const ev = eventError === undefined ? undefined : nodeError(eventError);
  if (ev !== undefined && (cmd === undefined || isGeneric(cmd))) return ev;
  return cmd ?? ev;
}

/** Errors that say a command failed but not why (the cause is elsewhere: an event, or a node). */
function isGeneric(err: unknown): boolean {
  return /max retries per request|Command timed out|Connection is closed|timed out after|Failed to refresh slots|None of startup nodes|Cluster is disconnected/i.test(
    errorMessage(err),
  );
}

/**
 * ioredis reports an unreachable or refusing cluster node only as "Connection is closed." / "Failed to refresh
 * slots cache.", and unreachable sentinels as "All sentinels are unreachable … Connection is closed.". Dial the
 * startup nodes (or the sentinels) one by one with a throw-away connection to find the actual cause.
 */
async function diagnose(cfg: RedisConfig): Promise<unknown> {
  const topo = cfg.topology;
  const tls = tlsOptions(cfg.tls);
  if (topo.kind === "single") {
    return tls
      ? await probeTls(topo.host, topo.port, tls, cfg.dialTimeoutMs)
      : await probePlain(topo.host, topo.port, cfg.dialTimeoutMs);
  }
  const auth =
    topo.kind === "cluster" ? { username: cfg.username, password: cfg.password } : { password: topo.sentinelPassword };
  const nodes = topo.kind === "cluster" ? topo.nodes : topo.sentinels;
  let first: unknown;
  for (const node of nodes.slice(0, 3)) {
    const probe = new Redis({
      host: node.host,
      port: node.port,
      ...auth,
      connectTimeout: cfg.dialTimeoutMs > 0 ? cfg.dialTimeoutMs : undefined,
      commandTimeout: Math.max(cfg.readTimeoutMs, cfg.writeTimeoutMs) || undefined,
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
      Connector: GuardedStandaloneConnector,
      ...(tls ? { tls } : {}),
    });
    let eventError: unknown;
    probe.on("error", (err) => {
      eventError = err;
    });
    try {
      await probe.connect();
      await probe.ping();
      if (topo.kind === "sentinel") return undefined; // a sentinel answers: the cause is what it said
    } catch (err) {
      const cause = pickCause(err, eventError);
      // A sentinel's own refusal (its password) must not read as the data nodes'.
      if (topo.kind === "sentinel" && cause instanceof Error) Object.assign(cause, { sentinel: true });
      first ??= cause;
    } finally {
      probe.disconnect();
    }
  }
  // Over TLS a refused client certificate shows only as a reset connection: a raw handshake names the alert.
  if (tls && (first === undefined || isGeneric(first) || /ECONNRESET|socket hang up/.test(errorMessage(first)))) {
    const alert = await probeTls(nodes[0]!.host, nodes[0]!.port, tls, cfg.dialTimeoutMs);
    if (alert) return topo.kind === "sentinel" ? Object.assign(alert, { sentinel: true }) : alert;
  }
  return first;
}

/**
 * A raw TLS connection that sends PING and reads the answer: resolves with the TLS error (a handshake failure, or
 * the alert a server sends after the handshake when it wants a client certificate), or undefined.
 */
async function probeTls(
  host: string,
  port: number,
  tls: ConnectionOptions,
  timeoutMs: number,
): Promise<Error | undefined> {
  const socket = tlsConnect({ host, port, ...tls }, () => socket.write("PING\r\n"));
  return await probe(socket, timeoutMs, () => undefined);
}

/** A raw plain-text PING: a server that closes the connection without a word is most likely a TLS port. */
async function probePlain(host: string, port: number, timeoutMs: number): Promise<Error | undefined> {
  const socket = netConnect({ host, port }, () => socket.write("PING\r\n"));
  return await probe(socket, timeoutMs, () =>
    Object.assign(new Error("the server closed the connection without answering PING"), { code: "ECONNRESET" }),
  );
}

async function probe(
  socket: Socket,
  timeoutMs: number,
  onSilentClose: () => Error | undefined,
): Promise<Error | undefined> {
  return await new Promise((resolve) => {
    let settled = false;
    const done = (err: Error | undefined) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(err);
    };
    const timer = setTimeout(() => done(undefined), Math.max(timeoutMs, 1000));
    socket.on("data", () => done(undefined));
    socket.on("error", (err) => {
      if (/ECONNREFUSED|ENOTFOUND|EHOSTUNREACH|EAI_AGAIN/.test(err.message)) done(undefined);
      else if (/ECONNRESET/.test(err.message)) done(onSilentClose() ?? err);
      else done(err);
    });
    socket.on("close", () => done(onSilentClose()));
  });
}

/** How often waiting for Redis at start-up logs that it is still waiting. */
const WAIT_LOG_INTERVAL_MS = 30_000;
/** Cap of the backoff between start-up attempts. */
const WAIT_MAX_DELAY_MS = 5_000;

export interface WaitForRedisOptions {
  log?: StoreLog;
  /**
   * Wait for an unreachable Redis indefinitely (the service: a replicator started before its Redis must come up
   * when Redis does, not crash-loop). Otherwise (the command-line tools) it fails after `maxRetries` attempts.
   */
  untilReachable?: boolean;
  /** Stops waiting: waitForRedis then resolves false. */
  signal?: AbortSignal;
  /** Told about each failed attempt (what /health reports while it waits). */
  onFailure?: (failure: { attempt: number; message: string }) => void;
}

/**
 * At start-up: PING until Redis answers, with capped backoff, then check that every master runs a version we support
 * (server-version.ts). Failures that waiting can heal (unreachable, a cluster or sentinel still forming) are retried —
 * indefinitely with `untilReachable`; ones that it cannot (the password or ACL refused, a failed TLS handshake, a bad
 * database index) fail after `maxRetries` attempts, which leaves room for a password being rotated at the same
 * moment; a server too old fails at once. Failures are logged at once, then at most every 30 s. Throws a
 * {@link RedisStartupError} with one clear line; resolves true once Redis answers, false if `signal` stopped the
 * wait. The client is left as it is on failure; the caller disconnects it (or exits).
 */
export async function waitForRedis(
  client: RedisClient,
  cfg: RedisConfig,
  opts: WaitForRedisOptions = {},
): Promise<boolean> {
  const { log, signal } = opts;
  const attempts = Math.max(1, cfg.maxRetries);
  const perAttemptMs = Math.max(cfg.dialTimeoutMs, 0) + Math.max(cfg.readTimeoutMs, cfg.writeTimeoutMs, 0) + 1000;
  let eventError: unknown;
  // A Cluster keeps a PING queued while it cannot load the slot map; its "error" event ends the attempt early.
  let failAttempt: ((err: unknown) => void) | undefined;
  const onError = (err: unknown) => {
    eventError = err;
  };
  const onClusterError = (err: unknown) => {
    eventError = err;
    failAttempt?.(err);
  };
  const onAbort = () => failAttempt?.(new Error("stopped"));
  client.on("error", isCluster(client) ? onClusterError : onError);
  if (isCluster(client)) client.on("node error", onError);
  signal?.addEventListener("abort", onAbort);
  let lastLog = { message: "", at: Number.NEGATIVE_INFINITY };
  try {
    for (let attempt = 1; ; attempt++) {
      if (signal?.aborted) return false;
      eventError = undefined;
      let commandError: unknown;
      try {
        const failed = new Promise<never>((_, reject) => {
          failAttempt = reject;
        });
        failed.catch(() => {});
        await withTimeout(Promise.race([client.ping(), failed]), perAttemptMs);
        await withTimeout(requireSupportedVersion(client, log), perAttemptMs);
        if (attempt > 1) log?.info({ redis: describeRedis(cfg), attempt }, "Redis answers");
        return true;
      } catch (err) {
        if (err instanceof RedisStartupError) throw err;
        commandError = err;
      }
      if (signal?.aborted) return false;
      let cause = pickCause(commandError, eventError);
      if (
        isGeneric(cause) ||
        /All sentinels are unreachable/.test(errorMessage(cause)) ||
        (cfg.tls && /ECONNRESET|socket hang up/.test(errorMessage(cause)))
      ) {
        cause = (await diagnose(cfg)) ?? cause;
      }
      const c = classify(cause, cfg, attempt);
      opts.onFailure?.({ attempt, message: c.message });
      if (attempt >= attempts && (c.permanent || !opts.untilReachable)) {
        const message = c.permanent && attempt > 1 ? `${c.message} (after ${attempt} attempts)` : c.message;
        throw new RedisStartupError(message, c.kind, cause);
      }
      const reason = errorMessage(cause);
      const now = Date.now();
      if (reason !== lastLog.message || now - lastLog.at >= WAIT_LOG_INTERVAL_MS) {
        lastLog = { message: reason, at: now };
        log?.warn({ redis: describeRedis(cfg), attempt, err: reason }, "Redis not reachable yet; retrying");
      }
      await sleep(backoffDelay(attempt, 200, WAIT_MAX_DELAY_MS), signal);
    }
  } finally {
    client.off("error", isCluster(client) ? onClusterError : onError);
    if (isCluster(client)) client.off("node error", onError);
    signal?.removeEventListener("abort", onAbort);
  }
}

/**
 * Refuses (RedisStartupError) a master older than server-version.ts's minimum. A user whose ACL denies INFO, or a
 * server that reports no version, is let through with a warning: the version cannot be known.
 */
async function requireSupportedVersion(client: RedisClient, log: StoreLog | undefined): Promise<void> {
  let versions: ServerVersion[];
  try {
    versions = await serverVersions(masters(client));
  } catch (err) {
    if (!/^NOPERM\b/.test(errorMessage(err))) throw err;
    log?.warn({ err: errorMessage(err) }, "cannot read the Redis version (INFO is not allowed): not checked");
    return;
  }
  const problem = versionProblem(versions);
  if (problem) throw new RedisStartupError(problem, "rejected");
  for (const v of versions) {
    if (!v.version) log?.warn({ redis: v.server }, "Redis reports no redis_version: cannot check that it is recent");
  }
}

async function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  p.catch(() => {});
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer, timed out after ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
