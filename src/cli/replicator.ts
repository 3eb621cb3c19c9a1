#!/usr/bin/env node
import { settingsHelp } from "../config/index.js";
import { PACKAGE_VERSION } from "../version.js";
/**
 * `schematic-replicator`: the service (default), plus `healthcheck`, `verify` and `snapshot` subcommands.
 * Exit codes: 0 clean shutdown, 1 fatal error, 2 invalid settings or usage, 3 API key rejected.
 */
import { runHealthcheck, runService } from "./service.js";
import { runSnapshot, runVerify } from "./tools.js";

const USAGE = `Usage: schematic-replicator [command]

Replicates Schematic flags, companies and users into Redis for the SDKs' replicator mode.

Commands:
  (none)                       run the replicator (configured by the environment variables below)
  healthcheck [--ready]        exit 0 if /health (with --ready: /ready) on HEALTH_PORT answers 200, else 1
                               (for container health checks and probes without curl)
  verify [--source api|URL|FILE]
                               compare Redis with the source; print missing/stale/extra keys
                               (exit 0 in sync, 1 drift, 2 could not run)
  snapshot export FILE         write the keyspace as a fixture file
  snapshot import FILE         write a fixture file into Redis (takes the writer lease)

Options:
  -h, --help                   show this help
  -v, --version                print the version

Exit status of the service: 0 clean shutdown (SIGTERM/SIGINT), 1 fatal error (Redis refused the password or
the TLS handshake at start-up, HEALTH_PORT taken), 2 invalid settings, 3 Schematic rejected the API key.

Settings (environment variables; durations in Go syntax such as 300ms, 45s, 1h30m; booleans true, false, 1, 0,
yes or no, any case; an invalid value stops start-up with exit status 2):
${settingsHelp()}`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case undefined:
    case "run":
      return runService();
    case "-h":
    case "--help":
    case "help":
      process.stdout.write(USAGE);
      return 0;
    case "-v":
    case "--version":
      process.stdout.write(`${PACKAGE_VERSION}\n`);
      return 0;
    case "healthcheck":
      return runHealthcheck(rest);
    case "verify":
      return runVerify(rest);
    case "snapshot":
      return runSnapshot(rest);
    default:
      process.stderr.write(`schematic-replicator: unknown command "${command}"\n\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`schematic-replicator: ${(err as Error).message}\n`);
    process.exit(1);
  },
);
