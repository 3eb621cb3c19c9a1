/**
 * Every setting the replicator reads, with its default and meaning: the one table behind `--help`, the README's
 * settings table (a test keeps them equal; `npm run docs:settings` rewrites the README's copy) and the check for
 * unknown variables (load.ts). Defaults written as `value` are what leaving the variable unset means, and a test
 * checks that setting the variable to that value changes nothing.
 */

export interface SettingDoc {
  /** Variables documented together (one row), e.g. the read and write timeouts. */
  names: readonly string[];
  /** The default as a value of the variable, when there is one (`30s`, `false`). */
  value?: string;
  /** The default in words, or a note on the value (`unlimited`). */
  text?: string;
  /** What it does; Markdown code spans allowed. */
  meaning: string;
}

export interface SettingGroup {
  title: string;
  settings: readonly SettingDoc[];
}

export const SETTING_GROUPS: readonly SettingGroup[] = [
  {
    title: "Schematic",
    settings: [
      {
        names: ["SCHEMATIC_API_KEY"],
        text: "required",
        meaning: "your Schematic API key (or `SCHEMATIC_API_KEY_FILE`: read it from a file)",
      },
      { names: ["SCHEMATIC_API_KEY_FILE"], meaning: "a file holding the API key (trailing line breaks are dropped)" },
      {
        names: ["SCHEMATIC_API_URL"],
        value: "https://api.schematichq.com",
        meaning: "REST base URL (also the source of the datastream URL)",
      },
      {
        names: ["SCHEMATIC_DATASTREAM_URL"],
        text: "derived from the API URL",
        meaning:
          "WebSocket endpoint; an `http(s)` URL is converted (`https://api.x` → `wss://datastream.x/datastream`), a `ws(s)` URL is used as is",
      },
      { names: ["API_TIMEOUT"], value: "30s", meaning: "per REST request" },
      {
        names: ["API_KEY_CHECK_INTERVAL"],
        value: "1m",
        meaning:
          "how often a standby checks that Schematic still accepts its API key (`GET /companies/count`); a standby whose key is rejected stops contending for the writer lease and `/health` answers 503 until the key is accepted again (`0s`: check only at start-up)",
      },
    ],
  },
  {
    title: "Cache",
    settings: [
      {
        names: ["CACHE_TTL"],
        value: "0s",
        text: "unlimited",
        meaning:
          "expiry of every key written; while a writer is live it refreshes expiries every TTL/3, so data outlives its maintainer by at most the TTL; the readiness marker and the replay cursor expire no later than the data, so a replicator started after that loads everything again",
      },
      {
        names: ["CACHE_CLEANUP_INTERVAL"],
        value: "1h",
        meaning: "how often keys of other cache versions are deleted (`0s`: never)",
      },
      {
        names: ["CACHE_VERSION"],
        text: "the bundled rules engine's version key (`4b54a537`)",
        meaning: "the `{ver}` key segment; set it to take over a keyspace written by another replicator version",
      },
    ],
  },
  {
    title: "Service",
    settings: [
      { names: ["LOG_LEVEL"], value: "info", meaning: "`debug`, `info`, `warn`, `error`" },
      { names: ["LOG_FORMAT"], text: "`pretty` on a terminal, else `json`", meaning: "log line format" },
      { names: ["HEALTH_PORT"], value: "8090", meaning: "port of `/health`, `/ready`, `/debug`, `/metrics`" },
      {
        names: ["READY_GRACE_PERIOD"],
        value: "60s",
        meaning:
          "`/ready` stays 200 this long after the datastream drops (the data in Redis is still valid); `0s`: go 503 at once",
      },
      { names: ["SHUTDOWN_TIMEOUT"], value: "30s", meaning: "bound on draining queued changes at SIGTERM" },
    ],
  },
  {
    title: "Pipeline",
    settings: [
      {
        names: ["NUM_WORKERS"],
        text: "CPU cores, clamped to 2–16",
        meaning: "concurrent batch lanes per entity type (companies, users)",
      },
      { names: ["BATCH_SIZE"], value: "5", meaning: "changes per Redis batch" },
      {
        names: ["BATCH_TIMEOUT"],
        value: "10ms",
        meaning: "the longest a batch waits to fill (a batch is sent as soon as the queue is momentarily empty)",
      },
      {
        names: ["COMPANY_CHANNEL_SIZE"],
        value: "200",
        meaning:
          "queue capacity per company lane; when full, the replicator stops reading the socket (TCP backpressure) — nothing is dropped",
      },
      { names: ["USER_CHANNEL_SIZE"], value: "200", meaning: "same for users" },
      { names: ["FLAGS_CHANNEL_SIZE"], value: "50", meaning: "same for the flags lane" },
      {
        names: ["CIRCUIT_BREAKER_THRESHOLD"],
        value: "3",
        meaning: "consecutive Redis failures before the breaker opens (writes then wait and retry; none is discarded)",
      },
      {
        names: ["CIRCUIT_BREAKER_TIMEOUT"],
        value: "15s",
        meaning: "how long the breaker stays open before a trial write",
      },
    ],
  },
  {
    title: "Loading",
    settings: [
      {
        names: ["USE_ASYNC_LOADING"],
        value: "false",
        meaning:
          "`false`: REST pages one at a time, stream changes held during the load and applied after it; `true`: pages concurrently, stream changes applied at once and never overwritten by older REST rows",
      },
      { names: ["ASYNC_LOADER_PAGE_SIZE"], value: "100", meaning: "REST page size" },
      {
        names: ["ASYNC_LOADER_MAX_CONCURRENT_REQUESTS"],
        value: "5",
        meaning: "REST requests in flight (async loading)",
      },
      {
        names: ["ASYNC_LOADER_RATE_LIMIT_RPS"],
        value: "10",
        meaning: "REST requests per second (async loading; `0`: unlimited)",
      },
      {
        names: ["ASYNC_LOADER_CIRCUIT_BREAKER_THRESHOLD"],
        value: "5",
        meaning: "consecutive API failures before the loader's breaker opens",
      },
      { names: ["ASYNC_LOADER_CIRCUIT_BREAKER_TIMEOUT"], value: "30s", meaning: "loader breaker open time" },
    ],
  },
  {
    title: "Datastream",
    settings: [
      { names: ["WS_PING_INTERVAL"], value: "30s", meaning: "datastream keepalive ping period" },
      { names: ["WS_PONG_WAIT"], value: "40s", meaning: "a connection without a pong for this long is replaced" },
      {
        names: ["DATASTREAM_MAX_RECONNECT_DELAY"],
        value: "30s",
        meaning: "cap of the reconnect backoff (reconnects never give up)",
      },
      {
        names: ["DATASTREAM_COMPRESSION"],
        value: "false",
        meaning:
          "offer permessage-deflate to the datastream (the server decides). Off, as the Go original: inflating costs CPU on every message, and CPU per message is what bounds throughput; turn it on where the link to Schematic is slow or metered",
      },
      {
        names: ["REPLAY_DISABLED"],
        value: "false",
        meaning: "`true`: no replay cursor; every reconnect reloads everything",
      },
      {
        names: ["REPLAY_CURSOR_KEY"],
        value: "schematic:datastream:replay_cursor",
        meaning: "where the cursor is persisted (the default follows `REDIS_KEY_PREFIX`)",
      },
      { names: ["REPLAY_FLUSH_INTERVAL"], value: "5s", meaning: "how often the cursor is persisted" },
    ],
  },
  {
    title: "Writer lease and repair",
    settings: [
      {
        names: ["WRITER_LOCK_DISABLED"],
        value: "false",
        meaning: "`true`: no writer lease (only for a single replicator)",
      },
      {
        names: ["WRITER_LOCK_KEY"],
        value: "schematic:datastream:writer_lock",
        meaning: "lease key (the default follows `REDIS_KEY_PREFIX`)",
      },
      {
        names: ["WRITER_LOCK_TTL"],
        value: "15s",
        meaning:
          "lease TTL; renewed every TTL/3, and a writer that cannot renew within TTL/3 stops writing, so TTL/3 must exceed the Redis command timeout (`REDIS_READ_TIMEOUT`, `REDIS_WRITE_TIMEOUT`)",
      },
      {
        names: ["MARKER_CHECK_INTERVAL"],
        value: "5s",
        meaning: "how often the writer checks that Redis still holds its data (on Cluster, every master)",
      },
      {
        names: ["RECONCILE_INTERVAL"],
        value: "6h",
        meaning: "anti-entropy pass: reload over REST, repair what differs, restore expiries (`0s`: off)",
      },
    ],
  },
  {
    title: "Redis",
    settings: [
      {
        names: ["REDIS_URL"],
        meaning: "`redis://[user:password@]host:port[/db]` or `rediss://…` (TLS)",
      },
      { names: ["REDIS_ADDR"], value: "localhost:6379", meaning: "`host:port` (or a URL)" },
      { names: ["REDIS_USERNAME"], meaning: "ACL user" },
      { names: ["REDIS_PASSWORD"], meaning: "password (or `REDIS_PASSWORD_FILE`)" },
      { names: ["REDIS_PASSWORD_FILE"], meaning: "a file holding the password (trailing line breaks are dropped)" },
      { names: ["REDIS_DB"], value: "0", meaning: "database number (single node and Sentinel)" },
      {
        names: ["REDIS_MAX_RETRIES"],
        value: "3",
        meaning:
          "reconnects a command waits through before it fails; at start-up, the attempts before a refused password or TLS handshake is fatal (an unreachable Redis is waited for indefinitely)",
      },
      { names: ["REDIS_DIAL_TIMEOUT"], value: "5s", meaning: "connect timeout" },
      {
        names: ["REDIS_READ_TIMEOUT", "REDIS_WRITE_TIMEOUT"],
        value: "3s",
        meaning: "command timeout (the longer of the two applies to every command)",
      },
      {
        names: ["REDIS_CLUSTER_ADDRS"],
        meaning: "comma-separated seed nodes; selects Cluster mode",
      },
      {
        names: ["REDIS_CLUSTER_MODE"],
        meaning: "accepted for compatibility: `true` requires `REDIS_CLUSTER_ADDRS`, which alone selects Cluster",
      },
      { names: ["REDIS_MAX_REDIRECTS"], value: "8", meaning: "MOVED/ASK redirects per command (Cluster)" },
      {
        names: ["REDIS_ROUTE_BY_LATENCY"],
        value: "false",
        meaning: "accepted for compatibility; the replicator only writes, so it always talks to masters",
      },
      {
        names: ["REDIS_SENTINEL_ADDRS", "REDIS_SENTINEL_MASTER", "REDIS_SENTINEL_PASSWORD"],
        meaning: "Sentinel topology: the sentinels, the master name they monitor, their password (if they require one)",
      },
      {
        names: ["REDIS_TLS"],
        value: "false",
        meaning: "TLS to Redis (also implied by `rediss://` or any `REDIS_TLS_*` setting)",
      },
      {
        names: ["REDIS_TLS_CA_FILE", "REDIS_TLS_CERT_FILE", "REDIS_TLS_KEY_FILE", "REDIS_TLS_SERVER_NAME"],
        meaning: "CA bundle, client certificate and key (PEM files), expected server name",
      },
      {
        names: ["REDIS_KEY_PREFIX"],
        value: "schematic:",
        meaning:
          "prefix of every key (include the trailing `:`); only the TypeScript SDK can follow a change (`redisKeyPrefix`)",
      },
      {
        names: ["REDIS_ENABLE_MAINTENANCE_NOTIFICATIONS"],
        value: "false",
        meaning: "accepted for compatibility with the Go original; no effect (logged)",
      },
    ],
  },
];

/** Every setting name. */
export const SETTING_NAMES: ReadonlySet<string> = new Set(
  SETTING_GROUPS.flatMap((g) => g.settings.flatMap((s) => s.names)),
);

/** Strips Markdown code spans for plain text. */
function plain(s: string): string {
  return s.replace(/`([^`]*)`/g, "$1");
}

function defaultText(s: SettingDoc, code: (v: string) => string): string {
  if (s.value === undefined) return s.text ?? "—";
  return s.text === undefined ? code(s.value) : `${code(s.value)} (${s.text})`;
}

/** The README's settings table (Markdown). */
export function settingsMarkdown(): string {
  const rows = ["| setting | default | meaning |", "| --- | --- | --- |"];
  for (const group of SETTING_GROUPS) {
    rows.push(`| **${group.title}** | | |`);
    for (const s of group.settings) {
      const names = s.names.map((n) => `\`${n}\``).join(", ");
      rows.push(`| ${names} | ${defaultText(s, (v) => `\`${v}\``)} | ${s.meaning} |`);
    }
  }
  return `${rows.join("\n")}\n`;
}

/** The settings for `--help`: one block per setting, meaning wrapped at `width` columns. */
export function settingsHelp(width = 100): string {
  const out: string[] = [];
  for (const group of SETTING_GROUPS) {
    out.push(`  ${group.title}:`);
    for (const s of group.settings) {
      const def = s.value === undefined && s.text === undefined ? "" : plain(defaultText(s, (v) => v));
      const bracket = def === "" ? "" : def === "required" ? "  [required]" : `  [default: ${def}]`;
      out.push(`    ${s.names.join(", ")}${bracket}`);
      out.push(...wrap(plain(s.meaning), width - 8).map((line) => `        ${line}`));
    }
  }
  return `${out.join("\n")}\n`;
}

function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(/\s+/)) {
    if (line !== "" && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line === "" ? word : `${line} ${word}`;
    }
  }
  if (line !== "") lines.push(line);
  return lines;
}
