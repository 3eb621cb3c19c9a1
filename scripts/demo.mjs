#!/usr/bin/env node
// `npm run demo`: the whole product on one machine, without a Schematic account.
// Starts a private redis-server (unless REDIS_ADDR or REDIS_URL names one), the emulator with
// examples/fixture.json, and the replicator; waits until /ready says the data is in Redis; then evaluates a few
// flags through the official TypeScript SDK in replicator mode, reading only Redis. Ctrl-C stops everything.
//
// Output: every line starts with "[demo]"; each evaluation is printed as
//   [demo]   FLAG  CONTEXT  → true|false  (reason)
// and "[demo] press Ctrl-C to stop everything." ends the evaluations (scripts wait for it).
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

const tag = process.stdout.isTTY ? "\x1b[1m[demo]\x1b[0m" : "[demo]";
const say = (line) => process.stdout.write(`${tag} ${line}\n`);

// Settings of the user's shell that would point the demo's replicator elsewhere than the emulator.
const childEnv = { ...process.env };
for (const name of ["SCHEMATIC_API_KEY_FILE", "SCHEMATIC_DATASTREAM_URL", "HEALTH_PORT"]) delete childEnv[name];

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
  // Each child gets its own process group, so Ctrl-C (which signals the terminal's whole foreground group) reaches
  // only this script, which then stops the children one by one in order: the replicator first (it drains into
  // Redis), then the emulator, then Redis. A second signal to the replicator would make it exit without draining.
  const child = spawn(command, args, {
    cwd: root,
    env: { ...childEnv, ...env },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  children.push({ name, child });
  child.on("exit", (code, signal) => {
    if (stopping) return;
    say(`${name} exited unexpectedly (${signal ?? `exit code ${code}`}); stopping`);
    void shutdown(1);
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
  for (const { name, child } of [...children].reverse()) {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once("exit", () => r(true)));
      child.kill("SIGTERM");
      const stopped = await Promise.race([exited, new Promise((r) => setTimeout(() => r(false), 15_000))]);
      if (!stopped) {
        say(`${name} did not stop within 15 s; killing it`);
        child.kill("SIGKILL");
        await exited;
      }
    }
  }
  if (redisDir) rmSync(redisDir, { recursive: true, force: true });
  process.exit(code);
}
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) process.on(signal, () => void shutdown(0));
// Last resort (an unexpected crash of this script): never leave the children running.
process.on("exit", () => {
  for (const { child } of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
});

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
    const server = start("redis-server", "redis-server", [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
      "--dir",
      redisDir,
    ]);
    server.stdout.resume(); // its log is not shown; keep the pipe drained
    server.stderr.resume();
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

  // 4. The official SDK in replicator mode: flags are evaluated from Redis only. The API base path leads nowhere
  //    useful, so a fallback to the API (a flag missing from Redis) would show up as a wrong value and a warning.
  const redis = createClient({
    url: redisUrl,
    ...(process.env.REDIS_USERNAME ? { username: process.env.REDIS_USERNAME } : {}),
    ...(process.env.REDIS_PASSWORD ? { password: process.env.REDIS_PASSWORD } : {}),
  });
  redis.on("error", () => {});
  await redis.connect();
  const sdkWarnings = [];
  const client = new sdk.SchematicClient({
    apiKey: "demo-key",
    basePath: `${emulatorUrl}/no-api-fallback`,
    eventCaptureBaseURL: emulatorUrl,
    useDataStream: true,
    dataStream: {
      replicatorMode: true,
      redisClient: redis,
      ...(process.env.REDIS_KEY_PREFIX ? { redisKeyPrefix: process.env.REDIS_KEY_PREFIX } : {}),
      replicatorHealthURL: readyUrl,
      replicatorHealthCheck: 1000,
    },
    logger: { debug() {}, info() {}, warn: (m) => sdkWarnings.push(m), error: (m) => sdkWarnings.push(m) },
  });
  // The SDK learns the cache version from its first /ready poll (fired in the background at start-up).
  const datastream = client.datastreamClient;
  if (typeof datastream?.isReplicatorReady === "function") {
    await waitUntil("the SDK to see the replicator ready", () => datastream.isReplicatorReady(), 15_000);
  }
  // Contexts use the keys of examples/fixture.json; each line shows what the fixture's rules decide.
  const checks = [
    { flag: "dashboards", company: { domain: "acme.example" } }, // Pro plan: entitled
    { flag: "dashboards", company: { domain: "soylent.example" } }, // Free plan: not entitled
    { flag: "advanced-reports", company: { domain: "acme.example" } }, // Pro, 42 of 100 reports used
    { flag: "advanced-reports", company: { domain: "umbrella.example" } }, // Pro, 150 of 100: usage exceeded
    { flag: "advanced-reports", company: { domain: "globex.example" } }, // Starter, but a company override turns it on
    { flag: "eu-data-residency", company: { domain: "globex.example" } }, // trait region = eu
    { flag: "sso", company: { domain: "initech.example" } }, // SSO add-on plan
    { flag: "sso", company: { domain: "hooli.example" } }, // Enterprise, but a company override turns it off
    { flag: "internal-tools", company: { domain: "acme.example" }, user: { email: "alice@acme.example" } },
    { flag: "legacy-export", company: { domain: "soylent.example" } }, // global override beats the company's
  ];
  say("evaluating flags through @schematichq/schematic-typescript-node in replicator mode (reads Redis only):");
  for (const check of checks) {
    const result = await client.checkFlagWithEntitlement({ company: check.company, user: check.user }, check.flag);
    const who = [
      check.company && `company ${JSON.stringify(check.company)}`,
      check.user && `user ${JSON.stringify(check.user)}`,
    ]
      .filter(Boolean)
      .join(" + ");
    say(`  ${check.flag.padEnd(18)} ${who.padEnd(70)} → ${result.value}  (${result.reason})`);
  }
  await client.close();
  await redis.quit();
  for (const warning of sdkWarnings) say(`the SDK reported: ${warning}`);
  say("the replicator keeps running: change data with the emulator's admin API and watch Redis follow, e.g.:");
  say(`  curl -X PATCH ${emulatorUrl}/_emulator/companies/comp_soylent -d '{"plan_ids":["plan_pro"]}'`);
  if (redisDir) {
    // Only for the demo's own Redis: a URL the user named may hold a password.
    const key = `${process.env.REDIS_KEY_PREFIX || "schematic:"}company:${ready.cache_version}:comp_soylent`;
    say(`  redis-cli -u ${redisUrl} GET ${key}`);
  }
  say(`metrics: http://127.0.0.1:${healthPort}/metrics   status: http://127.0.0.1:${healthPort}/debug`);
  say("press Ctrl-C to stop everything.");
}

main().catch((err) => {
  say(`failed: ${err.message}`);
  void shutdown(1);
});
