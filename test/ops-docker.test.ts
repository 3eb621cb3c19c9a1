/**
 * The container packaging, checked without a Docker engine:
 *
 * - the Dockerfile is multi-stage (build with `npm ci && npm run build`, production-only dependencies), runs as a
 *   non-root user, sets HEALTH_PORT=8090 and EXPOSEs it, and its ENTRYPOINT and HEALTHCHECK name files that a
 *   plain build (`tsc -p tsconfig.build.json` into a temporary directory, the image's layout) produces;
 * - its base is a current LTS Node pinned by tag, the very version CI runs the suite on (.ci/run); the final stage
 *   has no npm, npx or corepack, and carries the OCI labels (version = package.json's, licence, base image);
 * - from that plain install: `node dist/cli/replicator.js --version` and `node dist/cli/emulator.js --help` work,
 *   the compiled code imports only Node built-ins and production dependencies (what `npm ci --omit=dev` installs),
 *   every `bin` entry exists, and the ENTRYPOINT without settings fails fast (exit 2, one line);
 * - docker-compose.yml wires the same programs as the tests would: its emulator command, its replicator settings
 *   (addresses swapped for local ones) and its healthcheck command, run from the plain install, bring a replicator
 *   to ready, which the HEALTHCHECK command then reports with exit 0.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { builtinModules } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { parse } from "yaml";
import { freePort, type RedisServer, startRedis, waitFor } from "./helpers/redis.js";
import { buildInto, ROOT, runNode } from "./ops-helpers.js";

const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as {
  version: string;
  license: string;
  bin: Record<string, string>;
  dependencies: Record<string, string>;
};

interface Instruction {
  op: string;
  args: string;
}

/** Dockerfile instructions, continuation lines joined, comments dropped. */
function instructions(text: string): Instruction[] {
  const joined = text.replace(/\\\r?\n/g, " ");
  return joined
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"))
    .map((l) => {
      const space = l.indexOf(" ");
      return { op: l.slice(0, space).toUpperCase(), args: l.slice(space + 1).trim() };
    });
}

interface ComposeService {
  entrypoint?: string[];
  command?: string[];
  environment?: Record<string, string>;
  healthcheck?: { test: string[] };
}

function composeService(text: string, name: string): ComposeService {
  const service = (parse(text) as { services: Record<string, ComposeService> }).services[name];
  assert.ok(service, `service ${name} in docker-compose.yml`);
  return service;
}

function jsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return jsFiles(path);
    return name.endsWith(".js") ? [path] : [];
  });
}

describe("container packaging", { timeout: 240_000 }, () => {
  let dir: string;
  const dockerfile = readFileSync(join(ROOT, "Dockerfile"), "utf8");
  const compose = readFileSync(join(ROOT, "docker-compose.yml"), "utf8");
  const steps = instructions(dockerfile);

  before(async () => {
    dir = await buildInto(mkdtempSync(join(tmpdir(), "ops-image-")));
  });

  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("the Dockerfile builds in a stage of its own and runs production files only, as a non-root user", () => {
    const froms = steps.filter((s) => s.op === "FROM").map((s) => s.args);
    assert.ok(froms.length >= 2, "multi-stage");
    assert.ok(froms.some((f) => / AS build$/i.test(f)));
    const image = /^ARG NODE_IMAGE=(\S+)$/m.exec(dockerfile)?.[1] ?? "";
    const pinned = /^node:((\d+)\.\d+\.\d+)-[a-z]+-slim$/.exec(image);
    assert.ok(pinned, `a Node image pinned by full version and Debian release: ${image}`);
    assert.ok(["22", "24"].includes(pinned[2]!), `a current LTS line: ${image}`);
    const ciNode = /^NODE_LTS=(\S+)/m.exec(readFileSync(join(ROOT, ".ci", "run"), "utf8"))?.[1];
    assert.equal(pinned[1], ciNode, "the image's Node is the one CI runs the suite on");
    const runs = steps.filter((s) => s.op === "RUN").map((s) => s.args);
    assert.ok(
      runs.some((r) => /^npm ci\b(?!.*--omit=dev)/.test(r)),
      "npm ci with dev dependencies to build",
    );
    assert.ok(runs.includes("npm run build"));
    assert.ok(
      runs.some((r) => /^npm ci --omit=dev\b/.test(r)),
      "production-only dependencies for the runtime",
    );

    const runtime = steps.slice(steps.map((s) => s.op).lastIndexOf("FROM"));
    const copies = runtime.filter((s) => s.op === "COPY").map((s) => s.args);
    assert.ok(
      copies.some((c) => /^--from=deps \/app\/node_modules /.test(c)),
      "production node_modules",
    );
    assert.ok(
      copies.some((c) => /^--from=build \/app\/dist /.test(c)),
      "compiled dist",
    );
    assert.ok(copies.includes("package.json ./"));
    assert.ok(copies.includes("examples ./examples"));
    assert.ok(!copies.some((c) => /\bsrc\b|\btest\b/.test(c)), "no sources or tests in the runtime image");

    // Node alone: the package managers of the base image are removed, and nothing after that needs them.
    const removal = runtime.findIndex((s) => s.op === "RUN" && /^rm -rf /.test(s.args));
    assert.ok(removal >= 0, "the final stage removes the package managers");
    const removed = runtime[removal]!.args.split(/\s+/);
    for (const path of ["/usr/local/bin/npm", "/usr/local/bin/npx", "/usr/local/bin/corepack"]) {
      assert.ok(removed.includes(path), `removes ${path}`);
    }
    for (const path of ["npm", "corepack"]) assert.ok(removed.includes(`/usr/local/lib/node_modules/${path}`), path);
    for (const step of runtime.slice(removal + 1)) {
      assert.ok(!(step.op === "RUN" && /\b(npm|npx|corepack|yarn)\b/.test(step.args)), `${step.op} ${step.args}`);
    }
    const labels = Object.fromEntries(
      runtime
        .filter((s) => s.op === "LABEL")
        .flatMap((s) => [...s.args.matchAll(/(\S+)="([^"]*)"/g)].map((m) => [m[1]!, m[2]!])),
    );
    const arg = (name: string) => runtime.find((s) => s.op === "ARG" && s.args.startsWith(`${name}=`))?.args;
    const oci = "org.opencontainers.image.";
    // biome-ignore lint/suspicious/noTemplateCurlyInString: the Dockerfile's build argument, not a template.
    assert.equal(labels[`${oci}version`], "${VERSION}");
    assert.equal(arg("VERSION"), `VERSION=${pkg.version}`, "the image version defaults to package.json's");
    assert.equal(labels[`${oci}licenses`], pkg.license);
    // biome-ignore lint/suspicious/noTemplateCurlyInString: the Dockerfile's build argument, not a template.
    assert.equal(labels[`${oci}base.name`], "docker.io/library/${NODE_IMAGE}");
    for (const key of ["title", "description", "revision", "created"]) assert.ok(labels[oci + key], `${oci}${key}`);

    const user = runtime.find((s) => s.op === "USER")?.args;
    assert.ok(user && !/^(root|0)(:|$)/.test(user), `non-root USER (${user})`);
    const env = runtime
      .filter((s) => s.op === "ENV")
      .map((s) => s.args)
      .join(" ");
    assert.match(env, /\bHEALTH_PORT=8090\b/);
    assert.ok(runtime.some((s) => s.op === "EXPOSE" && s.args === "8090"));

    // Every file the build stages COPY from the context exists, and .dockerignore does not exclude it.
    const ignored = readFileSync(join(ROOT, ".dockerignore"), "utf8")
      .split(/\r?\n/)
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith("#"));
    for (const entry of ["node_modules", "dist", ".git"]) assert.ok(ignored.includes(entry), `.dockerignore: ${entry}`);
    for (const c of steps.filter((s) => s.op === "COPY" && !s.args.startsWith("--from")).map((s) => s.args)) {
      for (const source of c.split(/\s+/).slice(0, -1)) {
        assert.ok(existsSync(join(ROOT, source)), `COPY ${source}`);
        assert.ok(!ignored.includes(source), `${source} is not excluded by .dockerignore`);
      }
    }
  });

  test("ENTRYPOINT and HEALTHCHECK name files of the plain build, and run from it", async () => {
    const entrypoint = JSON.parse(steps.find((s) => s.op === "ENTRYPOINT")!.args) as string[];
    assert.deepEqual(entrypoint, ["node", "dist/cli/replicator.js"]);
    const healthcheck = steps.find((s) => s.op === "HEALTHCHECK")!.args;
    const cmd = JSON.parse(/\bCMD (\[.*\])$/.exec(healthcheck)![1]!) as string[];
    assert.deepEqual(cmd, ["node", "dist/cli/replicator.js", "healthcheck"]);
    assert.ok(existsSync(join(dir, entrypoint[1]!)), `${entrypoint[1]} exists in the build`);

    const version = await runNode([entrypoint[1]!, "--version"], dir);
    assert.equal(version.code, 0, version.stderr);
    assert.equal(version.stdout, `${pkg.version}\n`);
    const emulatorHelp = await runNode(["dist/cli/emulator.js", "--help"], dir);
    assert.equal(emulatorHelp.code, 0, emulatorHelp.stderr);
    assert.match(emulatorHelp.stdout, /^Usage: schematic-emulator/);

    // A container started without settings stops at once with one line (a JSON record: logs are JSON off a terminal).
    const bare = await runNode([entrypoint[1]!], dir);
    assert.equal(bare.code, 2);
    assert.equal(bare.stderr.trim().split("\n").length, 1);
    const record = JSON.parse(bare.stderr) as Record<string, unknown>;
    assert.match(String(record.msg), /^invalid settings: SCHEMATIC_API_KEY is not set/);

    // The health check needs only HEALTH_PORT (the image's ENV): nothing listens, so it reports unhealthy.
    const unhealthy = await runNode(cmd.slice(1), dir, { HEALTH_PORT: String(await freePort()) });
    assert.equal(unhealthy.code, 1, unhealthy.stderr);

    for (const [name, path] of Object.entries(pkg.bin)) {
      assert.ok(existsSync(join(dir, path)), `bin ${name}: ${path}`);
      assert.match(readFileSync(join(dir, path), "utf8"), /^#!\/usr\/bin\/env node\n/, `bin ${name} has a shebang`);
    }
  });

  test("the compiled code imports only Node built-ins and production dependencies", () => {
    const allowed = new Set([...builtinModules, ...Object.keys(pkg.dependencies)]);
    const seen = new Set<string>();
    for (const file of jsFiles(join(dir, "dist"))) {
      const text = readFileSync(file, "utf8");
      for (const m of text.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)["']([^"'./][^"']*)["']/g)) {
        const spec = m[1]!.replace(/^node:/, "");
        const name = spec.startsWith("@") ? spec.split("/").slice(0, 2).join("/") : spec.split("/")[0]!;
        seen.add(name);
        assert.ok(
          allowed.has(name),
          `${file.slice(dir.length)} imports ${spec}, which npm ci --omit=dev does not install`,
        );
      }
    }
    assert.ok(seen.has("ioredis") && seen.has("ws"), "the scan found the real imports");
  });

  describe("docker-compose.yml, run from the plain install", () => {
    let redis: RedisServer;
    const children: ChildProcess[] = [];

    after(async () => {
      for (const child of children) {
        if (child.exitCode === null && child.signalCode === null) {
          const exited = new Promise((r) => child.once("exit", r));
          child.kill("SIGTERM");
          await exited;
        }
      }
      await redis?.stop();
    });

    test("the emulator's command and the replicator's settings bring a replicator to ready", async () => {
      const emulatorCfg = composeService(compose, "emulator");
      assert.deepEqual(emulatorCfg.entrypoint, ["node", "dist/cli/emulator.js"]);
      const command = emulatorCfg.command!;
      assert.ok(command.includes("examples/fixture.json"), "the emulator loads the example fixture");
      assert.equal(command[command.indexOf("--host") + 1], "0.0.0.0", "reachable from the other containers");
      const replicatorCfg = composeService(compose, "replicator");
      const env = replicatorCfg.environment!;
      assert.equal(env.REDIS_ADDR, "redis:6379");
      assert.equal(env.SCHEMATIC_API_URL, "http://emulator:8080");
      assert.equal(
        env.SCHEMATIC_API_KEY,
        command[command.indexOf("--api-key") + 1],
        "the replicator's key is the emulator's",
      );
      assert.deepEqual(replicatorCfg.healthcheck?.test, ["CMD", "node", "dist/cli/replicator.js", "healthcheck"]);
      assert.ok(composeService(compose, "redis").healthcheck?.test, "redis has a healthcheck");
      assert.ok(emulatorCfg.healthcheck?.test, "the emulator has a healthcheck");

      // The same programs and arguments, with local addresses instead of the compose network's.
      redis = await startRedis();
      const args = [...command];
      args[args.indexOf("--port") + 1] = "0";
      args[args.indexOf("--host") + 1] = "127.0.0.1";
      const emulator = spawn(process.execPath, [emulatorCfg.entrypoint![1]!, ...args], {
        cwd: dir,
        stdio: ["ignore", "pipe", "inherit"],
      });
      children.push(emulator);
      const emulatorUrl = await new Promise<string>((resolve, reject) => {
        let out = "";
        emulator.stdout!.on("data", (d) => {
          out += d;
          const m = /^schematic-emulator listening on (\S+)\n/.exec(out);
          if (m) resolve(m[1]!);
        });
        emulator.once("exit", (code) => reject(new Error(`the emulator exited with ${code}`)));
      });
      // The emulator's healthcheck command, pointed at its real port.
      const probe = emulatorCfg.healthcheck!.test.slice(1);
      const emulatorProbe = await runNode(
        probe.slice(1).map((a) => a.replace("http://127.0.0.1:8080", emulatorUrl)),
        dir,
      );
      assert.equal(emulatorProbe.code, 0, emulatorProbe.stderr);

      const healthPort = await freePort();
      const replicatorEnv = {
        ...env,
        REDIS_ADDR: redis.addr,
        SCHEMATIC_API_URL: emulatorUrl,
        HEALTH_PORT: String(healthPort),
      };
      const replicator = spawn(process.execPath, ["dist/cli/replicator.js"], {
        cwd: dir,
        env: { PATH: process.env.PATH ?? "", ...replicatorEnv },
        stdio: ["ignore", "ignore", "inherit"],
      });
      children.push(replicator);
      const healthcheck = ["dist/cli/replicator.js", "healthcheck"];
      await waitFor(async () => (await runNode(healthcheck, dir, { HEALTH_PORT: String(healthPort) })).code === 0, {
        timeoutMs: 60_000,
        intervalMs: 300,
        what: "the compose replicator's HEALTHCHECK to pass",
      });
      const exited = new Promise((r) => replicator.once("exit", r));
      replicator.kill("SIGTERM");
      assert.equal(await exited, 0, "SIGTERM (docker stop) exits 0");
    });
  });
});
