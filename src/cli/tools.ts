/**
 * The operator tools of `schematic-replicator`:
 *
 *   verify [--source api|URL|FILE]   compare Redis with the source; one line per difference, then a summary.
 *                                     Exit 0 in sync, 1 drift, 2 could not run.
 *   snapshot export FILE              write the keyspace as a fixture file ("-" for stdout).
 *   snapshot import FILE [--wait D]   write a fixture file into Redis under the writer lease, then the marker.
 *                                     Exit 0 done, 1 failed (Redis, lease held by another writer), 2 bad usage,
 *                                     settings or fixture.
 *
 * Settings come from the environment exactly as the service reads them (loadConfig): REDIS_*, REDIS_KEY_PREFIX,
 * CACHE_VERSION (default: the bundled rules engine's key), CACHE_TTL, WRITER_LOCK_*, REPLAY_CURSOR_KEY, and for
 * `verify --source api` SCHEMATIC_API_KEY / SCHEMATIC_API_URL. The other commands do not need an API key.
 * Results go to stdout, problems to stderr, each as one line.
 */
import { once } from "node:events";
import { createWriteStream } from "node:fs";
import { rename } from "node:fs/promises";
import { ConfigError, loadConfig, parseGoDuration } from "../config/index.js";
import type { Config } from "../config/types.js";
import { FixtureError, loadFixtureFile } from "../emulator/fixture.js";
import { engineVersionKey } from "../model/engine-version.js";
import type { Fixture } from "../model/wire.js";
import { exportSnapshot, SnapshotError } from "../snapshot/export.js";
import { importSnapshot, LeaseBusyError } from "../snapshot/import.js";
import { createRedis, describeRedis, type RedisClient, RedisStartupError, waitForRedis } from "../store/connect.js";
import { KeyScheme } from "../store/keys.js";
import { readMarker } from "../store/marker.js";
import { LeaseLostError } from "../store/writer.js";
import { type Difference, diffRedis } from "../verify/diff.js";
import { describeSource, loadSource, parseSourceSpec, SourceError, type SourceSpec } from "../verify/source.js";
import { PACKAGE_VERSION } from "../version.js";

const VERIFY_USAGE = `Usage: schematic-replicator verify [--source api|URL|FILE]

Compares the current cache version's keys in Redis with a source of truth and prints one line per difference:
  missing KEY    the source has it, Redis does not
  stale KEY      Redis holds another value (or an expiry that CACHE_TTL does not call for)
  extra KEY      Redis has it, the source does not
then a summary line.

Sources:
  api            (default) the Schematic API in SCHEMATIC_API_URL with SCHEMATIC_API_KEY: companies and users
                 over REST, flags from one datastream session
  URL            an http(s) URL answering a fixture, e.g. http://127.0.0.1:8080/_emulator/dump
  FILE           a fixture file ({"flags", "companies", "users"}), e.g. one written by "snapshot export"

Redis, REDIS_KEY_PREFIX and CACHE_VERSION are read from the environment as the replicator reads them.
Exit status: 0 in sync, 1 differences found, 2 could not run (bad usage or settings, source or Redis unreachable).
`;

const SNAPSHOT_USAGE = `Usage: schematic-replicator snapshot export FILE
       schematic-replicator snapshot import FILE [--wait DURATION]

export   writes the current cache version's flags, companies and users from Redis as a fixture file
         (the format of schematic-emulator --fixture); FILE "-" writes to stdout.
import   validates FILE as strictly as the emulator does, takes the writer lease (waiting up to --wait,
         default WRITER_LOCK_TTL + 2s), writes every body and lookup key, removes keys of this cache version
         the snapshot does not have, clears the replay cursor, writes the readiness marker and releases the
         lease. Use it to bootstrap a Redis when the Schematic API cannot be reached; a replicator started
         afterwards serves this data and refreshes it from the API as soon as it can.

Settings (REDIS_*, REDIS_KEY_PREFIX, CACHE_VERSION, CACHE_TTL, WRITER_LOCK_*) come from the environment.
Exit status: 0 done, 1 failed (Redis unreachable, the lease held by a running replicator, data left out),
2 bad usage, settings or fixture.
`;

class UsageError extends Error {}

/** What a tool needs: validated settings, the key scheme and a connected Redis. */
interface ToolContext {
  config: Config;
  keys: KeyScheme;
  redis: RedisClient;
}

/** One line, whatever the message holds. */
function oneLine(s: string): string {
  return s.replace(/\s*[\r\n]+\s*/g, " ").trim();
}

function fail(tool: string, message: string): void {
  process.stderr.write(`schematic-replicator ${tool}: ${oneLine(message)}\n`);
}

/**
 * A reader that stops early (`verify | head`) closes the pipe: end quietly with `code` rather than with a stack
 * trace for the EPIPE.
 */
function exitOnClosedStdout(code: number): void {
  process.stdout.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(code);
    throw err;
  });
}

/** Resolves once everything written to stdout has been handed to the OS (process.exit follows). */
async function drainStdout(): Promise<void> {
  await new Promise<void>((resolve) => process.stdout.write("", () => resolve()));
}

/**
 * Settings as the service reads them. Commands that never talk to Schematic do not need an API key: when none is
 * configured, a placeholder satisfies the check (it is never sent anywhere).
 */
function toolSettings(tool: string, needsApiKey: boolean): Config | undefined {
  const env = process.env;
  const keyGiven = env.SCHEMATIC_API_KEY !== undefined || env.SCHEMATIC_API_KEY_FILE !== undefined;
  const source = needsApiKey || keyGiven ? env : { ...env, SCHEMATIC_API_KEY: "unused-by-this-command" };
  try {
    return loadConfig(source, { isTTY: process.stdout.isTTY === true });
  } catch (err) {
    if (err instanceof ConfigError) {
      fail(tool, `invalid settings: ${err.message}`);
      return undefined;
    }
    throw err;
  }
}

/** Connects to Redis (with the service's start-up retries); undefined after printing why not. */
async function connect(tool: string, config: Config): Promise<ToolContext | undefined> {
  const cacheVersion = config.cacheVersion ?? (await engineVersionKey());
  const keys = new KeyScheme(config.redis.keyPrefix, cacheVersion);
  const redis = createRedis(config.redis, { connectionName: `schematic-replicator-${tool}` });
  try {
    await waitForRedis(redis, config.redis);
  } catch (err) {
    redis.disconnect();
    fail(
      tool,
      err instanceof RedisStartupError
        ? err.message
        : `Redis at ${describeRedis(config.redis)}: ${(err as Error).message}`,
    );
    return undefined;
  }
  return { config, keys, redis };
}

async function close(ctx: ToolContext): Promise<void> {
  await ctx.redis.quit().catch(() => ctx.redis.disconnect());
}

// ---------------------------------------------------------------------------------------------------------------
// verify

function parseVerifyArgs(args: string[]): { source: SourceSpec; help: boolean } {
  let source: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "-h" || arg === "--help") return { source: { kind: "api" }, help: true };
    let value: string | undefined;
    if (arg === "--source") {
      value = args[++i];
      if (value === undefined) throw new UsageError("--source needs a value: api, a URL or a file");
    } else if (arg.startsWith("--source=")) {
      value = arg.slice("--source=".length);
    } else {
      throw new UsageError(`unknown argument ${JSON.stringify(arg)}`);
    }
    if (source !== undefined) throw new UsageError("--source given twice");
    if (value === "") throw new UsageError("--source must not be empty");
    source = value;
  }
  return { source: parseSourceSpec(source ?? "api"), help: false };
}

export async function runVerify(args: string[]): Promise<number> {
  const tool = "verify";
  let spec: SourceSpec;
  try {
    const parsed = parseVerifyArgs(args);
    if (parsed.help) {
      process.stdout.write(VERIFY_USAGE);
      return 0;
    }
    spec = parsed.source;
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    fail(tool, `${err.message} (see verify --help)`);
    return 2;
  }
  const config = toolSettings(tool, spec.kind === "api");
  if (!config) return 2;
  const ctx = await connect(tool, config);
  if (!ctx) return 2;
  exitOnClosedStdout(1); // only a long list of differences can outlast its reader
  try {
    let source: Awaited<ReturnType<typeof loadSource>>;
    try {
      source = await loadSource(spec, {
        timeoutMs: config.apiTimeoutMs,
        api: {
          apiUrl: config.apiUrl,
          datastreamUrl: config.datastreamUrl,
          apiKey: config.apiKey,
          timeoutMs: config.apiTimeoutMs,
          pageSize: config.loader.pageSize,
          concurrency: Math.min(8, config.loader.maxConcurrentRequests),
          clientVersion: PACKAGE_VERSION,
          warn: (line) => process.stderr.write(`schematic-replicator verify: ${oneLine(line)}\n`),
        },
      });
    } catch (err) {
      if (!(err instanceof SourceError)) throw err;
      fail(tool, `cannot read the source (${describeSource(spec, config)}): ${err.message}`);
      return 2;
    }
    let result: Awaited<ReturnType<typeof diffRedis>>;
    let markerState: string;
    try {
      result = await diffRedis(ctx.redis, ctx.keys, source, { expectTtl: config.cacheTtlMs > 0 });
      const marker = await readMarker(ctx.redis, ctx.keys);
      markerState = marker ? marker.state : "absent";
    } catch (err) {
      fail(tool, `reading Redis at ${describeRedis(config.redis)} failed: ${(err as Error).message}`);
      return 2;
    }
    const lines = result.differences.map(formatDifference);
    for (let i = 0; i < lines.length; i += 1000) process.stdout.write(`${lines.slice(i, i + 1000).join("\n")}\n`);
    const counts = { missing: 0, stale: 0, extra: 0 };
    for (const d of result.differences) counts[d.kind]++;
    const where =
      `${result.checked} keys checked against ${describeSource(spec, config)} ` +
      `(prefix ${JSON.stringify(ctx.keys.prefix)}, cache version ${ctx.keys.version}, marker ${markerState})`;
    const summary =
      result.differences.length === 0
        ? `in sync: ${where}`
        : `drift: ${result.differences.length} differences (${counts.missing} missing, ${counts.stale} stale, ` +
          `${counts.extra} extra); ${where}`;
    process.stdout.write(`${summary}\n`);
    await drainStdout();
    return result.differences.length === 0 ? 0 : 1;
  } finally {
    await close(ctx);
  }
}

function formatDifference(d: Difference): string {
  return d.detail ? `${d.kind} ${d.key} (${oneLine(d.detail)})` : `${d.kind} ${d.key}`;
}

// ---------------------------------------------------------------------------------------------------------------
// snapshot

interface SnapshotArgs {
  action: "export" | "import";
  file: string;
  waitMs?: number;
}

function parseSnapshotArgs(args: string[]): SnapshotArgs | "help" {
  if (args.includes("-h") || args.includes("--help")) return "help";
  const [action, ...rest] = args;
  if (action === undefined) throw new UsageError("expected export FILE or import FILE");
  if (action !== "export" && action !== "import") throw new UsageError(`unknown action ${JSON.stringify(action)}`);
  let file: string | undefined;
  let waitMs: number | undefined;
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i]!;
    if (action === "import" && (arg === "--wait" || arg.startsWith("--wait="))) {
      const value = arg === "--wait" ? rest[++i] : arg.slice("--wait=".length);
      if (value === undefined || value === "") throw new UsageError("--wait needs a duration such as 30s");
      try {
        waitMs = parseGoDuration(value);
      } catch {
        throw new UsageError(`--wait ${JSON.stringify(value)} is not a duration (expected Go syntax such as 30s)`);
      }
      if (waitMs < 0) throw new UsageError("--wait must not be negative");
      continue;
    }
    if (arg.startsWith("-") && arg !== "-") throw new UsageError(`unknown argument ${JSON.stringify(arg)}`);
    if (file !== undefined) throw new UsageError(`unexpected argument ${JSON.stringify(arg)}`);
    file = arg;
  }
  if (file === undefined || file === "") throw new UsageError(`snapshot ${action} needs a FILE`);
  if (action === "import" && file === "-") throw new UsageError("snapshot import reads a file, not stdin");
  return { action, file, ...(waitMs !== undefined ? { waitMs } : {}) };
}

export async function runSnapshot(args: string[]): Promise<number> {
  let parsed: SnapshotArgs | "help";
  try {
    parsed = parseSnapshotArgs(args);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    fail("snapshot", `${err.message} (see snapshot --help)`);
    return 2;
  }
  if (parsed === "help") {
    process.stdout.write(SNAPSHOT_USAGE);
    return 0;
  }
  return parsed.action === "export" ? await runExport(parsed.file) : await runImport(parsed.file, parsed.waitMs);
}

async function runExport(file: string): Promise<number> {
  const tool = "snapshot export";
  const config = toolSettings(tool, false);
  if (!config) return 2;
  const ctx = await connect(tool, config);
  if (!ctx) return 1;
  // With the document on stdout, the report goes to stderr.
  const report = (line: string) => (file === "-" ? process.stderr : process.stdout).write(`${line}\n`);
  exitOnClosedStdout(1); // the document was cut short
  try {
    let result: Awaited<ReturnType<typeof exportSnapshot>>;
    try {
      result = await exportSnapshot(ctx.redis, ctx.keys);
    } catch (err) {
      fail(tool, err instanceof SnapshotError ? err.message : `reading Redis failed: ${(err as Error).message}`);
      return 1;
    }
    try {
      if (file === "-") {
        await writeFixture(process.stdout, result.fixture);
      } else {
        // Written next to the target and renamed into place: a reader never sees half a file.
        const tmp = `${file}.tmp-${process.pid}`;
        const out = createWriteStream(tmp, { encoding: "utf8" });
        const failed = new Promise<never>((_, reject) => out.once("error", reject));
        await Promise.race([writeFixture(out, result.fixture), failed]);
        out.end();
        await Promise.race([once(out, "finish"), failed]);
        await rename(tmp, file);
      }
    } catch (err) {
      fail(tool, `cannot write ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      return 1;
    }
    for (const s of result.skipped) fail(tool, `left out ${s.key}: ${s.reason}`);
    const { flags, companies, users } = result.fixture;
    const marker = await readMarker(ctx.redis, ctx.keys).catch(() => null);
    report(
      `exported ${flags.length} flags, ${companies.length} companies and ${users.length} users ` +
        `(cache version ${ctx.keys.version}, marker ${marker?.state ?? "absent"}) to ${file === "-" ? "stdout" : file}`,
    );
    if (marker?.state !== "loaded") {
      fail(tool, "warning: the readiness marker does not say loaded: this Redis may not hold a complete data set");
    }
    await drainStdout();
    if (result.skipped.length > 0) {
      fail(tool, `${result.skipped.length} keys could not be exported (listed above): the snapshot is incomplete`);
      return 1;
    }
    return 0;
  } finally {
    await close(ctx);
  }
}

/**
 * The fixture document, one entity per line (diff-friendly, and never one giant string: an account with many
 * companies would exceed the longest string V8 can build).
 */
async function writeFixture(out: NodeJS.WritableStream, fixture: Fixture): Promise<void> {
  const write = async (chunk: string) => {
    if (!out.write(chunk)) await once(out, "drain");
  };
  await write("{\n");
  const sections = ["flags", "companies", "users"] as const;
  for (const [n, section] of sections.entries()) {
    const list: unknown[] = fixture[section];
    await write(`${JSON.stringify(section)}: [`);
    for (let i = 0; i < list.length; i++) await write(`${i === 0 ? "\n" : ",\n"}${JSON.stringify(list[i])}`);
    await write(`${list.length > 0 ? "\n" : ""}]${n < sections.length - 1 ? "," : ""}\n`);
  }
  await write("}\n");
}

async function runImport(file: string, waitMs: number | undefined): Promise<number> {
  const tool = "snapshot import";
  let fixture: ReturnType<typeof loadFixtureFile>;
  try {
    fixture = loadFixtureFile(file);
  } catch (err) {
    if (!(err instanceof FixtureError)) throw err;
    fail(tool, `bad fixture ${err.file} at ${err.path}: ${err.reason}`);
    return 2;
  }
  const config = toolSettings(tool, false);
  if (!config) return 2;
  const ctx = await connect(tool, config);
  if (!ctx) return 1;
  if (config.writerLock.disabled) {
    fail(tool, "warning: WRITER_LOCK_DISABLED=true: writing without the lease; make sure no replicator is writing");
  }
  try {
    const result = await importSnapshot(ctx.redis, fixture, {
      keys: ctx.keys,
      ttlMs: config.cacheTtlMs,
      lease: config.writerLock.disabled ? undefined : { key: config.writerLock.key, ttlMs: config.writerLock.ttlMs },
      ...(waitMs !== undefined ? { leaseWaitMs: waitMs } : {}),
      cursorKey: config.replay.cursorKey,
      info: (line) => process.stdout.write(`schematic-replicator ${tool}: ${line}\n`),
    });
    process.stdout.write(
      `imported ${result.flags} flags, ${result.companies} companies and ${result.users} users from ${file} ` +
        `(${result.written} keys written, ${result.removed} removed; cache version ${ctx.keys.version}; marker loaded)\n`,
    );
    await drainStdout();
    return 0;
  } catch (err) {
    if (err instanceof LeaseBusyError) fail(tool, err.message);
    else if (err instanceof LeaseLostError) {
      fail(
        tool,
        "lost the writer lease during the import (another writer took over): the import stopped part-way and the readiness marker does not say loaded",
      );
    } else fail(tool, `writing to Redis at ${describeRedis(config.redis)} failed: ${(err as Error).message}`);
    return 1;
  } finally {
    await close(ctx);
  }
}
