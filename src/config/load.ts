/**
 * Environment → one validated Config. This is the only module of the product that reads environment variables
 * (callers pass `process.env` in). Every invalid value stops start-up with a ConfigError whose message is one
 * line naming the variable, its value (secrets shown as `(hidden)`) and the expected form.
 *
 * General rules:
 * - A variable that is unset, empty or only whitespace takes its default (as the Go original, where an empty
 *   variable reads as unset; the seed's `REDIS_PASSWORD=""` means "no password"). Exceptions, where an empty
 *   value could be meant literally: `REDIS_KEY_PREFIX` and `CACHE_VERSION`, which must be non-empty when set.
 * - Surrounding whitespace is trimmed from non-secret scalar values. Passwords are used exactly as given.
 * - Durations use Go syntax; values below 1 ms are rounded up to whole milliseconds (so a positive duration
 *   stays positive). Timer settings are capped at 2^31-1 ms, the longest delay Node.js timers support.
 * - Variables that are not settings (the table in settings.ts): a name within one or two typing mistakes of a
 *   setting's (`REDIS_PASWORD`, `redis_addr`) stops start-up, naming the setting meant: a typo would otherwise
 *   silently leave the default in force. Any other name with one of our prefixes (`REDIS_ADRESS`, `REDIS_HOST`) is
 *   only a warning with the closest setting: other tools set such variables in the same environment (Heroku's
 *   REDIS_TLS_URL, Bitnami's REDIS_HOST), and Kubernetes service links (REDIS_PORT=tcp://…, REDIS_SERVICE_HOST) are
 *   skipped altogether.
 */
import { readFileSync } from "node:fs";
import { isIPv6 } from "node:net";
import { availableParallelism } from "node:os";
import { z } from "zod";
import { DatastreamUrlError, deriveDatastreamUrl } from "./datastream-url.js";
import { DurationSyntaxError, parseGoDuration } from "./duration.js";
import { SETTING_NAMES } from "./settings.js";
import type { Config, LogFormat, LogLevel, RedisConfig, RedisTlsConfig, RedisTopology } from "./types.js";

/** Invalid settings. Its message is the one line printed before exiting with status 2. */
export class ConfigError extends Error {
  override name = "ConfigError";
  /** The variable the message starts with (every message names one first). */
  get variable(): string | undefined {
    return /^[A-Za-z_][A-Za-z0-9_]*/.exec(this.message)?.[0];
  }
}

export interface LoadConfigOptions {
  /** Whether stdout is a terminal: picks the LOG_FORMAT default (pretty on a terminal, json otherwise). */
  isTTY?: boolean;
  /** Reads a `*_FILE` setting's file as UTF-8 text (default: fs.readFileSync). Throw when unreadable. */
  readFile?: (path: string) => string;
  /** CPU count for the NUM_WORKERS default (default: os.availableParallelism()). */
  cpuCount?: number;
}

export const DEFAULT_API_URL = "https://api.schematichq.com";
export const DEFAULT_KEY_PREFIX = "schematic:";
const DEFAULT_REDIS_PORT = 6379;
const DEFAULT_SENTINEL_PORT = 26379;
/** setTimeout's maximum delay; longer ones fire at once. */
const MAX_TIMER_MS = 2_147_483_647;

const DURATION_FORM = "Go syntax such as 300ms, 45s, 1h30m";
const BOOL_FORM = "true, false, 1, 0, yes or no";
const HOST_PORT_FORM = "host:port such as localhost:6379 or [::1]:6379";
const REDIS_URL_FORM = "redis://[user[:password]@]host[:port][/db] or rediss://… for TLS";

// ---------------------------------------------------------------------------------------------------------------
// Displaying values in error messages

const MAX_SHOWN = 200;

/** The value as a JSON string literal, so control characters cannot break the one-line message. */
function quote(raw: string): string {
  const s = raw.length > MAX_SHOWN ? `${raw.slice(0, MAX_SHOWN)}…` : raw;
  return JSON.stringify(s)
    .replace(/\u2028/g, "\\u2028")
    .replace(/\u2029/g, "\\u2029");
}

/**
 * Where the password of a URL-like value (`scheme://user:password@host`) is: `[start, end)`, "none", or "unsure"
 * (an `@` that is not in a user info part).
 */
function passwordSpan(raw: string): [number, number] | "none" | "unsure" {
  const at = raw.lastIndexOf("@");
  if (at < 0) return "none";
  const schemeEnd = raw.indexOf("://");
  if (schemeEnd < 0 || schemeEnd > at) return "unsure";
  const colon = raw.slice(schemeEnd + 3, at).indexOf(":");
  return colon < 0 ? "none" : [schemeEnd + 3 + colon + 1, at]; // no colon: a user name only
}

/** Hides the password of a URL-like value (`scheme://user:password@host`), or the whole value if unsure. */
export function redactUrl(raw: string): string {
  const span = passwordSpan(raw);
  if (span === "none") return raw;
  if (span === "unsure") return "(hidden)";
  return `${raw.slice(0, span[0])}(hidden)${raw.slice(span[1])}`;
}

// ---------------------------------------------------------------------------------------------------------------
// Value schemas (zod): each turns the variable's string into its typed value or one issue whose message
// completes the sentence `NAME="value" …`.

type StringSchema<T> = z.ZodType<T, z.ZodTypeDef, string>;

function fail(ctx: z.RefinementCtx, message: string): typeof z.NEVER {
  ctx.addIssue({ code: z.ZodIssueCode.custom, message });
  return z.NEVER;
}

/**
 * A Go duration in whole milliseconds. `zeroMeans` set: 0 allowed and means that ("unlimited", "disabled");
 * otherwise the duration must be positive. Negative is always an error.
 */
function durationSchema(opts: { zeroMeans?: string; timer?: boolean } = {}): StringSchema<number> {
  const { zeroMeans, timer = true } = opts;
  const expected = zeroMeans
    ? `expected ${DURATION_FORM}, or 0s for ${zeroMeans}`
    : `expected a positive duration in ${DURATION_FORM}`;
  return z.string().transform((s, ctx) => {
    let ms: number;
    try {
      ms = parseGoDuration(s);
    } catch (err) {
      if (!(err instanceof DurationSyntaxError)) throw err;
      if (/^[-+]?\d+(\.\d*)?$/.test(s)) return fail(ctx, `is not a duration: a unit is required (${expected})`);
      if (err.message.startsWith("duration out of range")) return fail(ctx, `is out of range (${expected})`);
      return fail(ctx, `is not a duration (${expected})`);
    }
    if (ms < 0) return fail(ctx, `is negative (${expected})`);
    if (ms === 0 && !zeroMeans) return fail(ctx, `is zero (${expected})`);
    const whole = Math.ceil(ms);
    if (timer && whole > MAX_TIMER_MS) {
      return fail(ctx, `is too long (expected at most 596h31m23s, the longest timer Node.js supports)`);
    }
    return whole;
  });
}

function integerSchema(min: number, max: number, expected: string, what = "an integer"): StringSchema<number> {
  return z.string().transform((s, ctx) => {
    if (!/^\+?\d+$/.test(s) && !/^-\d+$/.test(s)) return fail(ctx, `is not ${what} (expected ${expected})`);
    const n = Number(s);
    if (!Number.isSafeInteger(n) || n < min || n > max) return fail(ctx, `is out of range (expected ${expected})`);
    return n;
  });
}

const countSchema = (example: number) => integerSchema(1, Number.MAX_SAFE_INTEGER, `an integer ≥ 1 such as ${example}`);

const boolSchema: StringSchema<boolean> = z.string().transform((s, ctx) => {
  switch (s.toLowerCase()) {
    case "true":
    case "1":
    case "yes":
      return true;
    case "false":
    case "0":
    case "no":
      return false;
    default:
      return fail(ctx, `is not a boolean (expected ${BOOL_FORM})`);
  }
});

function enumSchema<T extends string>(values: readonly T[], what: string): StringSchema<T> {
  const list = `${values.slice(0, -1).join(", ")} or ${values[values.length - 1]}`;
  return z.string().transform((s, ctx) => {
    const v = s.toLowerCase() as T;
    return values.includes(v) ? v : fail(ctx, `is not ${what} (expected ${list}, any case)`);
  });
}

/** A Redis key or key part: non-empty, no whitespace. */
function keySchema(expected: string, extra?: { forbid: RegExp; why: string }): StringSchema<string> {
  return z.string().transform((s, ctx) => {
    if (s === "") return fail(ctx, `is empty (expected ${expected})`);
    if (/\s/.test(s)) return fail(ctx, `contains whitespace (expected ${expected})`);
    if (extra?.forbid.test(s)) return fail(ctx, `${extra.why} (expected ${expected})`);
    return s;
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Reading variables

class EnvReader {
  constructor(
    private readonly env: NodeJS.ProcessEnv,
    private readonly readFileFn: (path: string) => string,
  ) {}

  /** Exactly as set (undefined when unset). */
  raw(name: string): string | undefined {
    // Every name read must be in the settings table: it feeds --help, the README and the unknown-variable check.
    if (!SETTING_NAMES.has(name)) throw new Error(`${name} is read but missing from the settings table`);
    return this.env[name];
  }

  /** Trimmed; undefined when unset, empty or only whitespace. */
  value(name: string): string | undefined {
    const v = this.raw(name)?.trim();
    return v === undefined || v === "" ? undefined : v;
  }

  isSet(name: string): boolean {
    return this.value(name) !== undefined;
  }

  /** Parses `name` with `schema`, or returns `def` when unset. */
  get<T>(name: string, schema: StringSchema<T>, def: T): T;
  get<T>(name: string, schema: StringSchema<T>): T | undefined;
  get<T>(name: string, schema: StringSchema<T>, def?: T): T | undefined {
    const v = this.value(name);
    return v === undefined ? def : this.parse(name, v, schema);
  }

  /** Parses a value that was given (even empty), for settings where an empty value is an error. */
  parse<T>(name: string, value: string, schema: StringSchema<T>): T {
    const result = schema.safeParse(value);
    if (result.success) return result.data;
    const message = result.error.issues[0]?.message ?? "is invalid";
    throw new ConfigError(`${name}=${quote(value)} ${message}`);
  }

  /** Reads a `*_FILE` setting's file. `trimNewlines`: drop trailing line breaks (secrets stored with `echo`). */
  readFile(name: string, path: string, expected: string, trimNewlines: boolean): string {
    let text: string;
    try {
      text = this.readFileFn(path);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const why = e.code ?? (e.message ?? String(err)).split("\n")[0];
      throw new ConfigError(`${name}=${quote(path)} cannot be read: ${why} (expected ${expected})`);
    }
    if (trimNewlines) text = text.replace(/[\r\n]+$/, "");
    if (text === "") throw new ConfigError(`${name}=${quote(path)} is an empty file (expected ${expected})`);
    return text;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Addresses and URLs

interface HostPort {
  host: string;
  port: number;
}

const HOSTNAME = /^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$/;

function parsePort(s: string): number | undefined {
  if (!/^\d{1,5}$/.test(s)) return undefined;
  const n = Number(s);
  return n >= 1 && n <= 65535 ? n : undefined;
}

/** `host`, `host:port`, `[ipv6]` or `[ipv6]:port`; IPv6 hosts are returned without brackets. */
export function parseHostPort(s: string, defaultPort: number): HostPort | undefined {
  let host: string;
  let portText: string | undefined;
  if (s.startsWith("[")) {
    const m = /^\[([^\]]+)\](?::(.*))?$/.exec(s);
    if (!m || !isIPv6(m[1] as string)) return undefined;
    host = m[1] as string;
    portText = m[2];
  } else {
    const parts = s.split(":");
    if (parts.length > 2) return undefined; // an IPv6 address needs brackets
    host = parts[0] as string;
    portText = parts[1];
    if (!HOSTNAME.test(host)) return undefined;
  }
  if (portText === undefined) return { host, port: defaultPort };
  const port = parsePort(portText);
  return port === undefined ? undefined : { host, port };
}

interface RedisUrlParts extends HostPort {
  tls: boolean;
  username?: string;
  password?: string;
  db?: number;
}

/** A `redis://` or `rediss://` URL, or a reason it is not one. */
function parseRedisUrl(s: string): RedisUrlParts | string {
  if (!/^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(s)) return "is not a redis:// or rediss:// URL";
  let url: URL;
  try {
    url = new URL(s);
  } catch {
    return "is not a valid URL";
  }
  if (url.protocol !== "redis:" && url.protocol !== "rediss:") {
    return `has scheme ${quote(url.protocol.slice(0, -1))}, not redis or rediss`;
  }
  if (url.search !== "" || url.hash !== "") return "has query parameters or a fragment, which are not supported";
  let hostText = url.hostname;
  if (hostText === "") return "has no host";
  if (url.port !== "") hostText += `:${url.port}`;
  // Non-special schemes keep the host as written; [v6] keeps its brackets, which parseHostPort expects.
  const hp = parseHostPort(hostText, DEFAULT_REDIS_PORT);
  if (!hp) return "has an invalid host or port";
  let db: number | undefined;
  const path = url.pathname;
  if (path !== "" && path !== "/") {
    const m = /^\/(\d{1,9})$/.exec(path);
    if (!m) return "has a path that is not a database number";
    db = Number(m[1]);
  }
  let username: string | undefined;
  let password: string | undefined;
  try {
    username = url.username === "" ? undefined : decodeURIComponent(url.username);
    password = url.password === "" ? undefined : decodeURIComponent(url.password);
  } catch {
    return "has a badly percent-encoded user name or password";
  }
  return { ...hp, tls: url.protocol === "rediss:", username, password, db };
}

function parseAddrList(r: EnvReader, name: string, defaultPort: number, example: string): HostPort[] {
  const raw = r.value(name) as string;
  const expected = `expected a comma-separated list of host:port such as ${example}`;
  const items = raw
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
  if (items.length === 0) throw new ConfigError(`${name}=${quote(raw)} lists no address (${expected})`);
  return items.map((item) => {
    const hp = parseHostPort(item, defaultPort);
    if (!hp) throw new ConfigError(`${name}=${quote(raw)} has an invalid address ${quote(item)} (${expected})`);
    return hp;
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Sections

function loadApiKey(r: EnvReader): string {
  const fromEnv = r.value("SCHEMATIC_API_KEY");
  const file = r.value("SCHEMATIC_API_KEY_FILE");
  if (fromEnv !== undefined && file !== undefined) {
    throw new ConfigError(
      "SCHEMATIC_API_KEY=(hidden) and SCHEMATIC_API_KEY_FILE are both set (expected only one of them)",
    );
  }
  let key: string;
  let shown: string;
  if (file !== undefined) {
    key = r.readFile("SCHEMATIC_API_KEY_FILE", file, "a readable file holding the Schematic API key", true);
    shown = `SCHEMATIC_API_KEY_FILE=${quote(file)} holds a key that`;
  } else if (fromEnv !== undefined) {
    key = fromEnv;
    shown = "SCHEMATIC_API_KEY=(hidden)";
  } else {
    const state = r.raw("SCHEMATIC_API_KEY") === undefined ? "is not set" : "is empty";
    throw new ConfigError(
      `SCHEMATIC_API_KEY ${state}: export SCHEMATIC_API_KEY=<your Schematic API key> (or SCHEMATIC_API_KEY_FILE=/path/to/file)`,
    );
  }
  if (!/^[\x21-\x7e]+$/.test(key)) {
    throw new ConfigError(
      `${shown} contains whitespace or non-printable characters (expected the key exactly as shown in Schematic)`,
    );
  }
  return key;
}

function loadApiUrl(r: EnvReader): string {
  const raw = r.value("SCHEMATIC_API_URL");
  if (raw === undefined) return DEFAULT_API_URL;
  const bad = (why: string) =>
    new ConfigError(
      `SCHEMATIC_API_URL=${quote(redactUrl(raw))} ${why} (expected an http:// or https:// URL such as ${DEFAULT_API_URL})`,
    );
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw bad("is not a URL");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw bad("is not an http(s) URL");
  if (url.username !== "" || url.password !== "") throw bad("contains credentials, which are not supported");
  if (url.search !== "" || url.hash !== "") throw bad("has query parameters or a fragment, which are not supported");
  return `${url.origin}${url.pathname.replace(/\/+$/, "")}`;
}

function loadDatastreamUrl(r: EnvReader, apiUrl: string): { url: string; explicit: boolean } {
  const raw = r.value("SCHEMATIC_DATASTREAM_URL");
  try {
    return raw === undefined
      ? { url: deriveDatastreamUrl(apiUrl), explicit: false }
      : { url: deriveDatastreamUrl(raw), explicit: true };
  } catch (err) {
    if (!(err instanceof DatastreamUrlError)) throw err;
    const [name, value] = raw === undefined ? ["SCHEMATIC_API_URL", apiUrl] : ["SCHEMATIC_DATASTREAM_URL", raw];
    throw new ConfigError(
      `${name}=${quote(redactUrl(value))} ${err.message} (expected ws://, wss://, or an http(s):// URL to derive it from)`,
    );
  }
}

interface RedisResult {
  redis: RedisConfig;
  warnings: string[];
}

function loadRedis(r: EnvReader): RedisResult {
  const warnings: string[] = [];

  // --- topology selection
  const urlVar = r.value("REDIS_URL");
  const addrVar = r.value("REDIS_ADDR");
  if (urlVar !== undefined && addrVar !== undefined) {
    throw new ConfigError(
      `REDIS_URL=${quote(redactUrl(urlVar))} and REDIS_ADDR=${quote(redactUrl(addrVar))} are both set (expected only one of them)`,
    );
  }
  const singleVar = urlVar !== undefined ? "REDIS_URL" : addrVar !== undefined ? "REDIS_ADDR" : undefined;
  const set = [
    r.isSet("REDIS_SENTINEL_ADDRS") ? "REDIS_SENTINEL_ADDRS" : undefined,
    r.isSet("REDIS_CLUSTER_ADDRS") ? "REDIS_CLUSTER_ADDRS" : undefined,
    singleVar,
  ].filter((n): n is string => n !== undefined);
  if (set.length > 1) {
    const shown = set.map((n) => `${n}=${quote(redactUrl(r.value(n) as string))}`);
    throw new ConfigError(
      `${shown.join(" and ")} are both set (expected at most one Redis topology: REDIS_SENTINEL_ADDRS, REDIS_CLUSTER_ADDRS, or REDIS_URL/REDIS_ADDR)`,
    );
  }

  const clusterMode = r.get("REDIS_CLUSTER_MODE", boolSchema);
  const clusterExample = "localhost:7000,localhost:7001,localhost:7002";
  if (clusterMode === true && !r.isSet("REDIS_CLUSTER_ADDRS")) {
    throw new ConfigError(
      `REDIS_CLUSTER_MODE=${quote(r.value("REDIS_CLUSTER_MODE") as string)} needs REDIS_CLUSTER_ADDRS (expected a comma-separated list of host:port such as ${clusterExample})`,
    );
  }
  if (clusterMode === false && r.isSet("REDIS_CLUSTER_ADDRS")) {
    throw new ConfigError(
      `REDIS_CLUSTER_MODE=${quote(r.value("REDIS_CLUSTER_MODE") as string)} contradicts REDIS_CLUSTER_ADDRS, which selects Redis Cluster (expected REDIS_CLUSTER_MODE unset or true)`,
    );
  }
  if (!r.isSet("REDIS_SENTINEL_ADDRS")) {
    for (const name of ["REDIS_SENTINEL_MASTER", "REDIS_SENTINEL_PASSWORD"]) {
      if (r.isSet(name)) {
        const shown = name === "REDIS_SENTINEL_PASSWORD" ? "(hidden)" : quote(r.value(name) as string);
        throw new ConfigError(
          `${name}=${shown} is set but REDIS_SENTINEL_ADDRS is not (expected REDIS_SENTINEL_ADDRS=host:port,… for Sentinel, or ${name} unset)`,
        );
      }
    }
  }

  const dbVar = r.get("REDIS_DB", integerSchema(0, Number.MAX_SAFE_INTEGER, "an integer ≥ 0 such as 0"));

  // --- single node: host:port or URL (REDIS_URL must be a URL; REDIS_ADDR may be either)
  let fromUrl: RedisUrlParts | undefined;
  let single: HostPort = { host: "localhost", port: DEFAULT_REDIS_PORT };
  if (singleVar !== undefined) {
    const raw = r.value(singleVar) as string;
    const isUrl = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(raw);
    if (isUrl || singleVar === "REDIS_URL") {
      const parsed = parseRedisUrl(raw);
      if (typeof parsed === "string") {
        const form = singleVar === "REDIS_URL" ? REDIS_URL_FORM : `${HOST_PORT_FORM}, or ${REDIS_URL_FORM}`;
        throw new ConfigError(`${singleVar}=${quote(redactUrl(raw))} ${parsed} (expected ${form})`);
      }
      fromUrl = parsed;
      single = { host: parsed.host, port: parsed.port };
    } else {
      const hp = parseHostPort(raw, DEFAULT_REDIS_PORT);
      if (!hp) {
        throw new ConfigError(
          `REDIS_ADDR=${quote(redactUrl(raw))} is not an address (expected ${HOST_PORT_FORM}, or ${REDIS_URL_FORM})`,
        );
      }
      single = hp;
    }
  }

  let topology: RedisTopology;
  if (r.isSet("REDIS_CLUSTER_ADDRS")) {
    if (dbVar !== undefined && dbVar !== 0) {
      throw new ConfigError(
        `REDIS_DB=${quote(String(dbVar))} is not supported with Redis Cluster (expected 0 or unset: Cluster has only database 0)`,
      );
    }
    topology = { kind: "cluster", nodes: parseAddrList(r, "REDIS_CLUSTER_ADDRS", DEFAULT_REDIS_PORT, clusterExample) };
  } else if (r.isSet("REDIS_SENTINEL_ADDRS")) {
    const sentinels = parseAddrList(
      r,
      "REDIS_SENTINEL_ADDRS",
      DEFAULT_SENTINEL_PORT,
      "sentinel-1:26379,sentinel-2:26379",
    );
    const masterName = r.get(
      "REDIS_SENTINEL_MASTER",
      keySchema("the master name the sentinels monitor, such as mymaster"),
    );
    if (masterName === undefined) {
      throw new ConfigError(
        "REDIS_SENTINEL_MASTER is not set (expected the master name the sentinels of REDIS_SENTINEL_ADDRS monitor, such as mymaster)",
      );
    }
    const sentinelPassword = nonEmpty(r.raw("REDIS_SENTINEL_PASSWORD"));
    topology = { kind: "sentinel", sentinels, masterName, db: dbVar ?? 0 };
    if (sentinelPassword !== undefined) topology.sentinelPassword = sentinelPassword;
  } else {
    // Explicit REDIS_DB wins over the URL's /db (the same for REDIS_USERNAME and REDIS_PASSWORD below): the
    // URL often comes from a shared secret or platform binding, the separate variables from this deployment.
    topology = { kind: "single", host: single.host, port: single.port, db: dbVar ?? fromUrl?.db ?? 0 };
  }

  // --- credentials (explicit variables win over the URL's user info, see above)
  const passwordVar = nonEmpty(r.raw("REDIS_PASSWORD"));
  const passwordFile = r.value("REDIS_PASSWORD_FILE");
  if (passwordVar !== undefined && passwordFile !== undefined) {
    throw new ConfigError("REDIS_PASSWORD=(hidden) and REDIS_PASSWORD_FILE are both set (expected only one of them)");
  }
  const password =
    passwordFile !== undefined
      ? r.readFile("REDIS_PASSWORD_FILE", passwordFile, "a readable file holding the Redis password", true)
      : (passwordVar ?? fromUrl?.password);
  const username = r.value("REDIS_USERNAME") ?? fromUrl?.username;

  // --- TLS
  const tlsFlag = r.get("REDIS_TLS", boolSchema);
  const tlsVars = ["REDIS_TLS_CA_FILE", "REDIS_TLS_CERT_FILE", "REDIS_TLS_KEY_FILE", "REDIS_TLS_SERVER_NAME"];
  const tlsImpliedBy = [...(fromUrl?.tls ? [`${singleVar} (rediss://)`] : []), ...tlsVars.filter((n) => r.isSet(n))];
  if (tlsFlag === false && tlsImpliedBy.length > 0) {
    throw new ConfigError(
      `REDIS_TLS=${quote(r.value("REDIS_TLS") as string)} contradicts ${tlsImpliedBy.join(", ")}, which turns TLS on (expected REDIS_TLS unset or true)`,
    );
  }
  let tls: RedisTlsConfig | undefined;
  if (tlsFlag === true || tlsImpliedBy.length > 0) {
    tls = {};
    const pem = (name: string) => {
      const path = r.value(name);
      if (path === undefined) return undefined;
      const expected = "a readable PEM file (-----BEGIN …-----)";
      const text = r.readFile(name, path, expected, false);
      if (!text.includes("-----BEGIN ")) {
        throw new ConfigError(`${name}=${quote(path)} is not a PEM file (expected ${expected})`);
      }
      return text;
    };
    const ca = pem("REDIS_TLS_CA_FILE");
    const cert = pem("REDIS_TLS_CERT_FILE");
    const key = pem("REDIS_TLS_KEY_FILE");
    if ((cert === undefined) !== (key === undefined)) {
      const [have, missing] =
        cert === undefined
          ? ["REDIS_TLS_KEY_FILE", "REDIS_TLS_CERT_FILE"]
          : ["REDIS_TLS_CERT_FILE", "REDIS_TLS_KEY_FILE"];
      throw new ConfigError(
        `${have}=${quote(r.value(have) as string)} is set without ${missing} (expected both for a client certificate, or neither)`,
      );
    }
    const serverName = r.get("REDIS_TLS_SERVER_NAME", keySchema("a host name such as redis.example.com"));
    if (ca !== undefined) tls.ca = ca;
    if (cert !== undefined) tls.cert = cert;
    if (key !== undefined) tls.key = key;
    if (serverName !== undefined) tls.serverName = serverName;
  }

  // --- tuning
  const maxRetries = r.get("REDIS_MAX_RETRIES", countSchema(3), 3);
  const dialTimeoutMs = r.get("REDIS_DIAL_TIMEOUT", durationSchema(), 5_000);
  const readTimeoutMs = r.get("REDIS_READ_TIMEOUT", durationSchema(), 3_000);
  const writeTimeoutMs = r.get("REDIS_WRITE_TIMEOUT", durationSchema(), 3_000);
  const maxRedirects = r.get("REDIS_MAX_REDIRECTS", countSchema(8), 8);
  const routeByLatency = r.get("REDIS_ROUTE_BY_LATENCY", boolSchema, false);
  if (topology.kind !== "cluster") {
    for (const name of ["REDIS_MAX_REDIRECTS", "REDIS_ROUTE_BY_LATENCY"]) {
      if (r.isSet(name)) warnings.push(`${name} applies only to Redis Cluster; it has no effect with ${topology.kind}`);
    }
  }
  if (r.get("REDIS_ENABLE_MAINTENANCE_NOTIFICATIONS", boolSchema, false)) {
    warnings.push(
      "REDIS_ENABLE_MAINTENANCE_NOTIFICATIONS is accepted for compatibility with the Go replicator but has no effect",
    );
  }

  // REDIS_KEY_PREFIX: set means non-empty (an empty prefix is not silently replaced by the default).
  const prefixRaw = r.raw("REDIS_KEY_PREFIX");
  const keyPrefix =
    prefixRaw === undefined
      ? DEFAULT_KEY_PREFIX
      : r.parse("REDIS_KEY_PREFIX", prefixRaw, keySchema(`a non-empty prefix such as ${DEFAULT_KEY_PREFIX}`));

  const redis: RedisConfig = {
    topology,
    maxRetries,
    dialTimeoutMs,
    readTimeoutMs,
    writeTimeoutMs,
    maxRedirects,
    routeByLatency,
    keyPrefix,
  };
  if (username !== undefined) redis.username = username;
  if (password !== undefined) redis.password = password;
  if (tls !== undefined) redis.tls = tls;
  return { redis, warnings };
}

function nonEmpty(s: string | undefined): string | undefined {
  return s === undefined || s === "" ? undefined : s;
}

/** A Redis key given explicitly (used verbatim), or the default under the key prefix. */
function redisKey(r: EnvReader, name: string, def: string): string {
  return r.get(name, keySchema(`a Redis key such as ${def}`), def);
}

// ---------------------------------------------------------------------------------------------------------------
// Variables that are not settings

/** Prefixes only our settings use: an unknown name with one of them is most likely meant for us. */
const OUR_PREFIXES = [
  "SCHEMATIC_",
  "REDIS_",
  "CACHE_",
  "WRITER_LOCK_",
  "REPLAY_",
  "ASYNC_LOADER_",
  "WS_",
  "DATASTREAM_",
];

/** Kubernetes service links (`{SERVICE}_SERVICE_HOST`, `{SERVICE}_PORT=tcp://…`, `{SERVICE}_PORT_6379_TCP_ADDR`). */
function isServiceLink(name: string, value: string): boolean {
  return (
    /_SERVICE_(HOST|PORT)(_[A-Z0-9_]+)?$/.test(name) ||
    /_PORT_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?$/.test(name) ||
    (/_PORT$/.test(name) && /^(tcp|udp|sctp):\/\//.test(value))
  );
}

/** Optimal string alignment distance (Levenshtein plus the swap of two neighbours). */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        best = Math.min(best, d[i - 2]![j - 2]! + 1);
      d[i]![j] = best;
    }
  }
  return d[a.length]![b.length]!;
}

const firstSegment = (name: string) => name.split("_")[0];

/** Names other Redis clients use for what a setting here does, which spelling distance does not find. */
const SYNONYMS: Record<string, string> = {
  REDIS_HOST: "REDIS_ADDR",
  REDIS_PORT: "REDIS_ADDR",
  REDIS_ADDRESS: "REDIS_ADDR",
  REDIS_USER: "REDIS_USERNAME",
  REDIS_PASS: "REDIS_PASSWORD",
};

/** See the rules in this file's header comment. */
function checkUnknownVariables(env: NodeJS.ProcessEnv, warnings: string[]): void {
  for (const name of Object.keys(env).sort()) {
    const value = env[name];
    if (value === undefined || SETTING_NAMES.has(name) || isServiceLink(name, value)) continue;
    const upper = name.toUpperCase();
    let closest: { setting: string; distance: number } | undefined;
    for (const setting of SETTING_NAMES) {
      if (firstSegment(setting) !== firstSegment(upper)) continue;
      const distance = editDistance(upper, setting);
      if (!closest || distance < closest.distance) closest = { setting, distance };
    }
    if (closest && closest.distance <= (closest.setting.length >= 10 ? 2 : 1)) {
      const note = upper === closest.setting ? "names are case-sensitive; " : "";
      throw new ConfigError(
        `${name} is not a setting (expected ${closest.setting}: ${note}rename the variable, or unset it)`,
      );
    }
    if (OUR_PREFIXES.some((p) => name.startsWith(p))) {
      const meant =
        SYNONYMS[name] ?? (closest && closest.distance <= Math.max(3, name.length / 3) ? closest.setting : undefined);
      const hint = meant ? ` (did you mean ${meant}?)` : "";
      warnings.push(`${name} is not a setting of this replicator and is ignored${hint}`);
    }
  }
}

/** `1500ms`, `9s`: a duration in the form the settings take. */
function formatMs(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

/**
 * A writer renews its lease every TTL/3 and stops writing when no renewal was confirmed within the next TTL/3. A
 * renewal may take as long as the Redis command timeout; if that is not below TTL/3, a Redis slowdown the timeout
 * deems acceptable costs the lease (and a writer change) even though every command succeeds.
 */
function checkLeaseTiming(r: EnvReader, ttlMs: number, redis: RedisConfig): void {
  const timeoutMs = Math.max(redis.readTimeoutMs, redis.writeTimeoutMs);
  if (ttlMs / 3 > timeoutMs) return;
  const timeoutVar = redis.readTimeoutMs >= redis.writeTimeoutMs ? "REDIS_READ_TIMEOUT" : "REDIS_WRITE_TIMEOUT";
  const suggestedTtl = formatMs(Math.floor((timeoutMs * 3) / 1000 + 1) * 1000);
  if (r.isSet("WRITER_LOCK_TTL")) {
    throw new ConfigError(
      `WRITER_LOCK_TTL=${quote(r.value("WRITER_LOCK_TTL") as string)} leaves a renewal ${formatMs(Math.floor(ttlMs / 3))}, not more than the Redis command timeout (${formatMs(timeoutMs)}, ${timeoutVar}) (expected a TTL above three times the command timeout, such as ${suggestedTtl}, or shorter REDIS_READ_TIMEOUT/REDIS_WRITE_TIMEOUT)`,
    );
  }
  throw new ConfigError(
    `${timeoutVar}=${quote(r.value(timeoutVar) ?? formatMs(timeoutMs))} is not below a third of WRITER_LOCK_TTL (${formatMs(ttlMs)}, the default), the time a lease renewal has (expected a command timeout below ${formatMs(Math.ceil(ttlMs / 3))}, or WRITER_LOCK_TTL above ${formatMs(timeoutMs * 3)})`,
  );
}

/** Values that must never reach a log line: the API key, every password, the TLS client key. */
function secretsOf(r: EnvReader, apiKey: string, redis: RedisConfig): string[] {
  const out = [apiKey];
  if (redis.password !== undefined) out.push(redis.password);
  // A password in a URL that REDIS_PASSWORD overrides is not in the config, but is in the environment.
  for (const name of ["REDIS_URL", "REDIS_ADDR"]) {
    const raw = r.value(name) ?? "";
    const span = passwordSpan(raw);
    if (typeof span !== "string") {
      const password = raw.slice(span[0], span[1]);
      out.push(password);
      try {
        out.push(decodeURIComponent(password));
      } catch {
        // not percent-encoded: the raw form is enough
      }
    }
  }
  if (redis.topology.kind === "sentinel" && redis.topology.sentinelPassword !== undefined) {
    out.push(redis.topology.sentinelPassword);
  }
  if (redis.tls?.key !== undefined) out.push(redis.tls.key);
  return [...new Set(out.filter((s) => s !== ""))];
}

/** The log format loadConfig would pick, without failing: how to print the error when loadConfig fails. */
export function logFormatOf(env: NodeJS.ProcessEnv, isTTY: boolean): LogFormat {
  const v = env.LOG_FORMAT?.trim().toLowerCase();
  return v === "json" || v === "pretty" ? v : isTTY ? "pretty" : "json";
}

// ---------------------------------------------------------------------------------------------------------------

export function loadConfig(env: NodeJS.ProcessEnv, opts: LoadConfigOptions = {}): Config {
  const r = new EnvReader(env, opts.readFile ?? ((path) => readFileSync(path, "utf8")));
  const warnings: string[] = [];
  checkUnknownVariables(env, warnings);

  const apiKey = loadApiKey(r);
  const apiUrl = loadApiUrl(r);
  const datastream = loadDatastreamUrl(r, apiUrl);
  const apiTimeoutMs = r.get("API_TIMEOUT", durationSchema(), 30_000);
  const apiKeyCheckIntervalMs = r.get(
    "API_KEY_CHECK_INTERVAL",
    durationSchema({ zeroMeans: "checking only at start-up" }),
    60_000,
  );

  // CACHE_TTL is a Redis expiry, not a timer: no timer cap.
  const cacheTtlMs = r.get("CACHE_TTL", durationSchema({ zeroMeans: "unlimited", timer: false }), 0);
  const cacheCleanupIntervalMs = r.get("CACHE_CLEANUP_INTERVAL", durationSchema({ zeroMeans: "disabled" }), 3_600_000);
  const versionRaw = r.raw("CACHE_VERSION");
  const cacheVersion =
    versionRaw === undefined
      ? undefined
      : r.parse(
          "CACHE_VERSION",
          versionRaw,
          keySchema("a key segment such as 4b54a537", {
            forbid: /[:*?[\]\\]/,
            why: "contains ':' or a glob character (*?[]\\)",
          }),
        );

  const logLevel = r.get("LOG_LEVEL", enumSchema<LogLevel>(["debug", "info", "warn", "error"], "a log level"), "info");
  const logFormat = r.get(
    "LOG_FORMAT",
    enumSchema<LogFormat>(["json", "pretty"], "a log format"),
    opts.isTTY ? "pretty" : "json",
  );
  const healthPort = r.get("HEALTH_PORT", integerSchema(1, 65535, "an integer from 1 to 65535 such as 8090"), 8090);

  const wsPingIntervalMs = r.get("WS_PING_INTERVAL", durationSchema(), 30_000);
  const wsPongWaitMs = r.get("WS_PONG_WAIT", durationSchema(), 40_000);
  if (wsPongWaitMs <= wsPingIntervalMs) {
    // Blame the variable that was set (the pong wait when both were).
    const ping = r.value("WS_PING_INTERVAL") ?? "30s";
    const pong = r.value("WS_PONG_WAIT") ?? "40s";
    throw new ConfigError(
      r.isSet("WS_PONG_WAIT")
        ? `WS_PONG_WAIT=${quote(pong)} is not longer than WS_PING_INTERVAL (${ping}) (expected a pong wait above the ping interval, such as 40s with 30s)`
        : `WS_PING_INTERVAL=${quote(ping)} is not shorter than WS_PONG_WAIT (${pong}, the default) (expected a ping interval below the pong wait, or WS_PONG_WAIT raised too)`,
    );
  }
  const datastreamMaxReconnectDelayMs = r.get("DATASTREAM_MAX_RECONNECT_DELAY", durationSchema(), 30_000);
  // Off by default, as the Go original: inflating costs CPU on every message, and CPU per message is what bounds
  // the replicator (docs/performance.md). Worth it only where the link to Schematic is slow or metered.
  const datastreamCompression = r.get("DATASTREAM_COMPRESSION", boolSchema, false);

  const cpus = opts.cpuCount ?? availableParallelism();
  const numWorkers = r.get("NUM_WORKERS", countSchema(4), Math.min(16, Math.max(2, cpus)));
  const batchSize = r.get("BATCH_SIZE", countSchema(5), 5);
  const batchTimeoutMs = r.get("BATCH_TIMEOUT", durationSchema(), 10);
  const companyChannelSize = r.get("COMPANY_CHANNEL_SIZE", countSchema(200), 200);
  const userChannelSize = r.get("USER_CHANNEL_SIZE", countSchema(200), 200);
  const flagsChannelSize = r.get("FLAGS_CHANNEL_SIZE", countSchema(50), 50);
  const circuitBreakerThreshold = r.get("CIRCUIT_BREAKER_THRESHOLD", countSchema(3), 3);
  const circuitBreakerTimeoutMs = r.get("CIRCUIT_BREAKER_TIMEOUT", durationSchema(), 15_000);

  const useAsyncLoading = r.get("USE_ASYNC_LOADING", boolSchema, false);
  const loader = {
    // Successive pages overlap (the loader proves that no row moved past it), so a page holds two rows at least.
    pageSize: r.get(
      "ASYNC_LOADER_PAGE_SIZE",
      integerSchema(2, Number.MAX_SAFE_INTEGER, "an integer ≥ 2 such as 100"),
      100,
    ),
    circuitBreakerThreshold: r.get("ASYNC_LOADER_CIRCUIT_BREAKER_THRESHOLD", countSchema(5), 5),
    circuitBreakerTimeoutMs: r.get("ASYNC_LOADER_CIRCUIT_BREAKER_TIMEOUT", durationSchema(), 30_000),
    maxConcurrentRequests: r.get("ASYNC_LOADER_MAX_CONCURRENT_REQUESTS", countSchema(5), 5),
    rateLimitRps: r.get(
      "ASYNC_LOADER_RATE_LIMIT_RPS",
      integerSchema(0, Number.MAX_SAFE_INTEGER, "an integer ≥ 0 such as 10, or 0 for unlimited"),
      10,
    ),
  };
  if (!useAsyncLoading && r.isSet("ASYNC_LOADER_MAX_CONCURRENT_REQUESTS")) {
    warnings.push(
      "ASYNC_LOADER_MAX_CONCURRENT_REQUESTS has no effect without USE_ASYNC_LOADING=true (pages are fetched one at a time)",
    );
  }

  const { redis, warnings: redisWarnings } = loadRedis(r);
  warnings.push(...redisWarnings);

  const writerLock = {
    disabled: r.get("WRITER_LOCK_DISABLED", boolSchema, false),
    key: redisKey(r, "WRITER_LOCK_KEY", `${redis.keyPrefix}datastream:writer_lock`),
    ttlMs: r.get("WRITER_LOCK_TTL", durationSchema(), 15_000),
  };
  if (writerLock.disabled) {
    for (const name of ["WRITER_LOCK_KEY", "WRITER_LOCK_TTL"]) {
      if (r.isSet(name)) warnings.push(`${name} has no effect with WRITER_LOCK_DISABLED=true`);
    }
  } else {
    checkLeaseTiming(r, writerLock.ttlMs, redis);
  }
  const replay = {
    disabled: r.get("REPLAY_DISABLED", boolSchema, false),
    cursorKey: redisKey(r, "REPLAY_CURSOR_KEY", `${redis.keyPrefix}datastream:replay_cursor`),
    flushIntervalMs: r.get("REPLAY_FLUSH_INTERVAL", durationSchema(), 5_000),
  };
  if (replay.disabled) {
    for (const name of ["REPLAY_CURSOR_KEY", "REPLAY_FLUSH_INTERVAL"]) {
      if (r.isSet(name)) warnings.push(`${name} has no effect with REPLAY_DISABLED=true`);
    }
  }

  const readyGracePeriodMs = r.get(
    "READY_GRACE_PERIOD",
    durationSchema({ zeroMeans: "503 as soon as the datastream drops" }),
    60_000,
  );
  const reconcileIntervalMs = r.get("RECONCILE_INTERVAL", durationSchema({ zeroMeans: "disabled" }), 6 * 3_600_000);
  const shutdownTimeoutMs = r.get("SHUTDOWN_TIMEOUT", durationSchema(), 30_000);
  const markerCheckIntervalMs = r.get("MARKER_CHECK_INTERVAL", durationSchema(), 5_000);

  const config: Config = {
    apiKey,
    apiUrl,
    datastreamUrl: datastream.url,
    datastreamUrlExplicit: datastream.explicit,
    apiTimeoutMs,
    apiKeyCheckIntervalMs,
    cacheTtlMs,
    cacheCleanupIntervalMs,
    logLevel,
    logFormat,
    healthPort,
    wsPingIntervalMs,
    wsPongWaitMs,
    datastreamMaxReconnectDelayMs,
    datastreamCompression,
    numWorkers,
    batchSize,
    batchTimeoutMs,
    companyChannelSize,
    userChannelSize,
    flagsChannelSize,
    circuitBreakerThreshold,
    circuitBreakerTimeoutMs,
    useAsyncLoading,
    loader,
    redis,
    writerLock,
    replay,
    readyGracePeriodMs,
    reconcileIntervalMs,
    shutdownTimeoutMs,
    markerCheckIntervalMs,
    warnings,
    secrets: secretsOf(r, apiKey, redis),
  };
  if (cacheVersion !== undefined) config.cacheVersion = cacheVersion;
  return config;
}

// ---------------------------------------------------------------------------------------------------------------

const HIDDEN = "(hidden)";

/**
 * The settings for the start-up log, without secrets: the API key and passwords become "(hidden)", TLS files
 * are reported as present, not by content, and URL passwords are hidden. `warnings` is left out: log each
 * at warn level.
 */
export function describeConfig(c: Config): Record<string, unknown> {
  const { apiKey: _apiKey, warnings: _warnings, secrets: _secrets, redis, ...rest } = c;
  const { password, tls, topology, ...redisRest } = redis;
  const shownTopology =
    topology.kind === "sentinel" && topology.sentinelPassword !== undefined
      ? { ...topology, sentinelPassword: HIDDEN }
      : topology;
  return {
    ...rest,
    apiKey: HIDDEN,
    apiUrl: redactUrl(c.apiUrl),
    datastreamUrl: redactUrl(c.datastreamUrl),
    redis: {
      ...redisRest,
      topology: shownTopology,
      password: password === undefined ? undefined : HIDDEN,
      tls:
        tls === undefined
          ? false
          : {
              ca: tls.ca !== undefined,
              cert: tls.cert !== undefined,
              key: tls.key !== undefined,
              serverName: tls.serverName,
            },
    },
  };
}
