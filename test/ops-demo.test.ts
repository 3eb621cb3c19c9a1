/**
 * `npm run demo` (scripts/demo.mjs after a build), run for real from a plain install in a temporary directory (so
 * the project's own dist/ is never rebuilt under other tests): it starts its own redis-server, the emulator with
 * examples/fixture.json and the replicator; the flag values it prints through the official SDK in replicator mode
 * are the ones the fixture's rules give (worked out by hand, as in test/emulator-sdk.test.ts); and Ctrl-C (SIGINT
 * to its process group, as a terminal sends it) stops everything: the demo exits 0 and none of the processes it
 * started is left running.
 */
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { waitFor } from "./helpers/redis.js";
import { buildInto } from "./ops-helpers.js";

/** What the demo must print: flag, context, value (from the fixture's rules). */
const EXPECTED: [string, string, boolean][] = [
  ["dashboards", 'company {"domain":"acme.example"}', true], // Pro plan: "Starter and up" entitlement
  ["dashboards", 'company {"domain":"soylent.example"}', false], // Free plan: no rule matches
  ["advanced-reports", 'company {"domain":"acme.example"}', true], // Pro, 42 of 100 reports used
  ["advanced-reports", 'company {"domain":"umbrella.example"}', false], // Pro, 150 reports: usage exceeded
  ["advanced-reports", 'company {"domain":"globex.example"}', true], // Starter, but a company override
  ["eu-data-residency", 'company {"domain":"globex.example"}', true], // trait region = eu
  ["sso", 'company {"domain":"initech.example"}', true], // SSO add-on plan
  ["sso", 'company {"domain":"hooli.example"}', false], // Enterprise, company override off
  ["internal-tools", 'company {"domain":"acme.example"} + user {"email":"alice@acme.example"}', true], // staff user
  ["legacy-export", 'company {"domain":"soylent.example"}', false], // global override beats the company's
];

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Direct children of `pid` (pid and command line), from ps. */
function childrenOf(pid: number): { pid: number; command: string }[] {
  const out = execFileSync("ps", ["-eo", "pid=,ppid=,args="], { encoding: "utf8" });
  return out
    .split("\n")
    .map((l) => /^\s*(\d+)\s+(\d+)\s+(.*)$/.exec(l))
    .filter((m): m is RegExpExecArray => m !== null && Number(m[2]) === pid)
    .map((m) => ({ pid: Number(m[1]), command: m[3]! }));
}

describe("npm run demo", { timeout: 240_000 }, () => {
  let dir: string;

  before(async () => {
    dir = await buildInto(mkdtempSync(join(tmpdir(), "ops-demo-")), ["scripts/demo.mjs"]);
  });

  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("prints the fixture's values through the SDK, and Ctrl-C stops everything cleanly", async () => {
    // A user's shell settings must not leak in: no REDIS_ADDR/REDIS_URL, so the demo starts its own Redis.
    const demo = spawn(process.execPath, ["scripts/demo.mjs"], {
      cwd: dir,
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "" },
      stdio: ["ignore", "pipe", "pipe"],
      detached: true, // its own process group, like a shell job; SIGINT to the group is what Ctrl-C does
    });
    let out = "";
    let err = "";
    demo.stdout.on("data", (d) => {
      out += d;
    });
    demo.stderr.on("data", (d) => {
      err += d;
    });
    const exited = new Promise<number | null>((resolve) => demo.once("exit", (code) => resolve(code)));
    let started: { pid: number; command: string }[] = [];
    try {
      await waitFor(() => out.includes("[demo] press Ctrl-C to stop everything.") || demo.exitCode !== null, {
        timeoutMs: 120_000,
        what: "the demo's results",
      });
      assert.equal(demo.exitCode, null, `the demo exited early:\n${out}\n${err}`);

      const printed = [...out.matchAll(/^\[demo\] {3}(\S+) +(company .*?) +→ (true|false) {2}\((.*)\)$/gm)].map(
        (m) => [m[1]!, m[2]!, m[3] === "true"] as const,
      );
      assert.deepEqual(printed, EXPECTED, out);
      assert.doesNotMatch(out, /the SDK reported:/, "no SDK warnings (such as a fallback to the API)");
      assert.ok(!out.includes("\u001b["), "no terminal escapes when stdout is not a terminal");

      started = childrenOf(demo.pid!);
      const commands = started.map((c) => c.command).join("\n");
      assert.match(commands, /redis-server 127\.0\.0\.1:\d+/);
      assert.match(commands, /dist\/cli\/emulator\.js .*--fixture examples\/fixture\.json/);
      assert.match(commands, /dist\/cli\/replicator\.js/);
    } finally {
      if (demo.exitCode === null) process.kill(-demo.pid!, "SIGINT");
    }
    assert.equal(await exited, 0, `exit code after Ctrl-C:\n${out}\n${err}`);
    assert.match(out, /\[demo\] stopping the replicator, the emulator and Redis/);
    assert.match(out, /\[demo\] replicator: replicator stopped/, "the replicator shut down cleanly, not killed");
    for (const child of started) assert.ok(!alive(child.pid), `left running: ${child.pid} ${child.command}`);
  });
});
