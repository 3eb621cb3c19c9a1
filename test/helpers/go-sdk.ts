/**
 * Builds and runs test/go `sdkcheck`: a small Go program that evaluates flags with Schematic's official Go SDK
 * (github.com/schematichq/schematic-go) in replicator mode against a Redis the test filled. It proves the real SDK
 * reads our keyspace, not just our own reading of its code. See test/go/main.go for the input and output format.
 *
 * The SDK's built-in fallback to the REST API is never silent: point `api_url` at a stub that fails. Every request
 * the SDK sent during a check is listed in the result's `api_calls` and makes its `error` non-empty. Flag checks go
 * to `POST {api_url}/flags/{key}/check`. The SDK also knows `POST {api_url}/batch` (event capture), but sdkcheck
 * never flushes events during a run.
 */
import { spawn } from "node:child_process";
import { accessSync, constants, mkdirSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const GO_DIR = fileURLToPath(new URL("../go/", import.meta.url));
const BIN = join(GO_DIR, "bin", "sdkcheck");
const BUILD_TIMEOUT_MS = 10 * 60_000; // a cold build compiles the whole SDK: about 70-100 s on 2 cores
const RUN_TIMEOUT_MS = 90_000;

export interface GoCheck {
  name: string;
  flag: string;
  company?: Record<string, string> | null;
  user?: Record<string, string> | null;
}

export interface GoCheckInput {
  /** `127.0.0.1:PORT` of a single-node Redis. */
  redis_addr: string;
  /** Seed nodes: use a Redis Cluster client instead of `redis_addr`. */
  redis_cluster_addrs?: string[];
  redis_password?: string;
  redis_db?: number;
  /** The replicator's `/ready` (or `/health`) URL; the SDK polls it every 250 ms for `cache_version`. */
  health_url: string;
  /** Base URL of the REST API stub. */
  api_url: string;
  /**
   * What to wait for (at most 30 s) before the checks: `ready` (default): the SDK learned a cache_version and saw
   * `ready: true`; `version`: a cache_version only (e.g. a 503 `/ready` during the initial load); `none`: nothing.
   */
  wait?: "ready" | "version" | "none";
  checks: GoCheck[];
}

export interface GoCheckResult {
  name: string;
  value: boolean;
  reason?: string;
  /** Set when the SDK did not evaluate from Redis alone (an API fallback) or returned an error. */
  error?: string;
  /** Requests the SDK sent to `api_url` during this check, e.g. `POST /flags/x/check`. */
  api_calls?: string[];
  flag_id?: string;
  company_id?: string;
  user_id?: string;
  rule_id?: string;
  rule_type?: string;
}

export interface GoCheckOutput {
  /** The SDK module and version the binary was built with. */
  sdk: string;
  /** The version segment the SDK learned from the health URL. */
  cache_version: string;
  ready: boolean;
  results: GoCheckResult[];
}

/** Thrown by buildGoChecker when the Go module proxy will not serve the SDK module (or one it needs). */
export class GoSdkUnavailableError extends Error {
  override name = "GoSdkUnavailableError";
}

let built: Promise<string> | undefined;

/**
 * Builds test/go/bin/sdkcheck once per process and returns its path. `SDKCHECK_BIN=/path/to/sdkcheck` skips the
 * build and uses that binary instead.
 */
export function buildGoChecker(): Promise<string> {
  built ??= build();
  return built;
}

async function build(): Promise<string> {
  const prebuilt = process.env.SDKCHECK_BIN;
  if (prebuilt) {
    try {
      accessSync(prebuilt, constants.X_OK);
    } catch {
      throw new Error(`SDKCHECK_BIN=${prebuilt} is not an executable file`);
    }
    return prebuilt;
  }

  try {
    await run("go", ["version"], { cwd: GO_DIR, timeoutMs: 30_000 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") {
      throw new Error("the Go toolchain is missing: `go` is not on PATH (Go >= 1.25 is needed to build test/go)");
    }
    throw err;
  }

  // Build to a private name, then rename: other test processes may be running bin/sdkcheck at this moment.
  mkdirSync(join(GO_DIR, "bin"), { recursive: true });
  const tmp = `${BIN}.${process.pid}.tmp`;
  const goflags = `${process.env.GOFLAGS ?? ""} -mod=mod`.trim();
  try {
    await run("go", ["build", "-o", tmp, "."], {
      cwd: GO_DIR,
      env: { ...process.env, GOFLAGS: goflags },
      timeoutMs: BUILD_TIMEOUT_MS,
    });
  } catch (err) {
    rmSync(tmp, { force: true });
    const message = err instanceof Error ? err.message : String(err);
    if (/schematichq\/schematic-[\w-]+@\S+: reading .*(403|404|410)/i.test(message)) {
      throw new GoSdkUnavailableError(
        `cannot build test/go: the Go module proxy does not serve the Schematic Go SDK (or a module it needs).\n${message}`,
      );
    }
    throw new Error(`go build in test/go failed:\n${message}`);
  }
  renameSync(tmp, BIN);
  return BIN;
}

/** Runs sdkcheck with one input and returns its parsed output. Rejects with its stderr if it fails. */
export async function runGoChecks(bin: string, input: GoCheckInput): Promise<GoCheckOutput> {
  const { stdout, stderr } = await run(bin, [], { stdin: JSON.stringify(input), timeoutMs: RUN_TIMEOUT_MS });
  try {
    return JSON.parse(stdout) as GoCheckOutput;
  } catch {
    throw new Error(`sdkcheck printed no JSON.\nstdout: ${stdout}\nstderr: ${stderr}`);
  }
}

interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  stdin?: string;
  timeoutMs: number;
}

function run(cmd: string, args: string[], options: RunOptions): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: options.cwd, env: options.env ?? process.env, stdio: "pipe" });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      stdout += chunk;
    });
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      stderr += chunk;
    });
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${cmd} ${args.join(" ")} timed out after ${options.timeoutMs} ms\nstderr: ${stderr}`));
    }, options.timeoutMs);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve({ stdout, stderr });
      else reject(new Error(`${cmd} ${args.join(" ")} exited with ${code ?? signal}\n${stderr}`));
    });
    child.stdin.on("error", () => {}); // the child may exit before reading all of stdin; "close" reports it
    child.stdin.end(options.stdin ?? "");
  });
}
