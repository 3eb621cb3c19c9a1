/**
 * Structured logging: JSON lines (pino) by default, human-readable on a terminal. Errors go in the `err` field
 * (pino's convention), as a message string. Secrets (the API key, every Redis and Sentinel password, the TLS
 * client key: Config.secrets) are removed twice: known fields are redacted by path, and any occurrence of a
 * secret's value in a finished line is masked — as written and as JSON escapes it (a PEM key's line breaks
 * become `\n`) — so an error message that happens to quote one cannot leak it.
 */
import { Writable } from "node:stream";
import { type Logger, pino } from "pino";
import pretty from "pino-pretty";

export type { Logger } from "pino";

export interface LoggerOptions {
  level: string;
  format: "json" | "pretty";
  /** Values that must never appear in a log line. */
  secrets?: (string | undefined)[];
  /** Where lines go (default stdout, as is conventional for containers). */
  destination?: NodeJS.WritableStream;
  name?: string;
}

const REDACT_PATHS = [
  "apiKey",
  "password",
  "sentinelPassword",
  "*.apiKey",
  "*.password",
  "*.sentinelPassword",
  "tls.key",
  "*.tls.key",
  'headers["x-schematic-api-key"]',
  '*.headers["x-schematic-api-key"]',
];

export function createLogger(options: LoggerOptions): Logger {
  const given = (options.secrets ?? []).filter((s): s is string => typeof s === "string" && s.length >= 4);
  // Longest first, so that a secret containing another is masked whole.
  const secrets = [...new Set(given.flatMap((s) => [s, JSON.stringify(s).slice(1, -1)]))].sort(
    (a, b) => b.length - a.length,
  );
  const sink = options.destination ?? process.stdout;
  const masked = secrets.length === 0 ? sink : maskingStream(sink, secrets);
  const stream = options.format === "pretty" ? pretty({ destination: masked, sync: true, colorize: true }) : masked;
  return pino(
    {
      name: options.name,
      level: options.level,
      redact: { paths: REDACT_PATHS, censor: "[redacted]" },
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    stream as NodeJS.WritableStream & { write(chunk: string): boolean },
  );
}

function maskingStream(sink: NodeJS.WritableStream, secrets: string[]): Writable {
  return new Writable({
    write(chunk: Buffer | string, _enc, callback) {
      let line = chunk.toString();
      for (const secret of secrets) {
        if (line.includes(secret)) line = line.split(secret).join("[redacted]");
      }
      sink.write(line);
      callback();
    },
  });
}

/** A logger that drops everything, for library use and tests. */
export const silentLogger: Logger = pino({ level: "silent" });
