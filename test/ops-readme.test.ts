/**
 * The README as an operator follows it:
 *
 * - the "Against the emulator" walkthrough, run as written from a plain install (only its ports swapped for free
 *   ones; the shell runs each command): it starts its own Redis, the emulator and the replicator, and the
 *   replicator gets ready;
 * - its settings table is the one `--help` prints, generated from src/config/settings.ts.
 */
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { settingsMarkdown } from "../src/config/index.js";
import { spawnTracked, stopProcess } from "./helpers/procs.js";
import { freePort, waitFor } from "./helpers/redis.js";
import { buildInto, ROOT } from "./ops-helpers.js";

const README = readFileSync(join(ROOT, "README.md"), "utf8");

/** The shell commands of the first ```bash block after `heading`: continuation lines joined, comments dropped. */
function commandsAfter(heading: string): string[] {
  const section = README.slice(README.indexOf(heading));
  const block = /```bash\n([\s\S]*?)```/.exec(section)?.[1];
  assert.ok(block, `a bash block after ${heading}`);
  return block
    .replace(/\\\n\s*/g, "")
    .split("\n")
    .map((line) => line.replace(/\s+#.*$/, "").trim())
    .filter((line) => line !== "");
}

describe("the README", { timeout: 240_000 }, () => {
  let dir: string;

  before(async () => {
    dir = await buildInto(mkdtempSync(join(tmpdir(), "ops-readme-")));
  });

  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("the walkthrough against the emulator works as written", async () => {
    const commands = commandsAfter("### Against the emulator");
    assert.equal(commands[0], "npm ci && npm run build", "it starts from a fresh clone (done here by the test)");
    const [redisPort, emulatorPort, healthPort] = [await freePort(), await freePort(), await freePort()];
    const swap = (c: string) => c.replaceAll("6390", String(redisPort)).replaceAll("8080", String(emulatorPort));
    const started: ChildProcess[] = [];
    const output: string[] = [];
    try {
      for (const command of commands.slice(1)) {
        const shell = swap(command).replace(/\s*&$/, "");
        const child = spawnTracked("bash", ["-c", shell], {
          cwd: dir,
          env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", HEALTH_PORT: String(healthPort) },
          stdio: ["ignore", "pipe", "pipe"],
        });
        child.stdout?.on("data", (d) => output.push(String(d)));
        child.stderr?.on("data", (d) => output.push(String(d)));
        started.push(child);
      }
      assert.equal(started.length, 3, "Redis, the emulator, the replicator");
      await waitFor(
        async () => {
          for (const c of started) if (c.exitCode !== null) throw new Error(`a command exited:\n${output.join("")}`);
          const res = await fetch(`http://127.0.0.1:${healthPort}/ready`, { signal: AbortSignal.timeout(5000) });
          return res.status === 200;
        },
        { timeoutMs: 120_000, what: "the walkthrough's replicator to be ready" },
      );
    } finally {
      for (const c of started.reverse()) await stopProcess(c);
    }
  });

  test("its settings table is the one --help prints (npm run docs:settings rewrites it)", () => {
    const m = /<!-- settings:begin[^>]*-->\n([\s\S]*?)<!-- settings:end -->/.exec(README);
    assert.ok(m, "the README marks its settings table");
    assert.equal(m[1], settingsMarkdown());
  });
});
