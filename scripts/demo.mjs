#!/usr/bin/env node
// `npm run demo`: the whole product on one machine, without a Schematic account.
// Starts a private redis-server (unless REDIS_ADDR or REDIS_URL names one), the emulator with
// examples/fixture.json, and the replicator; waits until /ready says the data is in Redis; then evaluates a few
// flags through the official TypeScript SDK in replicator mode, reading only Redis. Ctrl-C stops everything.
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import sdk from "@schematichq/schematic-typescript-node";
import { createClient } from "redis";

const root = fileURLToPath(new URL("..", import.meta.url));
const children = [];
let stopping = false;

const say = (line) => process.stdout.write(`\x1b[1m[demo]\x1b[0m ${line}\n`);

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function start(name, command, args, env = {}) {
  const child = spawn(command, args, { cwd: root, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  children.push({ name, child });
  child.on("exit", (code, signal) => {
    if (!stopping) {
      say(`${name} exited unexpectedly (${signal ?? code}); stopping`);
      void shutdown(1);
    }
  });
  return child;
}

async function waitUntil(what, check, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await check()) return;
    } catch {}
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function shutdown(code) {
  if (stopping) return;
  stopping = true;
  say("stopping the replicator, the emulator and Redis…");
  for (const { child } of [...children].reverse()) {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await Promise.race([exited, new Promise((r) => setTimeout(r, 15_000))]);
    }
  }
  if (redisDir) rmSync(redisDir, { recursive: true, force: true });
  process.exit(code);
}
process.on("SIGINT", () => void shutdown(0));
process.on("SIGTERM", () => void shutdown(0));

let redisDir;

async function main() {
  // 1. Redis: the user's, or a private one that never touches anybody's data.
  let redisEnv = {};
  let redisUrl;
  if (process.env.REDIS_ADDR || process.env.REDIS_URL) {
    redisUrl = process.env.REDIS_URL ?? `redis://${process.env.REDIS_ADDR.replace(/^redis:\/\//, "")}`;
    say(`using the Redis you named: ${redisUrl.replace(/:[^:@/]*@/, ":***@")}`);
  } else {
    if (spawnSync("redis-server", ["--version"]).status !== 0) {
      say("redis-server is not installed. On Debian or Ubuntu: sudo apt-get install -y redis-server");
      say("(or point the demo at a Redis you run: REDIS_ADDR=host:6379 npm run demo)");
      process.exit(1);
    }
    const port = await freePort();
    redisDir = mkdtempSync(join(tmpdir(), "schematic-demo-redis-"));
    start("redis-server", "redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--dir", redisDir]);
    redisUrl = `redis://127.0.0.1:${port}`;
    redisEnv = { REDIS_ADDR: `127.0.0.1:${port}` };
    say(`started a private redis-server on 127.0.0.1:${port}`);
  }

  // 2. The emulator: a local Schematic with the example data set.
  const emulator = start("emulator", process.execPath, [
    "dist/cli/emulator.js",
    "--port",
    "0",
    "--fixture",
    "examples/fixture.json",
    "--api-key",
    "demo-key",
  ]);
  const emulatorUrl = await new Promise((resolve, reject) => {
    let buffer = "";
    emulator.stdout.on("data", (chunk) => {
      buffer += chunk;
      const m = /listening on (http:\/\/\S+)/.exec(buffer);
      if (m) resolve(m[1]);
    });
    emulator.stderr.on("data", (chunk) => process.stderr.write(chunk));
    emulator.once("exit", () => reject(new Error("the emulator did not start")));
  });
  say(`emulator (a local stand-in for Schematic) at ${emulatorUrl}`);

  // 3. The replicator.
  const healthPort = await freePort();
  const replicator = start("replicator", process.execPath, ["dist/cli/replicator.js"], {
    ...redisEnv,
    SCHEMATIC_API_KEY: "demo-key",
    SCHEMATIC_API_URL: emulatorUrl,
    HEALTH_PORT: String(healthPort),
    LOG_FORMAT: "json",
  });
  let lineBuffer = "";
  replicator.stdout.on("data", (chunk) => {
    lineBuffer += chunk;
    const lines = lineBuffer.split("\n");
    lineBuffer = lines.pop();
    for (const line of lines) {
      try {
        const entry = JSON.parse(line);
        if (entry.level !== "debug") say(`replicator: ${entry.msg}`);
      } catch {
        process.stdout.write(`${line}\n`);
      }
    }
  });
  replicator.stderr.on("data", (chunk) => process.stderr.write(chunk));
  const readyUrl = `http://127.0.0.1:${healthPort}/ready`;
  await waitUntil("the replicator to be ready", async () => (await fetch(readyUrl)).status === 200);
  const ready = await (await fetch(readyUrl)).json();
  say(`ready: ${readyUrl} answers 200, cache_version ${ready.cache_version}`);

  // 4. The official SDK in replicator mode: flags are evaluated from Redis only.
  const redis = createClient({ url: redisUrl });
  await redis.connect();
  const apiCalls = [];
  const client = new sdk.SchematicClient({
    apiKey: "demo-key",
    basePath: `${emulatorUrl}/no-api-fallback`,
    useDataStream: true,
    dataStream: { replicatorMode: true, redisClient: redis, replicatorHealthURL: readyUrl, replicatorHealthCheck: 1000 },
    logger: { debug() {}, info() {}, warn: (m) => apiCalls.push(m), error: (m) => apiCalls.push(m) },
    offline: false,
  });
  await waitUntil("the SDK to see the replicator", async () => client.dataStreamClient?.isConnected?.() ?? true, 15_000);
  const checks = [
    { flag: "advanced-reports", company: { domain: "acme.io" } },
    { flag: "advanced-reports", company: { domain: "globex.com" } },
    { flag: "beta-dashboard", company: { domain: "acme.io" }, user: { email: "alice@acme.io" } },
    { flag: "sso", company: { domain: "initech.com" } },
  ];
  say("evaluating flags through @schematichq/schematic-typescript-node in replicator mode:");
  for (const check of checks) {
    const value = await client.checkFlag({ company: check.company, user: check.user }, check.flag);
    const who = [check.company && JSON.stringify(check.company), check.user && JSON.stringify(check.user)]
      .filter(Boolean)
      .join(" + ");
    say(`  ${check.flag.padEnd(22)} ${who.padEnd(50)} → ${value}`);
  }
  await client.close?.();
  await redis.quit();
  say("the replicator keeps running; change data with the emulator's admin API, e.g.:");
  say(`  curl -X PUT ${emulatorUrl}/_emulator/flags/<key> -d @flag.json`);
  say("press Ctrl-C to stop everything.");
}

main().catch((err) => {
  say(`failed: ${err.message}`);
  void shutdown(1);
});
