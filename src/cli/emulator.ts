#!/usr/bin/env node
/**
 * `schematic-emulator`: a local stand-in for Schematic's API (listings, flag checks), event capture and
 * `/datastream` WebSocket, with an admin API under `/_emulator/` (docs/design/emulator.md). Exit codes: 0 on
 * SIGTERM/SIGINT, 2 on bad usage or a bad fixture (one line naming the file, the JSON path and the problem), 1 on
 * any other fatal error.
 */
import { FixtureError, loadFixtureFile } from "../emulator/fixture.js";
import { generateFixture, parseGenerateSpec } from "../emulator/generate.js";
import { formatUrl, startEmulator } from "../emulator/index.js";
import type { Fixture } from "../model/wire.js";
import { PACKAGE_VERSION } from "../version.js";

const USAGE = `Usage: schematic-emulator [--host 127.0.0.1] [--port 8080] [--fixture FILE | --generate SPEC]
                          [--api-key KEY] [--replay-log N]

A local Schematic for development and tests: REST (GET /companies, /companies/count, /users, /users/count;
POST /flags/{key}/check, /flags/check, /flags/check-bulk), event capture (POST /batch), the /datastream
WebSocket, and an admin API under /_emulator/ to change data, list captured events and inject faults.
Point an SDK's basePath and eventCaptureBaseURL at http://HOST:PORT.

Options:
  --host HOST         interface to listen on (default 127.0.0.1)
  --port PORT         port (default 8080; 0 picks a free port)
  --fixture FILE      load flags, companies and users from a fixture file ({"flags", "companies", "users"},
                      datastream wire shape); without --fixture or --generate the state is empty
  --generate SPEC     build a synthetic data set instead, e.g. companies=100000,users=100000,flags=200,seed=1;
                      rows=lean for smaller rows (REST rows of ~3.5 KB per company, ~1.1 KB per user,
                      instead of ~7.4 KB)
  --api-key KEY       accept only this X-Schematic-Api-Key (default: any non-empty key)
  --replay-log N      how many changes the replay log keeps (default 10000)
  -h, --help          show this help
  -v, --version       print the version

The first line on stdout is "schematic-emulator listening on http://HOST:PORT".
Exit status: 0 after SIGTERM/SIGINT, 2 for bad usage or a bad fixture, 1 for other errors.
`;

class UsageError extends Error {}

interface Args {
  host: string;
  port: number;
  fixture?: string;
  generate?: string;
  apiKey?: string;
  replayLog: number;
  help: boolean;
  version: boolean;
}

function parseIntArg(name: string, value: string, max: number): number {
  if (!/^\d+$/.test(value) || Number(value) > max) {
    throw new UsageError(`${name}: expected an integer from 0 to ${max}, got ${JSON.stringify(value)}`);
  }
  return Number(value);
}

function parseArgs(argv: string[]): Args {
  const args: Args = { host: "127.0.0.1", port: 8080, replayLog: 10_000, help: false, version: false };
  const seen = new Set<string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "-h" || arg === "--help") {
      args.help = true;
      continue;
    }
    if (arg === "-v" || arg === "--version") {
      args.version = true;
      continue;
    }
    const eq = arg.indexOf("=");
    const name = arg.startsWith("--") && eq > 0 ? arg.slice(0, eq) : arg;
    if (!["--host", "--port", "--fixture", "--generate", "--api-key", "--replay-log"].includes(name)) {
      throw new UsageError(`unknown argument ${JSON.stringify(arg)} (see --help)`);
    }
    let value: string;
    if (eq > 0 && arg.startsWith("--")) value = arg.slice(eq + 1);
    else {
      const next = argv[i + 1];
      if (next === undefined) throw new UsageError(`${name} needs a value`);
      value = next;
      i++;
    }
    if (seen.has(name)) throw new UsageError(`${name} given twice`);
    seen.add(name);
    switch (name) {
      case "--host":
        if (value === "") throw new UsageError("--host must not be empty");
        args.host = value;
        break;
      case "--port":
        args.port = parseIntArg(name, value, 65535);
        break;
      case "--fixture":
        if (value === "") throw new UsageError("--fixture must not be empty");
        args.fixture = value;
        break;
      case "--generate":
        args.generate = value;
        break;
      case "--api-key":
        if (value === "") throw new UsageError("--api-key must not be empty");
        args.apiKey = value;
        break;
      case "--replay-log":
        args.replayLog = parseIntArg(name, value, 100_000_000);
        break;
    }
  }
  if (args.fixture !== undefined && args.generate !== undefined) {
    throw new UsageError("--fixture and --generate cannot be used together");
  }
  return args;
}

/** One line, whatever the message holds. */
function oneLine(s: string): string {
  return s.replace(/\s*[\r\n]+\s*/g, " ");
}

async function main(argv: string[]): Promise<number> {
  let args: Args;
  let fixture: Fixture | undefined;
  try {
    args = parseArgs(argv);
    if (args.help) {
      process.stdout.write(USAGE);
      return 0;
    }
    if (args.version) {
      process.stdout.write(`${PACKAGE_VERSION}\n`);
      return 0;
    }
    if (args.fixture !== undefined) fixture = loadFixtureFile(args.fixture);
    else if (args.generate !== undefined) {
      let spec: ReturnType<typeof parseGenerateSpec>;
      try {
        spec = parseGenerateSpec(args.generate);
      } catch (err) {
        throw new UsageError((err as Error).message);
      }
      const t0 = performance.now();
      fixture = generateFixture(spec);
      process.stderr.write(
        `schematic-emulator: generated ${spec.companies} companies, ${spec.users} users and ${spec.flags} flags ` +
          `(seed ${spec.seed}, ${spec.rows} rows) in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`,
      );
    }
  } catch (err) {
    if (err instanceof FixtureError) {
      process.stderr.write(
        `schematic-emulator: bad fixture ${oneLine(err.file)} at ${oneLine(err.path)}: ${oneLine(err.reason)}\n`,
      );
      return 2;
    }
    if (err instanceof UsageError) {
      process.stderr.write(`schematic-emulator: ${oneLine(err.message)}\n`);
      return 2;
    }
    throw err;
  }

  const emu = await startEmulator({
    host: args.host,
    port: args.port,
    apiKey: args.apiKey,
    replayLog: args.replayLog,
    fixture,
    // loadFixtureFile validated it; generateFixture builds it in wire shape.
    trusted: true,
  });
  process.stdout.write(`schematic-emulator listening on ${formatUrl("http", args.host, emu.port)}\n`);
  return await new Promise<number>((resolve) => {
    const stop = () => {
      emu.close().then(
        () => resolve(0),
        () => resolve(0),
      );
    };
    process.once("SIGTERM", stop);
    process.once("SIGINT", stop);
  });
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`schematic-emulator: ${oneLine((err as Error).message)}\n`);
    process.exit(1);
  },
);
