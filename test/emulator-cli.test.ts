/**
 * The `schematic-emulator` program as a child process: --help, the listening line, fixtures and --generate,
 * clean exit on SIGTERM/SIGINT, and exit 2 with one line for bad usage and bad fixtures.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { generateFixture, parseFixture } from "../src/emulator/index.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const CLI = join(ROOT, "src/cli/emulator.ts");
const FIXTURE = join(ROOT, "examples/fixture.json");

interface Finished {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function run(args: string[]): Promise<Finished> {
  const child = spawn(process.execPath, ["--import", "tsx", CLI, ...args], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  return finished(child);
}

function finished(child: ChildProcess): Promise<Finished> {
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => {
    stdout += d;
  });
  child.stderr!.on("data", (d) => {
    stderr += d;
  });
  return new Promise((resolve) => child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr })));
}

/** Programs started by `start`, killed after the suite even when a test failed half-way. */
const started: ChildProcess[] = [];

/** Starts the program and resolves with its URL once the first stdout line arrives. */
function start(
  args: string[],
): Promise<{ child: ChildProcess; url: string; firstLine: string; done: Promise<Finished> }> {
  const child = spawn(process.execPath, ["--import", "tsx", CLI, ...args], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  started.push(child);
  const done = finished(child);
  return new Promise((resolve, reject) => {
    let buf = "";
    const onData = (d: Buffer) => {
      buf += d.toString();
      const nl = buf.indexOf("\n");
      if (nl >= 0) {
        child.stdout!.off("data", onData);
        const firstLine = buf.slice(0, nl);
        const m = /^schematic-emulator listening on (http:\/\/\S+)$/.exec(firstLine);
        if (m) resolve({ child, url: m[1]!, firstLine, done });
        else reject(new Error(`unexpected first line ${JSON.stringify(firstLine)}`));
      }
    };
    child.stdout!.on("data", onData);
    done.then((f) => reject(new Error(`exited early (${f.code}): ${f.stderr}`)));
  });
}

async function state(url: string): Promise<Record<string, unknown>> {
  return (await (await fetch(`${url}/_emulator/state`)).json()) as Record<string, unknown>;
}

describe("schematic-emulator CLI", () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "emulator-cli-"));
  });
  after(() => {
    for (const child of started) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });

  const write = (name: string, content: unknown) => {
    const path = join(dir, name);
    writeFileSync(path, typeof content === "string" ? content : JSON.stringify(content, null, 2));
    return path;
  };

  test("--help prints the usage and exits 0", async () => {
    const r = await run(["--help"]);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^Usage: schematic-emulator/);
    for (const option of ["--host", "--port", "--fixture", "--generate", "--api-key", "--replay-log"]) {
      assert.ok(r.stdout.includes(option), option);
    }
  });

  test("serves a fixture on a free port; first stdout line is the listening line; SIGTERM exits 0", async () => {
    const emu = await start(["--port", "0", "--fixture", FIXTURE, "--replay-log", "5"]);
    assert.match(emu.firstLine, /^schematic-emulator listening on http:\/\/127\.0\.0\.1:\d+$/);
    const s = await state(emu.url);
    assert.equal(s.flags, 14);
    assert.equal(s.companies, 50);
    assert.equal(s.users, 100);
    assert.equal((s.replay_log as { capacity: number }).capacity, 5);
    emu.child.kill("SIGTERM");
    const f = await emu.done;
    assert.equal(f.code, 0);
    assert.equal(f.signal, null);
  });

  test("no fixture means empty state; --api-key guards REST; SIGINT exits 0", async () => {
    const emu = await start(["--port=0", "--host", "127.0.0.1", "--api-key", "s3cret"]);
    const s = await state(emu.url);
    assert.deepEqual([s.flags, s.companies, s.users], [0, 0, 0]);
    assert.equal(
      (await fetch(`${emu.url}/companies/count`, { headers: { "X-Schematic-Api-Key": "nope" } })).status,
      401,
    );
    const ok = await fetch(`${emu.url}/companies/count`, { headers: { "X-Schematic-Api-Key": "s3cret" } });
    assert.deepEqual(await ok.json(), { data: { count: 0 }, params: {} });
    emu.child.kill("SIGINT");
    assert.equal((await emu.done).code, 0);
  });

  test("--generate builds the synthetic data set, the same for the same seed", async () => {
    const emu = await start(["--port", "0", "--generate", "companies=300,users=200,flags=12,seed=5"]);
    const s = await state(emu.url);
    assert.deepEqual([s.companies, s.users, s.flags], [300, 200, 12]);
    const dump = parseFixture(await (await fetch(`${emu.url}/_emulator/dump`)).json());
    assert.deepEqual(dump, parseFixture(generateFixture({ companies: 300, users: 200, flags: 12, seed: 5 })));
    emu.child.kill("SIGTERM");
    assert.equal((await emu.done).code, 0);

    const lean = await start(["--port", "0", "--generate", "companies=30,users=20,flags=6,seed=5,rows=lean"]);
    const leanDump = parseFixture(await (await fetch(`${lean.url}/_emulator/dump`)).json());
    const expected = generateFixture({ companies: 30, users: 20, flags: 6, seed: 5, rows: "lean" });
    assert.deepEqual(leanDump, parseFixture(expected));
    assert.deepEqual(Object.keys(leanDump.users[0]!.keys), ["email"], "the lean shape, not the full one");
    lean.child.kill("SIGTERM");
    assert.equal((await lean.done).code, 0);
  });

  test("bad fixtures: exit 2 with one line naming the file, the JSON path and the problem", async () => {
    const base = JSON.parse(
      JSON.stringify({
        flags: [{ id: "flag_a", account_id: "a", environment_id: "e", key: "a", rules: [], default_value: false }],
        companies: [
          {
            id: "comp_1",
            account_id: "a",
            environment_id: "e",
            base_plan_id: null,
            billing_product_ids: [],
            credit_balances: {},
            keys: { domain: "one.example" },
            metrics: [],
            plan_ids: [],
            plan_version_ids: [],
            rules: [],
            subscription: null,
            traits: [],
          },
        ],
        users: [{ id: "user_1", account_id: "a", environment_id: "e", keys: { email: "a@b" }, traits: [], rules: [] }],
      }),
    );
    const variant = (mutate: (f: typeof base) => void) => {
      const f = structuredClone(base);
      mutate(f);
      return f;
    };
    const cases: [string, unknown, RegExp][] = [
      [
        "no-keys.json",
        variant((f) => (f.companies[0].keys = {})),
        /\$\.companies\[0\]\.keys: must have at least one key/,
      ],
      [
        "bad-rule.json",
        variant((f) =>
          f.flags[0].rules.push({
            id: "r",
            flag_id: null,
            account_id: "a",
            environment_id: "e",
            rule_type: "whenever",
            name: "n",
            priority: 1,
            conditions: [],
            condition_groups: [],
            value: true,
          }),
        ),
        /\$\.flags\[0\]\.rules\[0\]\.rule_type: unknown value "whenever"/,
      ],
      ["null-list.json", variant((f) => (f.users[0].traits = null)), /\$\.users\[0\]\.traits: must not be null/],
      [
        "dup-key.json",
        variant((f) => f.companies.push({ ...f.companies[0], id: "comp_2", keys: { domain: "ONE.example" } })),
        /\$\.companies\[1\]\.keys\.domain: .*already used by \$\.companies\[0\]/,
      ],
      [
        "dup-flag.json",
        variant((f) => f.flags.push({ ...f.flags[0], id: "flag_b", key: "A" })),
        /\$\.flags\[1\]\.key: duplicates/,
      ],
      ["not-array.json", { flags: {}, companies: [], users: [] }, /\$\.flags: expected an array/],
      ["typo.json", { flags: [], compnies: [] }, /\$\.compnies: unknown section/],
      ["syntax.json", '{"flags": [\n  {"id": }\n]}', /\$: invalid JSON/],
    ];
    // Independent processes: run them side by side.
    const results = await Promise.all(
      cases.map(async ([name, content]) => {
        const file = write(name, content);
        return { file, r: await run(["--port", "0", "--fixture", file]) };
      }),
    );
    cases.forEach(([name, , reason], i) => {
      const { file, r } = results[i]!;
      assert.equal(r.code, 2, `${name}: ${r.stderr}`);
      assert.equal(r.stdout, "");
      const lines = r.stderr.split("\n").filter((l) => l !== "");
      assert.equal(lines.length, 1, `${name}: one line, got ${JSON.stringify(r.stderr)}`);
      assert.ok(lines[0]!.includes(file), `${name}: names the file: ${lines[0]}`);
      assert.match(lines[0]!, reason);
    });
    const missing = await run(["--fixture", join(dir, "missing.json")]);
    assert.equal(missing.code, 2);
    assert.match(
      missing.stderr,
      /^schematic-emulator: bad fixture .*missing\.json at \$: cannot read the file \(ENOENT\)\n$/,
    );
  });

  test("bad usage: exit 2 with one line", async () => {
    const cases: [string[], RegExp][] = [
      [["--frobnicate"], /unknown argument "--frobnicate"/],
      [["--port", "http"], /--port: expected an integer/],
      [["--port", "70000"], /--port: expected an integer/],
      [["--port"], /--port needs a value/],
      [["--replay-log", "-1"], /--replay-log/],
      [["--api-key", ""], /--api-key must not be empty/],
      [["--fixture", FIXTURE, "--generate", "companies=1"], /cannot be used together/],
      [["--generate", "companies=many"], /--generate: bad item/],
      [["--generate", "companies=1,rows=tiny"], /--generate: bad item "rows=tiny"/],
      [["--port", "0", "--port", "1"], /given twice/],
    ];
    const results = await Promise.all(cases.map(([args]) => run(args)));
    cases.forEach(([args, reason], i) => {
      const r = results[i]!;
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      const lines = r.stderr.split("\n").filter((l) => l !== "");
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0]!, reason);
      assert.equal(r.stdout, "");
    });
  });
});
