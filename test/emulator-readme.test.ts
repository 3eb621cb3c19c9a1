/**
 * The README's "Use the emulator in your app's tests", run as written: the emulator started with the section's
 * command line (from src/ through tsx instead of the build's dist/, which the ops tests run; on a free port
 * instead of 8080), its JavaScript run as a Node module that prints what the `// false` / `// true` comments
 * say, and its shell commands run with curl against the same emulator.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { emulatorDump } from "./helpers/e2e.js";
import { ROOT } from "./ops-helpers.js";

const run = promisify(execFile);

/** The section's code blocks, in order, as [language, code]. */
function section(title: string): [string, string][] {
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  const start = readme.indexOf(`### ${title}\n`);
  assert.ok(start >= 0, `README has a section "${title}"`);
  const end = readme.indexOf("\n#", start + 4);
  const text = readme.slice(start, end < 0 ? undefined : end);
  return [...text.matchAll(/```(\w*)\n([\s\S]*?)```/g)].map((m) => [m[1]!, m[2]!]);
}

describe("README: use the emulator in your app's tests", () => {
  const blocks = section("Use the emulator in your app's tests");
  let dir: string;
  let emulator: ChildProcess;
  let url: string;

  before(async () => {
    assert.deepEqual(
      blocks.map(([lang]) => lang),
      ["bash", "js", "bash"],
    );
    dir = mkdtempSync(join(tmpdir(), "emulator-readme-"));
    symlinkSync(join(ROOT, "node_modules"), join(dir, "node_modules"), "dir");
    const line = blocks[0]![1].split("\n").find((l) => l.startsWith("node dist/cli/emulator.js"));
    assert.ok(line, "the section starts the emulator");
    const args = line.replace(/\s*&$/, "").split(/\s+/).slice(2);
    assert.equal(args[args.indexOf("--port") + 1], "8080");
    args[args.indexOf("--port") + 1] = "0";
    emulator = spawn(process.execPath, ["--import", "tsx", join(ROOT, "src/cli/emulator.ts"), ...args], {
      cwd: ROOT,
      stdio: ["ignore", "pipe", "inherit"],
    });
    url = await new Promise<string>((resolve, reject) => {
      emulator.stdout!.once("data", (d: Buffer) => {
        const m = /^schematic-emulator listening on (http:\/\/\S+)/.exec(d.toString());
        if (m) resolve(m[1]!);
        else reject(new Error(`unexpected first line: ${d}`));
      });
      emulator.once("exit", (code) => reject(new Error(`the emulator exited with ${code}`)));
    });
  });

  after(() => {
    emulator?.kill("SIGTERM");
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("the JavaScript prints what its comments say, and the admin change took effect", async () => {
    const code = blocks[1]![1];
    const said = [...code.matchAll(/console\.log\(.*\); \/\/ (\w+)/g)].map((m) => m[1]);
    assert.deepEqual(said, ["false", "true"]);
    const file = join(dir, "app-test.mjs");
    writeFileSync(file, code.replaceAll("http://127.0.0.1:8080", url));
    const { stdout } = await run(process.execPath, [file], { cwd: dir, timeout: 60_000 });
    assert.deepEqual(stdout.trim().split("\n"), said);
  });

  test("the shell commands work: the events list, then an admin change", async () => {
    const lines = blocks[2]![1].split("\n").filter((l) => l.startsWith("curl "));
    assert.equal(lines.length, 2);
    const host = url.replace("http://", "").replace("127.0.0.1", "localhost");
    const curl = async (line: string) =>
      (await run("sh", ["-c", line.replace(/\s+#.*$/, "").replaceAll("localhost:8080", host)])).stdout;
    const listed = JSON.parse(await curl(lines[0]!)) as { events: unknown[]; count: number };
    assert.equal(typeof listed.count, "number");
    assert.ok(Array.isArray(listed.events));
    const deleted = JSON.parse(await curl(lines[1]!)) as { stream_id?: string };
    assert.match(deleted.stream_id ?? "", /^\d+-\d+$/);
    assert.ok(!(await emulatorDump(url)).flags.some((f) => f.key === "sso"), "the flag is gone");
  });
});
