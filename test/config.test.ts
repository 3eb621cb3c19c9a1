import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import {
  type Config,
  ConfigError,
  deriveDatastreamUrl,
  describeConfig,
  type LoadConfigOptions,
  loadConfig,
  logFormatOf,
  parseGoDuration,
  SETTING_GROUPS,
} from "../src/config/index.js";

const KEY = "sch_dev_SECRETKEY123";
const PASSWORD = "p@ss:w0rd/secret";

function load(extra: Record<string, string | undefined> = {}, opts: LoadConfigOptions = {}): Config {
  return loadConfig({ SCHEMATIC_API_KEY: KEY, ...extra }, { cpuCount: 4, ...opts });
}

/** Asserts that loading fails with exactly `message` (a string) or a message matching it (a RegExp). */
function fails(
  env: Record<string, string | undefined>,
  message: string | RegExp,
  opts: LoadConfigOptions = {},
): string {
  let caught: unknown;
  try {
    loadConfig({ SCHEMATIC_API_KEY: KEY, ...env }, { cpuCount: 4, ...opts });
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof ConfigError, `expected a ConfigError, got ${String(caught)}`);
  const msg = caught.message;
  assert.ok(!msg.includes("\n"), `message must be one line: ${msg}`);
  assert.ok(!msg.includes(KEY), `API key leaked: ${msg}`);
  assert.ok(!msg.includes(PASSWORD), `password leaked: ${msg}`);
  assert.ok(!msg.includes(encodeURIComponent(PASSWORD)), `password leaked: ${msg}`);
  if (typeof message === "string") assert.equal(msg, message);
  else assert.match(msg, message);
  return msg;
}

const tmp = mkdtempSync(join(tmpdir(), "config-test-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
function tmpFile(name: string, content: string): string {
  const path = join(tmp, name);
  writeFileSync(path, content);
  return path;
}

const DUR = "Go syntax such as 300ms, 45s, 1h30m";

describe("parseGoDuration", () => {
  const valid: [string, number][] = [
    ["0", 0],
    ["-0", 0],
    ["+0", 0],
    ["0s", 0],
    ["300ms", 300],
    ["45s", 45_000],
    ["1.5h", 5_400_000],
    ["2h45m", 9_900_000],
    ["1m30.5s", 90_500],
    ["1h30m", 5_400_000],
    [".5s", 500],
    ["1.s", 1000],
    ["1.1s", 1100],
    ["1500us", 1.5],
    ["1500µs", 1.5],
    ["1500μs", 1.5],
    ["2000000ns", 2],
    ["1ns", 0.000001],
    ["-1.5s", -1500],
    ["+5s", 5000],
    ["1h1m1s1ms1us1ns", 3_661_001.001001],
    ["0.1h", 360_000],
    ["2562047h", 2562047 * 3_600_000],
  ];
  for (const [input, ms] of valid) {
    test(`${JSON.stringify(input)} → ${ms} ms`, () => assert.equal(parseGoDuration(input), ms));
  }
  const invalid = [
    "",
    "5",
    "1.5",
    "-",
    ".",
    ".s",
    "s",
    "fast",
    "5 s",
    " 5s",
    "5S",
    "5sec",
    "1d",
    "1h-5m",
    "1e3s",
    "3000000h",
  ];
  for (const input of invalid) {
    test(`${JSON.stringify(input)} is invalid`, () => assert.throws(() => parseGoDuration(input)));
  }
});

describe("deriveDatastreamUrl", () => {
  const cases: [string, string][] = [
    ["https://api.schematichq.com", "wss://datastream.schematichq.com/datastream"],
    ["https://api.schematichq.com/", "wss://datastream.schematichq.com/datastream"],
    ["http://localhost:8080", "ws://localhost:8080/datastream"],
    ["http://api.localhost:8080/x?y=1", "ws://datastream.localhost:8080/datastream?y=1"],
    ["http://api:8080", "ws://api:8080/datastream"],
    ["https://custom.example.com/v1/", "wss://custom.example.com/datastream"],
    ["https://apis.example.com", "wss://apis.example.com/datastream"],
    ["http://127.0.0.1:9000/a/b", "ws://127.0.0.1:9000/datastream"],
    ["http://[::1]:8080", "ws://[::1]:8080/datastream"],
    ["https://api.example.com:8443/x#frag", "wss://datastream.example.com:8443/datastream"],
    ["ws://127.0.0.1:9000/anything", "ws://127.0.0.1:9000/anything"],
    ["wss://api.example.com/custom?q=1", "wss://api.example.com/custom?q=1"],
  ];
  for (const [input, out] of cases) {
    test(`${input} → ${out}`, () => assert.equal(deriveDatastreamUrl(input), out));
  }
  for (const input of ["ftp://api.example.com", "not a url", "localhost:8080", "ws://host/x#frag"]) {
    test(`${input} is an error`, () => assert.throws(() => deriveDatastreamUrl(input)));
  }
});

describe("defaults", () => {
  test("every setting has its documented default", () => {
    const c = load();
    assert.deepEqual(c, {
      apiKey: KEY,
      apiUrl: "https://api.schematichq.com",
      datastreamUrl: "wss://datastream.schematichq.com/datastream",
      datastreamUrlExplicit: false,
      apiTimeoutMs: 30_000,
      apiKeyCheckIntervalMs: 60_000,
      cacheTtlMs: 0,
      cacheCleanupIntervalMs: 3_600_000,
      logLevel: "info",
      logFormat: "json",
      healthPort: 8090,
      wsPingIntervalMs: 30_000,
      wsPongWaitMs: 40_000,
      datastreamMaxReconnectDelayMs: 30_000,
      datastreamCompression: false,
      numWorkers: 4,
      batchSize: 5,
      batchTimeoutMs: 10,
      companyChannelSize: 200,
      userChannelSize: 200,
      flagsChannelSize: 50,
      circuitBreakerThreshold: 3,
      circuitBreakerTimeoutMs: 15_000,
      useAsyncLoading: false,
      loader: {
        pageSize: 100,
        circuitBreakerThreshold: 5,
        circuitBreakerTimeoutMs: 30_000,
        maxConcurrentRequests: 5,
        rateLimitRps: 10,
      },
      redis: {
        topology: { kind: "single", host: "localhost", port: 6379, db: 0 },
        maxRetries: 3,
        dialTimeoutMs: 5_000,
        readTimeoutMs: 3_000,
        writeTimeoutMs: 3_000,
        maxRedirects: 8,
        routeByLatency: false,
        keyPrefix: "schematic:",
      },
      writerLock: { disabled: false, key: "schematic:datastream:writer_lock", ttlMs: 15_000 },
      replay: { disabled: false, cursorKey: "schematic:datastream:replay_cursor", flushIntervalMs: 5_000 },
      readyGracePeriodMs: 60_000,
      reconcileIntervalMs: 6 * 3_600_000,
      shutdownTimeoutMs: 30_000,
      markerCheckIntervalMs: 5_000,
      warnings: [],
      secrets: [KEY],
    });
    assert.equal(c.cacheVersion, undefined);
  });

  test("LOG_FORMAT defaults to pretty on a terminal", () => {
    assert.equal(load({}, { isTTY: true }).logFormat, "pretty");
    assert.equal(load({}, { isTTY: false }).logFormat, "json");
  });

  test("NUM_WORKERS defaults to the CPU count clamped to [2, 16]", () => {
    assert.equal(load({}, { cpuCount: 1 }).numWorkers, 2);
    assert.equal(load({}, { cpuCount: 7 }).numWorkers, 7);
    assert.equal(load({}, { cpuCount: 64 }).numWorkers, 16);
    assert.ok(loadConfig({ SCHEMATIC_API_KEY: KEY }).numWorkers >= 2);
  });

  test("empty or blank variables take their defaults", () => {
    const c = load({ BATCH_SIZE: "", CACHE_TTL: "  ", REDIS_ADDR: "", LOG_LEVEL: "", REDIS_PASSWORD: "" });
    assert.equal(c.batchSize, 5);
    assert.equal(c.cacheTtlMs, 0);
    assert.equal(c.logLevel, "info");
    assert.deepEqual(c.redis.topology, { kind: "single", host: "localhost", port: 6379, db: 0 });
    assert.equal(c.redis.password, undefined);
  });
});

describe("API key", () => {
  test("missing", () => {
    fails(
      { SCHEMATIC_API_KEY: undefined },
      "SCHEMATIC_API_KEY is not set: export SCHEMATIC_API_KEY=<your Schematic API key> (or SCHEMATIC_API_KEY_FILE=/path/to/file)",
    );
    fails({ SCHEMATIC_API_KEY: "" }, /^SCHEMATIC_API_KEY is empty: export SCHEMATIC_API_KEY=/);
  });
  test("trimmed", () => assert.equal(load({ SCHEMATIC_API_KEY: ` ${KEY}\n` }).apiKey, KEY));
  test("whitespace inside is rejected without showing the key", () => {
    fails(
      { SCHEMATIC_API_KEY: `${KEY} x` },
      "SCHEMATIC_API_KEY=(hidden) contains whitespace or non-printable characters (expected the key exactly as shown in Schematic)",
    );
  });
  test("from a file, trailing newline dropped", () => {
    const path = tmpFile("key", `${KEY}\n`);
    assert.equal(load({ SCHEMATIC_API_KEY: undefined, SCHEMATIC_API_KEY_FILE: path }).apiKey, KEY);
    const crlf = tmpFile("key-crlf", `${KEY}\r\n`);
    assert.equal(load({ SCHEMATIC_API_KEY: undefined, SCHEMATIC_API_KEY_FILE: crlf }).apiKey, KEY);
  });
  test("unreadable or empty file", () => {
    const missing = join(tmp, "nope");
    fails(
      { SCHEMATIC_API_KEY: undefined, SCHEMATIC_API_KEY_FILE: missing },
      `SCHEMATIC_API_KEY_FILE=${JSON.stringify(missing)} cannot be read: ENOENT (expected a readable file holding the Schematic API key)`,
    );
    fails({ SCHEMATIC_API_KEY: undefined, SCHEMATIC_API_KEY_FILE: tmp }, /cannot be read: EISDIR/);
    const empty = tmpFile("empty-key", "\n");
    fails({ SCHEMATIC_API_KEY: undefined, SCHEMATIC_API_KEY_FILE: empty }, /is an empty file/);
    const spaced = tmpFile("spaced-key", `${KEY} extra\n`);
    fails(
      { SCHEMATIC_API_KEY: undefined, SCHEMATIC_API_KEY_FILE: spaced },
      /^SCHEMATIC_API_KEY_FILE="[^"]+" holds a key that contains whitespace/,
    );
  });
  test("custom readFile", () => {
    const c = load(
      { SCHEMATIC_API_KEY: undefined, SCHEMATIC_API_KEY_FILE: "/virtual" },
      { readFile: (p) => (p === "/virtual" ? "from-virtual\n" : "") },
    );
    assert.equal(c.apiKey, "from-virtual");
  });
  test("both the key and the file", () => {
    fails(
      { SCHEMATIC_API_KEY_FILE: "/x" },
      "SCHEMATIC_API_KEY=(hidden) and SCHEMATIC_API_KEY_FILE are both set (expected only one of them)",
    );
  });
});

describe("URLs", () => {
  test("SCHEMATIC_API_URL normalised, datastream derived", () => {
    const c = load({ SCHEMATIC_API_URL: "http://127.0.0.1:8080/" });
    assert.equal(c.apiUrl, "http://127.0.0.1:8080");
    assert.equal(c.datastreamUrl, "ws://127.0.0.1:8080/datastream");
    assert.equal(c.datastreamUrlExplicit, false);
    const d = load({ SCHEMATIC_API_URL: "https://API.Example.com/base/" });
    assert.equal(d.apiUrl, "https://api.example.com/base");
    assert.equal(d.datastreamUrl, "wss://datastream.example.com/datastream");
  });
  test("SCHEMATIC_API_URL invalid", () => {
    const exp = "(expected an http:// or https:// URL such as https://api.schematichq.com)";
    fails({ SCHEMATIC_API_URL: "ftp://x" }, `SCHEMATIC_API_URL="ftp://x" is not an http(s) URL ${exp}`);
    fails({ SCHEMATIC_API_URL: "api.schematichq.com" }, /^SCHEMATIC_API_URL="api.schematichq.com" is not/);
    fails({ SCHEMATIC_API_URL: "nope nope" }, `SCHEMATIC_API_URL="nope nope" is not a URL ${exp}`);
    fails({ SCHEMATIC_API_URL: "http://h/?a=1" }, /has query parameters or a fragment/);
    fails(
      { SCHEMATIC_API_URL: `http://u:${PASSWORD}@h/` },
      /^SCHEMATIC_API_URL="http:\/\/u:\(hidden\)@h\/" is not a URL/,
    );
    fails(
      { SCHEMATIC_API_URL: `http://u:${encodeURIComponent(PASSWORD)}@h/` },
      /^SCHEMATIC_API_URL="http:\/\/u:\(hidden\)@h\/" contains credentials/,
    );
  });
  test("SCHEMATIC_DATASTREAM_URL explicit", () => {
    const c = load({ SCHEMATIC_DATASTREAM_URL: "ws://127.0.0.1:9000/anything" });
    assert.equal(c.datastreamUrl, "ws://127.0.0.1:9000/anything");
    assert.equal(c.datastreamUrlExplicit, true);
    assert.equal(
      load({ SCHEMATIC_DATASTREAM_URL: "http://api.localhost:8080/x?y=1" }).datastreamUrl,
      "ws://datastream.localhost:8080/datastream?y=1",
    );
    fails(
      { SCHEMATIC_DATASTREAM_URL: "ftp://x" },
      'SCHEMATIC_DATASTREAM_URL="ftp://x" has unsupported scheme "ftp" (expected ws://, wss://, or an http(s):// URL to derive it from)',
    );
  });
});

describe("durations", () => {
  const positive: [string, (c: Config) => number][] = [
    ["API_TIMEOUT", (c) => c.apiTimeoutMs],
    ["WS_PONG_WAIT", (c) => c.wsPongWaitMs],
    ["DATASTREAM_MAX_RECONNECT_DELAY", (c) => c.datastreamMaxReconnectDelayMs],
    ["BATCH_TIMEOUT", (c) => c.batchTimeoutMs],
    ["CIRCUIT_BREAKER_TIMEOUT", (c) => c.circuitBreakerTimeoutMs],
    ["ASYNC_LOADER_CIRCUIT_BREAKER_TIMEOUT", (c) => c.loader.circuitBreakerTimeoutMs],
    ["REDIS_DIAL_TIMEOUT", (c) => c.redis.dialTimeoutMs],
    ["REDIS_READ_TIMEOUT", (c) => c.redis.readTimeoutMs],
    ["REDIS_WRITE_TIMEOUT", (c) => c.redis.writeTimeoutMs],
    ["WRITER_LOCK_TTL", (c) => c.writerLock.ttlMs],
    ["REPLAY_FLUSH_INTERVAL", (c) => c.replay.flushIntervalMs],
    ["SHUTDOWN_TIMEOUT", (c) => c.shutdownTimeoutMs],
    ["MARKER_CHECK_INTERVAL", (c) => c.markerCheckIntervalMs],
  ];
  for (const [name, get] of positive) {
    test(`${name}: positive only`, () => {
      // A long lease, so that long Redis timeouts fit in a third of it.
      const other = (value: string) => ({
        WS_PONG_WAIT: name === "WS_PONG_WAIT" ? value : "10m",
        ...(name === "WRITER_LOCK_TTL" ? {} : { WRITER_LOCK_TTL: "10h" }),
      });
      assert.equal(get(load({ [name]: "1m30.5s", ...other("1m30.5s") })), 90_500);
      assert.equal(get(load({ [name]: " 45s ", ...other("45s") })), 45_000);
      const exp = `(expected a positive duration in ${DUR})`;
      fails({ [name]: "fast" }, `${name}="fast" is not a duration ${exp}`);
      fails({ [name]: "0" }, `${name}="0" is zero ${exp}`);
      fails({ [name]: "0s" }, `${name}="0s" is zero ${exp}`);
      fails({ [name]: "-5s" }, `${name}="-5s" is negative ${exp}`);
      fails({ [name]: "5" }, `${name}="5" is not a duration: a unit is required ${exp}`);
      fails({ [name]: "1000h" }, /is too long \(expected at most 596h31m23s/);
    });
  }
  const zeroOk: [string, string, (c: Config) => number][] = [
    ["CACHE_TTL", "unlimited", (c) => c.cacheTtlMs],
    ["CACHE_CLEANUP_INTERVAL", "disabled", (c) => c.cacheCleanupIntervalMs],
    ["RECONCILE_INTERVAL", "disabled", (c) => c.reconcileIntervalMs],
    ["READY_GRACE_PERIOD", "503 as soon as the datastream drops", (c) => c.readyGracePeriodMs],
    ["API_KEY_CHECK_INTERVAL", "checking only at start-up", (c) => c.apiKeyCheckIntervalMs],
  ];
  for (const [name, zeroMeans, get] of zeroOk) {
    test(`${name}: 0 allowed`, () => {
      assert.equal(get(load({ [name]: "0" })), 0);
      assert.equal(get(load({ [name]: "0s" })), 0);
      assert.equal(get(load({ [name]: "1h30m" })), 5_400_000);
      const exp = `(expected ${DUR}, or 0s for ${zeroMeans})`;
      fails({ [name]: "-1s" }, `${name}="-1s" is negative ${exp}`);
      fails({ [name]: "soon" }, `${name}="soon" is not a duration ${exp}`);
    });
  }
  test("the brief's example message", () => {
    fails(
      { BATCH_TIMEOUT: "fast" },
      'BATCH_TIMEOUT="fast" is not a duration (expected a positive duration in Go syntax such as 300ms, 45s, 1h30m)',
    );
  });
  test("sub-millisecond values round up to whole milliseconds", () => {
    assert.equal(load({ BATCH_TIMEOUT: "500us" }).batchTimeoutMs, 1);
    assert.equal(load({ CACHE_TTL: "1500us" }).cacheTtlMs, 2);
  });
  test("CACHE_TTL is not capped at the timer limit", () => {
    assert.equal(load({ CACHE_TTL: "8760h" }).cacheTtlMs, 8760 * 3_600_000);
    fails({ CACHE_TTL: "9999999h" }, /^CACHE_TTL="9999999h" is out of range/);
  });
  test("WS_PONG_WAIT must exceed WS_PING_INTERVAL", () => {
    assert.equal(load({ WS_PING_INTERVAL: "15s", WS_PONG_WAIT: "25s" }).wsPingIntervalMs, 15_000);
    fails(
      { WS_PONG_WAIT: "20s" },
      'WS_PONG_WAIT="20s" is not longer than WS_PING_INTERVAL (30s) (expected a pong wait above the ping interval, such as 40s with 30s)',
    );
    fails({ WS_PING_INTERVAL: "1m" }, /^WS_PING_INTERVAL="1m" is not shorter than WS_PONG_WAIT \(40s, the default\)/);
    fails({ WS_PING_INTERVAL: "0s" }, /^WS_PING_INTERVAL="0s" is zero/);
  });
});

describe("integers", () => {
  const counts: [string, number, (c: Config) => number][] = [
    ["NUM_WORKERS", 4, (c) => c.numWorkers],
    ["BATCH_SIZE", 5, (c) => c.batchSize],
    ["COMPANY_CHANNEL_SIZE", 200, (c) => c.companyChannelSize],
    ["USER_CHANNEL_SIZE", 200, (c) => c.userChannelSize],
    ["FLAGS_CHANNEL_SIZE", 50, (c) => c.flagsChannelSize],
    ["CIRCUIT_BREAKER_THRESHOLD", 3, (c) => c.circuitBreakerThreshold],
    ["ASYNC_LOADER_CIRCUIT_BREAKER_THRESHOLD", 5, (c) => c.loader.circuitBreakerThreshold],
    ["ASYNC_LOADER_MAX_CONCURRENT_REQUESTS", 5, (c) => c.loader.maxConcurrentRequests],
    ["REDIS_MAX_RETRIES", 3, (c) => c.redis.maxRetries],
    ["REDIS_MAX_REDIRECTS", 8, (c) => c.redis.maxRedirects],
  ];
  for (const [name, example, get] of counts) {
    test(`${name}: positive integer`, () => {
      assert.equal(get(load({ [name]: "7" })), 7);
      assert.equal(get(load({ [name]: " 12 " })), 12);
      const exp = `(expected an integer ≥ 1 such as ${example})`;
      fails({ [name]: "0" }, `${name}="0" is out of range ${exp}`);
      fails({ [name]: "-3" }, `${name}="-3" is out of range ${exp}`);
      fails({ [name]: "2.5" }, `${name}="2.5" is not an integer ${exp}`);
      fails({ [name]: "lots" }, `${name}="lots" is not an integer ${exp}`);
      fails({ [name]: "1e3" }, `${name}="1e3" is not an integer ${exp}`);
      fails({ [name]: "99999999999999999999" }, `${name}="99999999999999999999" is out of range ${exp}`);
    });
  }
  test("HEALTH_PORT: 1-65535", () => {
    assert.equal(load({ HEALTH_PORT: "1" }).healthPort, 1);
    assert.equal(load({ HEALTH_PORT: "65535" }).healthPort, 65535);
    const exp = "(expected an integer from 1 to 65535 such as 8090)";
    fails({ HEALTH_PORT: "0" }, `HEALTH_PORT="0" is out of range ${exp}`);
    fails({ HEALTH_PORT: "65536" }, `HEALTH_PORT="65536" is out of range ${exp}`);
    fails({ HEALTH_PORT: "http" }, `HEALTH_PORT="http" is not an integer ${exp}`);
  });
  test("ASYNC_LOADER_PAGE_SIZE: 2 or more (successive pages overlap)", () => {
    assert.equal(load({ ASYNC_LOADER_PAGE_SIZE: "2" }).loader.pageSize, 2);
    assert.equal(load({ ASYNC_LOADER_PAGE_SIZE: "500" }).loader.pageSize, 500);
    fails(
      { ASYNC_LOADER_PAGE_SIZE: "1" },
      'ASYNC_LOADER_PAGE_SIZE="1" is out of range (expected an integer ≥ 2 such as 100)',
    );
  });
  test("REDIS_DB: ≥ 0", () => {
    assert.equal(load({ REDIS_DB: "0" }).redis.topology.kind, "single");
    assert.deepEqual(load({ REDIS_DB: "3" }).redis.topology, { kind: "single", host: "localhost", port: 6379, db: 3 });
    fails({ REDIS_DB: "-1" }, 'REDIS_DB="-1" is out of range (expected an integer ≥ 0 such as 0)');
    fails({ REDIS_DB: "one" }, 'REDIS_DB="one" is not an integer (expected an integer ≥ 0 such as 0)');
  });
  test("ASYNC_LOADER_RATE_LIMIT_RPS: 0 means unlimited", () => {
    assert.equal(load({ ASYNC_LOADER_RATE_LIMIT_RPS: "0" }).loader.rateLimitRps, 0);
    assert.equal(load({ ASYNC_LOADER_RATE_LIMIT_RPS: "25" }).loader.rateLimitRps, 25);
    fails(
      { ASYNC_LOADER_RATE_LIMIT_RPS: "-1" },
      'ASYNC_LOADER_RATE_LIMIT_RPS="-1" is out of range (expected an integer ≥ 0 such as 10, or 0 for unlimited)',
    );
  });
});

describe("booleans", () => {
  const bools: [string, (c: Config) => boolean][] = [
    ["USE_ASYNC_LOADING", (c) => c.useAsyncLoading],
    ["REDIS_ROUTE_BY_LATENCY", (c) => c.redis.routeByLatency],
    ["DATASTREAM_COMPRESSION", (c) => c.datastreamCompression],
    ["WRITER_LOCK_DISABLED", (c) => c.writerLock.disabled],
    ["REPLAY_DISABLED", (c) => c.replay.disabled],
  ];
  for (const [name, get] of bools) {
    test(name, () => {
      for (const v of ["true", "TRUE", "True", "1", "yes", "YES"]) assert.equal(get(load({ [name]: v })), true, v);
      for (const v of ["false", "FALSE", "0", "no", "No"]) assert.equal(get(load({ [name]: v })), false, v);
      for (const v of ["on", "off", "y", "2", "truthy"]) {
        fails({ [name]: v }, `${name}=${JSON.stringify(v)} is not a boolean (expected true, false, 1, 0, yes or no)`);
      }
    });
  }
  test("REDIS_ENABLE_MAINTENANCE_NOTIFICATIONS: validated, no effect, listed in warnings", () => {
    assert.deepEqual(load({ REDIS_ENABLE_MAINTENANCE_NOTIFICATIONS: "false" }).warnings, []);
    const c = load({ REDIS_ENABLE_MAINTENANCE_NOTIFICATIONS: "true" });
    assert.equal(c.warnings.length, 1);
    assert.match(c.warnings[0] as string, /^REDIS_ENABLE_MAINTENANCE_NOTIFICATIONS .*has no effect/);
    fails({ REDIS_ENABLE_MAINTENANCE_NOTIFICATIONS: "maybe" }, /is not a boolean/);
  });
  test("REDIS_TLS", () => {
    assert.deepEqual(load({ REDIS_TLS: "true" }).redis.tls, {});
    assert.equal(load({ REDIS_TLS: "no" }).redis.tls, undefined);
    fails({ REDIS_TLS: "on" }, /^REDIS_TLS="on" is not a boolean/);
  });
});

describe("enums", () => {
  test("LOG_LEVEL any case", () => {
    for (const v of ["debug", "info", "warn", "error"]) {
      assert.equal(load({ LOG_LEVEL: v }).logLevel, v);
      assert.equal(load({ LOG_LEVEL: v.toUpperCase() }).logLevel, v);
    }
    fails(
      { LOG_LEVEL: "verbose" },
      'LOG_LEVEL="verbose" is not a log level (expected debug, info, warn or error, any case)',
    );
    fails({ LOG_LEVEL: "warning" }, /^LOG_LEVEL="warning" is not a log level/);
  });
  test("LOG_FORMAT explicit", () => {
    assert.equal(load({ LOG_FORMAT: "json" }, { isTTY: true }).logFormat, "json");
    assert.equal(load({ LOG_FORMAT: "PRETTY" }).logFormat, "pretty");
    fails({ LOG_FORMAT: "text" }, 'LOG_FORMAT="text" is not a log format (expected json or pretty, any case)');
  });
});

describe("keys and versions", () => {
  test("REDIS_KEY_PREFIX replaces schematic: in the default lock and cursor keys", () => {
    const c = load({ REDIS_KEY_PREFIX: "acme:" });
    assert.equal(c.redis.keyPrefix, "acme:");
    assert.equal(c.writerLock.key, "acme:datastream:writer_lock");
    assert.equal(c.replay.cursorKey, "acme:datastream:replay_cursor");
    assert.equal(load({ REDIS_KEY_PREFIX: "acme" }).redis.keyPrefix, "acme");
  });
  test("REDIS_KEY_PREFIX: set means non-empty, no whitespace", () => {
    fails({ REDIS_KEY_PREFIX: "" }, 'REDIS_KEY_PREFIX="" is empty (expected a non-empty prefix such as schematic:)');
    fails(
      { REDIS_KEY_PREFIX: "my app:" },
      'REDIS_KEY_PREFIX="my app:" contains whitespace (expected a non-empty prefix such as schematic:)',
    );
  });
  test("WRITER_LOCK_KEY / REPLAY_CURSOR_KEY explicit are verbatim", () => {
    const c = load({ REDIS_KEY_PREFIX: "acme:", WRITER_LOCK_KEY: "lock", REPLAY_CURSOR_KEY: "x:cursor" });
    assert.equal(c.writerLock.key, "lock");
    assert.equal(c.replay.cursorKey, "x:cursor");
    fails({ WRITER_LOCK_KEY: "a b" }, /^WRITER_LOCK_KEY="a b" contains whitespace/);
  });
  test("CACHE_VERSION", () => {
    assert.equal(load({ CACHE_VERSION: "4b54a537" }).cacheVersion, "4b54a537");
    fails({ CACHE_VERSION: "" }, 'CACHE_VERSION="" is empty (expected a key segment such as 4b54a537)');
    fails({ CACHE_VERSION: "a:b" }, /^CACHE_VERSION="a:b" contains ':'/);
    fails({ CACHE_VERSION: "a b" }, /^CACHE_VERSION="a b" contains whitespace/);
    fails({ CACHE_VERSION: "v*" }, /^CACHE_VERSION="v\*" contains ':' or a glob character/);
  });
  test("settings without effect are listed in warnings", () => {
    const c = load({
      WRITER_LOCK_DISABLED: "true",
      WRITER_LOCK_TTL: "5s",
      REPLAY_DISABLED: "1",
      REPLAY_CURSOR_KEY: "k",
    });
    assert.deepEqual(c.warnings, [
      "WRITER_LOCK_TTL has no effect with WRITER_LOCK_DISABLED=true",
      "REPLAY_CURSOR_KEY has no effect with REPLAY_DISABLED=true",
    ]);
    assert.match(load({ REDIS_ROUTE_BY_LATENCY: "true" }).warnings.join("|"), /applies only to Redis Cluster/);
    assert.match(load({ ASYNC_LOADER_MAX_CONCURRENT_REQUESTS: "3" }).warnings.join("|"), /USE_ASYNC_LOADING=true/);
    assert.deepEqual(load({ USE_ASYNC_LOADING: "true", ASYNC_LOADER_MAX_CONCURRENT_REQUESTS: "3" }).warnings, []);
  });
});

describe("variables that are not settings", () => {
  test("a name one or two typing mistakes from a setting's stops start-up, naming the setting", () => {
    fails(
      { REDIS_PASWORD: PASSWORD },
      "REDIS_PASWORD is not a setting (expected REDIS_PASSWORD: rename the variable, or unset it)",
    );
    fails({ WRITER_LOCK_TLL: "5s" }, /^WRITER_LOCK_TLL is not a setting \(expected WRITER_LOCK_TTL:/);
    fails({ SCHEMATIC_APIKEY: KEY }, /^SCHEMATIC_APIKEY is not a setting \(expected SCHEMATIC_API_KEY:/);
    fails({ LOG_LEVLE: "debug" }, /^LOG_LEVLE is not a setting \(expected LOG_LEVEL:/);
    fails({ REDIS_DC: "1" }, /^REDIS_DC is not a setting \(expected REDIS_DB:/);
    fails(
      { redis_addr: "h:1" },
      "redis_addr is not a setting (expected REDIS_ADDR: names are case-sensitive; rename the variable, or unset it)",
    );
  });

  test("other names with our prefixes are a warning naming the closest setting", () => {
    const c = load({
      REDIS_ADRESS: "h:1",
      REDIS_HOST: "h",
      REDIS_TLS_URL: "rediss://h",
      SCHEMATIC_FOO: "x",
      HOSTNAME: "pod-1",
    });
    assert.deepEqual(c.warnings, [
      "REDIS_ADRESS is not a setting of this replicator and is ignored (did you mean REDIS_ADDR?)",
      "REDIS_HOST is not a setting of this replicator and is ignored (did you mean REDIS_ADDR?)",
      "REDIS_TLS_URL is not a setting of this replicator and is ignored (did you mean REDIS_URL?)",
      "SCHEMATIC_FOO is not a setting of this replicator and is ignored",
    ]);
  });

  test("Kubernetes service links are skipped", () => {
    const c = load({
      REDIS_PORT: "tcp://10.0.0.1:6379",
      REDIS_SERVICE_HOST: "10.0.0.1",
      REDIS_SERVICE_PORT: "6379",
      REDIS_SERVICE_PORT_REDIS: "6379",
      REDIS_PORT_6379_TCP: "tcp://10.0.0.1:6379",
      REDIS_PORT_6379_TCP_PROTO: "tcp",
      REDIS_PORT_6379_TCP_PORT: "6379",
      REDIS_PORT_6379_TCP_ADDR: "10.0.0.1",
    });
    assert.deepEqual(c.warnings, []);
    // REDIS_PORT set by hand (not a service link) is reported.
    assert.match(load({ REDIS_PORT: "6380" }).warnings.join("|"), /^REDIS_PORT is not a setting/);
  });
});

describe("the lease must be renewable within a third of its TTL", () => {
  test("WRITER_LOCK_TTL not above three times the command timeout is rejected", () => {
    fails(
      { WRITER_LOCK_TTL: "9s" },
      'WRITER_LOCK_TTL="9s" leaves a renewal 3s, not more than the Redis command timeout (3s, REDIS_READ_TIMEOUT) (expected a TTL above three times the command timeout, such as 10s, or shorter REDIS_READ_TIMEOUT/REDIS_WRITE_TIMEOUT)',
    );
    fails({ WRITER_LOCK_TTL: "2s", REDIS_READ_TIMEOUT: "500ms", REDIS_WRITE_TIMEOUT: "1s" }, /REDIS_WRITE_TIMEOUT\)/);
    assert.equal(load({ WRITER_LOCK_TTL: "10s" }).writerLock.ttlMs, 10_000);
    assert.equal(
      load({ WRITER_LOCK_TTL: "2s", REDIS_READ_TIMEOUT: "500ms", REDIS_WRITE_TIMEOUT: "500ms" }).writerLock.ttlMs,
      2_000,
    );
  });
  test("a command timeout too long for the default TTL blames the timeout", () => {
    fails(
      { REDIS_READ_TIMEOUT: "5s" },
      'REDIS_READ_TIMEOUT="5s" is not below a third of WRITER_LOCK_TTL (15s, the default), the time a lease renewal has (expected a command timeout below 5s, or WRITER_LOCK_TTL above 15s)',
    );
  });
  test("without the lease, any TTL goes", () => {
    assert.equal(load({ WRITER_LOCK_DISABLED: "true", REDIS_READ_TIMEOUT: "1m" }).redis.readTimeoutMs, 60_000);
  });
});

describe("the settings table", () => {
  test("a documented default, set explicitly, is the same as leaving the variable unset", () => {
    const base = load();
    for (const group of SETTING_GROUPS) {
      for (const s of group.settings) {
        if (s.value === undefined) continue;
        for (const name of s.names) {
          const c = load({ [name]: s.value });
          assert.deepEqual({ ...c, warnings: [] }, { ...base, warnings: [] }, `${name}=${s.value}`);
        }
      }
    }
  });
  test("ConfigError names the variable", () => {
    try {
      load({ BATCH_SIZE: "x" });
      assert.fail("expected a ConfigError");
    } catch (err) {
      assert.equal((err as ConfigError).variable, "BATCH_SIZE");
    }
  });
});

describe("secrets", () => {
  test("the API key, every password and the TLS client key are listed for masking", () => {
    const key = tmpFile("s-key.pem", "-----BEGIN PRIVATE KEY-----\nSECRETKEYPEM\n-----END PRIVATE KEY-----\n");
    const cert = tmpFile("s-cert.pem", "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n");
    const c = load({
      REDIS_URL: `redis://u:${encodeURIComponent("url-pass/1")}@h:1`,
      REDIS_PASSWORD: PASSWORD,
      REDIS_TLS_CERT_FILE: cert,
      REDIS_TLS_KEY_FILE: key,
    });
    assert.deepEqual(c.secrets, [KEY, PASSWORD, "url-pass%2F1", "url-pass/1", c.redis.tls?.key]);
    const sentinel = load({
      REDIS_SENTINEL_ADDRS: "s1",
      REDIS_SENTINEL_MASTER: "m",
      REDIS_SENTINEL_PASSWORD: "s-pass",
    });
    assert.deepEqual(sentinel.secrets, [KEY, "s-pass"]);
  });
});

describe("logFormatOf (for errors printed before the settings are valid)", () => {
  test("LOG_FORMAT when valid, else the terminal default", () => {
    assert.equal(logFormatOf({ LOG_FORMAT: "JSON" }, true), "json");
    assert.equal(logFormatOf({ LOG_FORMAT: "pretty" }, false), "pretty");
    assert.equal(logFormatOf({ LOG_FORMAT: "xml" }, false), "json");
    assert.equal(logFormatOf({}, true), "pretty");
  });
});

describe("Redis topology", () => {
  test("REDIS_ADDR host:port, host, IPv6", () => {
    assert.deepEqual(load({ REDIS_ADDR: "redis.internal:6380" }).redis.topology, {
      kind: "single",
      host: "redis.internal",
      port: 6380,
      db: 0,
    });
    assert.deepEqual(load({ REDIS_ADDR: "redis" }).redis.topology, {
      kind: "single",
      host: "redis",
      port: 6379,
      db: 0,
    });
    assert.deepEqual(load({ REDIS_ADDR: "[::1]:6379" }).redis.topology, {
      kind: "single",
      host: "::1",
      port: 6379,
      db: 0,
    });
    const exp =
      "(expected host:port such as localhost:6379 or [::1]:6379, or redis://[user[:password]@]host[:port][/db] or rediss://… for TLS)";
    fails({ REDIS_ADDR: "::1:6379" }, `REDIS_ADDR="::1:6379" is not an address ${exp}`);
    fails({ REDIS_ADDR: "host:0" }, /^REDIS_ADDR="host:0" is not an address/);
    fails({ REDIS_ADDR: "host:99999" }, /^REDIS_ADDR="host:99999" is not an address/);
    fails({ REDIS_ADDR: "host:port" }, /^REDIS_ADDR="host:port" is not an address/);
    fails({ REDIS_ADDR: "[nothex]:1" }, /^REDIS_ADDR="\[nothex\]:1" is not an address/);
    fails({ REDIS_ADDR: `user:${PASSWORD}@host:6379` }, /^REDIS_ADDR="\(hidden\)" is not an address/);
  });
  test("REDIS_ADDR / REDIS_URL as URLs", () => {
    const c = load({ REDIS_URL: `rediss://alice:${encodeURIComponent(PASSWORD)}@cache.example.com:6380/2` });
    assert.deepEqual(c.redis.topology, { kind: "single", host: "cache.example.com", port: 6380, db: 2 });
    assert.equal(c.redis.username, "alice");
    assert.equal(c.redis.password, PASSWORD);
    assert.deepEqual(c.redis.tls, {});
    const d = load({ REDIS_ADDR: "redis://[::1]" });
    assert.deepEqual(d.redis.topology, { kind: "single", host: "::1", port: 6379, db: 0 });
    assert.equal(d.redis.tls, undefined);
    assert.equal(d.redis.username, undefined);
    assert.equal(load({ REDIS_URL: "redis://:secret@h/" }).redis.password, "secret");
    assert.equal(load({ REDIS_URL: "redis://:secret@h/" }).redis.username, undefined);
  });
  test("REDIS_URL invalid", () => {
    const exp = "(expected redis://[user[:password]@]host[:port][/db] or rediss://… for TLS)";
    fails({ REDIS_URL: "localhost:6379" }, `REDIS_URL="localhost:6379" is not a redis:// or rediss:// URL ${exp}`);
    fails({ REDIS_URL: "http://h:6379" }, `REDIS_URL="http://h:6379" has scheme "http", not redis or rediss ${exp}`);
    fails(
      { REDIS_URL: "redis://h:6379/x" },
      `REDIS_URL="redis://h:6379/x" has a path that is not a database number ${exp}`,
    );
    fails({ REDIS_URL: "redis://h?db=1" }, /has query parameters or a fragment/);
    fails(
      { REDIS_URL: `redis://u:${encodeURIComponent(PASSWORD)}@h/x` },
      `REDIS_URL="redis://u:(hidden)@h/x" has a path that is not a database number ${exp}`,
    );
    fails({ REDIS_ADDR: "unix:///tmp/redis.sock" }, /^REDIS_ADDR="unix:\/\/\/tmp\/redis.sock" has scheme "unix"/);
  });
  test("explicit REDIS_DB / REDIS_USERNAME / REDIS_PASSWORD win over the URL", () => {
    const c = load({
      REDIS_URL: "redis://alice:urlpass@h:6379/2",
      REDIS_DB: "5",
      REDIS_USERNAME: "bob",
      REDIS_PASSWORD: "envpass",
    });
    assert.deepEqual(c.redis.topology, { kind: "single", host: "h", port: 6379, db: 5 });
    assert.equal(c.redis.username, "bob");
    assert.equal(c.redis.password, "envpass");
    assert.equal(load({ REDIS_URL: "redis://h/2", REDIS_DB: "0" }).redis.topology.kind, "single");
    assert.deepEqual(load({ REDIS_URL: "redis://h/2", REDIS_DB: "0" }).redis.topology, {
      kind: "single",
      host: "h",
      port: 6379,
      db: 0,
    });
  });
  test("REDIS_PASSWORD kept exactly; REDIS_PASSWORD_FILE", () => {
    assert.equal(load({ REDIS_PASSWORD: " sp ace " }).redis.password, " sp ace ");
    const path = tmpFile("redis-pass", `${PASSWORD}\n`);
    assert.equal(load({ REDIS_PASSWORD_FILE: path }).redis.password, PASSWORD);
    fails(
      { REDIS_PASSWORD: PASSWORD, REDIS_PASSWORD_FILE: path },
      "REDIS_PASSWORD=(hidden) and REDIS_PASSWORD_FILE are both set (expected only one of them)",
    );
    fails({ REDIS_PASSWORD_FILE: join(tmp, "missing") }, /^REDIS_PASSWORD_FILE="[^"]+" cannot be read: ENOENT/);
  });
  test("both REDIS_URL and REDIS_ADDR", () => {
    fails(
      { REDIS_URL: `redis://:${encodeURIComponent(PASSWORD)}@a`, REDIS_ADDR: "b:6379" },
      'REDIS_URL="redis://:(hidden)@a" and REDIS_ADDR="b:6379" are both set (expected only one of them)',
    );
  });
  test("cluster selected by REDIS_CLUSTER_ADDRS alone", () => {
    const expected = {
      kind: "cluster",
      nodes: [
        { host: "n1", port: 7000 },
        { host: "n2", port: 7001 },
        { host: "::1", port: 7002 },
        { host: "n4", port: 6379 },
      ],
    };
    const addrs = " n1:7000, n2:7001 ,[::1]:7002,n4,";
    assert.deepEqual(load({ REDIS_CLUSTER_ADDRS: addrs }).redis.topology, expected);
    assert.deepEqual(load({ REDIS_CLUSTER_ADDRS: addrs, REDIS_CLUSTER_MODE: "true" }).redis.topology, expected);
    assert.deepEqual(load({ REDIS_CLUSTER_ADDRS: "n1:7000", REDIS_DB: "0" }).redis.topology.kind, "cluster");
    assert.deepEqual(load({ REDIS_CLUSTER_ADDRS: "n1:7000", REDIS_MAX_REDIRECTS: "3" }).warnings, []);
  });
  test("cluster errors", () => {
    fails(
      { REDIS_CLUSTER_MODE: "true" },
      'REDIS_CLUSTER_MODE="true" needs REDIS_CLUSTER_ADDRS (expected a comma-separated list of host:port such as localhost:7000,localhost:7001,localhost:7002)',
    );
    fails({ REDIS_CLUSTER_MODE: "true", REDIS_ADDR: "h:1" }, /^REDIS_CLUSTER_MODE="true" needs REDIS_CLUSTER_ADDRS/);
    fails({ REDIS_CLUSTER_MODE: "false", REDIS_CLUSTER_ADDRS: "a:1" }, /^REDIS_CLUSTER_MODE="false" contradicts/);
    fails({ REDIS_CLUSTER_MODE: "sure" }, /^REDIS_CLUSTER_MODE="sure" is not a boolean/);
    fails(
      { REDIS_CLUSTER_ADDRS: "a:1", REDIS_DB: "2" },
      'REDIS_DB="2" is not supported with Redis Cluster (expected 0 or unset: Cluster has only database 0)',
    );
    fails(
      { REDIS_CLUSTER_ADDRS: "a:1,b:x" },
      'REDIS_CLUSTER_ADDRS="a:1,b:x" has an invalid address "b:x" (expected a comma-separated list of host:port such as localhost:7000,localhost:7001,localhost:7002)',
    );
    fails({ REDIS_CLUSTER_ADDRS: ",," }, /^REDIS_CLUSTER_ADDRS=",," lists no address/);
    fails(
      { REDIS_CLUSTER_ADDRS: "a:1", REDIS_ADDR: "b:2" },
      'REDIS_CLUSTER_ADDRS="a:1" and REDIS_ADDR="b:2" are both set (expected at most one Redis topology: REDIS_SENTINEL_ADDRS, REDIS_CLUSTER_ADDRS, or REDIS_URL/REDIS_ADDR)',
    );
  });
  test("sentinel", () => {
    const c = load({
      REDIS_SENTINEL_ADDRS: "s1:26379,s2",
      REDIS_SENTINEL_MASTER: "mymaster",
      REDIS_SENTINEL_PASSWORD: PASSWORD,
      REDIS_DB: "1",
      REDIS_PASSWORD: "masterpass",
    });
    assert.deepEqual(c.redis.topology, {
      kind: "sentinel",
      sentinels: [
        { host: "s1", port: 26379 },
        { host: "s2", port: 26379 },
      ],
      masterName: "mymaster",
      sentinelPassword: PASSWORD,
      db: 1,
    });
    assert.equal(c.redis.password, "masterpass");
    fails(
      { REDIS_SENTINEL_ADDRS: "s1:26379" },
      "REDIS_SENTINEL_MASTER is not set (expected the master name the sentinels of REDIS_SENTINEL_ADDRS monitor, such as mymaster)",
    );
    fails({ REDIS_SENTINEL_MASTER: "m" }, /^REDIS_SENTINEL_MASTER="m" is set but REDIS_SENTINEL_ADDRS is not/);
    fails({ REDIS_SENTINEL_PASSWORD: PASSWORD }, /^REDIS_SENTINEL_PASSWORD=\(hidden\) is set but REDIS_SENTINEL_ADDRS/);
    fails(
      { REDIS_SENTINEL_ADDRS: "s1", REDIS_SENTINEL_MASTER: "m", REDIS_CLUSTER_ADDRS: "c1" },
      /^REDIS_SENTINEL_ADDRS="s1" and REDIS_CLUSTER_ADDRS="c1" are both set/,
    );
    fails(
      { REDIS_SENTINEL_ADDRS: "s1", REDIS_SENTINEL_MASTER: "m", REDIS_URL: "redis://h" },
      /^REDIS_SENTINEL_ADDRS="s1" and REDIS_URL="redis:\/\/h" are both set/,
    );
  });
  test("TLS files are read; any TLS setting turns TLS on", () => {
    const ca = tmpFile("ca.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
    const cert = tmpFile("cert.pem", "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n");
    const key = tmpFile("key.pem", "-----BEGIN PRIVATE KEY-----\nMIID\n-----END PRIVATE KEY-----\n");
    const c = load({
      REDIS_TLS_CA_FILE: ca,
      REDIS_TLS_CERT_FILE: cert,
      REDIS_TLS_KEY_FILE: key,
      REDIS_TLS_SERVER_NAME: "redis.example.com",
    });
    assert.deepEqual(c.redis.tls, {
      ca: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
      cert: "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n",
      key: "-----BEGIN PRIVATE KEY-----\nMIID\n-----END PRIVATE KEY-----\n",
      serverName: "redis.example.com",
    });
    assert.deepEqual(load({ REDIS_TLS_SERVER_NAME: "r.example.com" }).redis.tls, { serverName: "r.example.com" });
    fails({ REDIS_TLS_CA_FILE: join(tmp, "none.pem") }, /^REDIS_TLS_CA_FILE="[^"]+" cannot be read: ENOENT/);
    fails({ REDIS_TLS_CA_FILE: tmpFile("junk.pem", "hello") }, /^REDIS_TLS_CA_FILE="[^"]+" is not a PEM file/);
    fails({ REDIS_TLS_CERT_FILE: cert }, /^REDIS_TLS_CERT_FILE="[^"]+" is set without REDIS_TLS_KEY_FILE/);
    fails({ REDIS_TLS_KEY_FILE: key }, /^REDIS_TLS_KEY_FILE="[^"]+" is set without REDIS_TLS_CERT_FILE/);
    fails(
      { REDIS_TLS: "false", REDIS_TLS_CA_FILE: ca },
      'REDIS_TLS="false" contradicts REDIS_TLS_CA_FILE, which turns TLS on (expected REDIS_TLS unset or true)',
    );
    fails({ REDIS_TLS: "0", REDIS_URL: "rediss://h" }, /^REDIS_TLS="0" contradicts REDIS_URL \(rediss:\/\/\)/);
  });
});

describe("describeConfig", () => {
  test("no secrets", () => {
    const ca = tmpFile("d-ca.pem", "-----BEGIN CERTIFICATE-----\nSECRETPEM\n-----END CERTIFICATE-----\n");
    const c = load({
      REDIS_SENTINEL_ADDRS: "s1",
      REDIS_SENTINEL_MASTER: "m",
      REDIS_SENTINEL_PASSWORD: `${PASSWORD}-sentinel`,
      REDIS_PASSWORD: PASSWORD,
      REDIS_TLS_CA_FILE: ca,
    });
    const d = describeConfig(c);
    const text = JSON.stringify(d);
    assert.ok(!text.includes(KEY));
    assert.ok(!text.includes(PASSWORD));
    assert.ok(!text.includes("SECRETPEM"));
    assert.equal(d["apiKey"], "(hidden)");
    const redis = d["redis"] as Record<string, unknown>;
    assert.equal(redis["password"], "(hidden)");
    assert.deepEqual(redis["tls"], { ca: true, cert: false, key: false, serverName: undefined });
    assert.equal((redis["topology"] as Record<string, unknown>)["sentinelPassword"], "(hidden)");
    assert.equal(d["batchSize"], 5);
    assert.equal(d["datastreamUrl"], "wss://datastream.schematichq.com/datastream");
  });
  test("no password: none shown", () => {
    const redis = describeConfig(load())["redis"] as Record<string, unknown>;
    assert.equal(redis["password"], undefined);
    assert.equal(redis["tls"], false);
  });
});
