/**
 * The local Schematic emulator (docs/design/emulator.md), for in-process use in tests and tools:
 *
 *   const emu = await startEmulator({ fixture: loadFixtureFile("examples/fixture.json") });
 *   // emu.url = "http://127.0.0.1:PORT": REST, /datastream and /_emulator/ on one origin
 *   await emu.close();
 *
 * The `schematic-emulator` program (src/cli/emulator.ts) is a thin wrapper around it.
 */
import type { Fixture } from "../model/wire.js";
import { parseFixture } from "./fixture.js";
import { EmulatorServer } from "./server.js";

export { applyChange, type Change, ChangeSet } from "./changes.js";
export { DatastreamHub } from "./datastream.js";
export { type FaultSettings, parseFaults } from "./faults.js";
export { FixtureError, loadFixtureFile, parseFixture } from "./fixture.js";
export { DEFAULT_GENERATE, type GenerateSpec, generateFixture, parseGenerateSpec } from "./generate.js";
export { parseStreamId } from "./replay.js";
export { EmulatorServer } from "./server.js";
export { EmulatorState } from "./state.js";

export interface StartEmulatorOptions {
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0: a free port. */
  port?: number;
  /** With it, REST and the datastream accept only this key; without, any non-empty key. */
  apiKey?: string;
  /** How many changes the replay log keeps (default 10000). */
  replayLog?: number;
  /** Initial data (default: empty). Validated as strictly as the SDK parses the stream, unless `trusted`. */
  fixture?: Fixture;
  /** The fixture is already validated (loadFixtureFile, parseFixture) or generated (generateFixture). */
  trusted?: boolean;
  /** After how long without reading a direct-mode client is no longer waited for (default 1000 ms). */
  deliveryTimeoutMs?: number;
}

export interface RunningEmulator {
  /** `http://HOST:PORT` (REST and admin; the SDK's basePath / the replicator's SCHEMATIC_API_URL). */
  url: string;
  /** `ws://HOST:PORT/datastream`. */
  wsUrl: string;
  host: string;
  port: number;
  server: EmulatorServer;
  close(): Promise<void>;
}

export function formatUrl(scheme: string, host: string, port: number): string {
  return `${scheme}://${host.includes(":") ? `[${host}]` : host}:${port}`;
}

export async function startEmulator(opts: StartEmulatorOptions = {}): Promise<RunningEmulator> {
  const host = opts.host ?? "127.0.0.1";
  const fixture = opts.fixture && !opts.trusted ? parseFixture(opts.fixture) : opts.fixture;
  const server = new EmulatorServer({
    apiKey: opts.apiKey,
    replayLog: opts.replayLog,
    fixture,
    deliveryTimeoutMs: opts.deliveryTimeoutMs,
  });
  const port = await server.listen(opts.port ?? 0, host);
  let closing: Promise<void> | undefined;
  return {
    url: formatUrl("http", host, port),
    wsUrl: `${formatUrl("ws", host, port)}/datastream`,
    host,
    port,
    server,
    close: () => {
      closing ??= server.close();
      return closing;
    },
  };
}
