/**
 * Where `schematic-replicator verify` gets the truth it compares Redis with (docs/design/decisions.md "verify and
 * snapshots"):
 *
 * - `api`: the configured Schematic API, read the way the replicator reads it — companies and users over REST
 *   (count, then `limit`/`offset` pages, mapped to rules-engine entities as the bulk load maps them) and the flags
 *   from one datastream session (the replicator's handshake headers, one Flags subscribe, the one
 *   `rulesengine.Flags` snapshot, close);
 * - an `http(s)://` URL answering a fixture document, such as an emulator's `/_emulator/dump`;
 * - a fixture file (the emulator's `--fixture` format, also what `snapshot export` writes).
 *
 * Every failure is a {@link SourceError} whose message is one line naming what could not be read and why.
 * Requests are retried a few times with backoff; a rejected API key is not retried.
 */
import WebSocket from "ws";
import { redactUrl } from "../config/load.js";
import type { Config } from "../config/types.js";
import { CLIENT_NAME } from "../datastream/protocol.js";
import { FixtureError, loadFixtureFile, parseFixture } from "../emulator/fixture.js";
import { parseRetryAfter } from "../loader/rest-client.js";
import { EntityError, parseFlag } from "../model/entities.js";
import { restCompanyToEngine, restUserToEngine } from "../model/rest.js";
import { ENTITY_TYPES, type Fixture } from "../model/wire.js";
import { sleep } from "../util/time.js";

/** The source could not be read; the message is one line. */
export class SourceError extends Error {
  override readonly name = "SourceError";
}

export type SourceSpec = { kind: "api" } | { kind: "url"; url: string } | { kind: "file"; path: string };

/** `api`, an http(s) URL, or anything else as a file path. */
export function parseSourceSpec(raw: string): SourceSpec {
  if (raw === "api") return { kind: "api" };
  if (/^https?:\/\//i.test(raw)) return { kind: "url", url: raw };
  return { kind: "file", path: raw };
}

export function describeSource(spec: SourceSpec, config?: Pick<Config, "apiUrl">): string {
  switch (spec.kind) {
    case "api":
      return config ? `api ${redactUrl(config.apiUrl)}` : "api";
    case "url":
      return `url ${redactUrl(spec.url)}`;
    case "file":
      return `file ${spec.path}`;
  }
}

export interface ApiSourceOptions {
  apiUrl: string;
  datastreamUrl: string;
  apiKey: string;
  /** Per request (and for the datastream snapshot). */
  timeoutMs: number;
  pageSize: number;
  /** Pages fetched at once (default 4). */
  concurrency?: number;
  clientVersion: string;
  /** Attempts per request (default 4). */
  attempts?: number;
  /** Called for transient problems worth telling the operator (a retry, an inconsistent listing). */
  warn?: (line: string) => void;
}

export interface LoadSourceOptions {
  /** Needed for `api`. */
  api?: ApiSourceOptions;
  /** Timeout for a URL source (default 30 s). */
  timeoutMs?: number;
}

export async function loadSource(spec: SourceSpec, opts: LoadSourceOptions = {}): Promise<Fixture> {
  switch (spec.kind) {
    case "file":
      try {
        return loadFixtureFile(spec.path);
      } catch (err) {
        if (err instanceof FixtureError) throw new SourceError(`${err.path}: ${err.reason}`);
        throw err;
      }
    case "url":
      return await loadUrl(spec.url, opts.timeoutMs ?? 30_000);
    case "api":
      if (!opts.api) throw new SourceError("the api source needs the API settings");
      return await loadApi(opts.api);
  }
}

async function loadUrl(url: string, timeoutMs: number): Promise<Fixture> {
  const shown = redactUrl(url);
  let text: string;
  try {
    const res = await fetch(url, { headers: { Accept: "application/json" }, signal: AbortSignal.timeout(timeoutMs) });
    text = await res.text();
    if (!res.ok) throw new SourceError(`GET ${shown} answered HTTP ${res.status}`);
  } catch (err) {
    if (err instanceof SourceError) throw err;
    throw new SourceError(`cannot fetch ${shown}: ${causeText(err)}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new SourceError(`${shown} did not answer JSON: ${(err as Error).message}`);
  }
  try {
    return parseFixture(raw);
  } catch (err) {
    if (err instanceof EntityError) throw new SourceError(`${shown}: ${err.path}: ${err.reason}`);
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The API: REST for companies and users, one datastream session for the flags.

async function loadApi(o: ApiSourceOptions): Promise<Fixture> {
  const [flags, companies, users] = await Promise.all([
    flagsSnapshot(o),
    listAll(o, "companies", restCompanyToEngine),
    listAll(o, "users", restUserToEngine),
  ]);
  return { flags, companies, users };
}

class AuthError extends SourceError {}

/** GET with a few retries (backoff, Retry-After honoured up to 10 s); 401/403 are final. */
async function restGet(o: ApiSourceOptions, path: string): Promise<unknown> {
  const attempts = Math.max(1, o.attempts ?? 4);
  let last = "";
  for (let attempt = 1; attempt <= attempts; attempt++) {
    let retryAfterMs: number | undefined;
    try {
      const res = await fetch(o.apiUrl + path, {
        headers: {
          "X-Schematic-Api-Key": o.apiKey,
          Accept: "application/json",
          "User-Agent": `${CLIENT_NAME}/${o.clientVersion} (verify)`,
        },
        signal: AbortSignal.timeout(o.timeoutMs),
      });
      if (res.status === 401 || res.status === 403) {
        await res.body?.cancel();
        throw new AuthError(`the Schematic API rejected the API key (HTTP ${res.status} on GET ${path})`);
      }
      if (!res.ok) {
        retryAfterMs = parseRetryAfter(res.headers.get("retry-after"));
        await res.body?.cancel();
        throw new Error(`HTTP ${res.status}`);
      }
      return await res.json();
    } catch (err) {
      if (err instanceof AuthError) throw err;
      last = causeText(err);
    }
    if (attempt < attempts) {
      const delay = Math.min(10_000, Math.max(retryAfterMs ?? 0, 250 * 2 ** (attempt - 1)));
      o.warn?.(`GET ${path} failed (${last}); retrying in ${delay} ms`);
      await sleep(delay);
    }
  }
  throw new SourceError(`cannot read GET ${redactUrl(o.apiUrl)}${path} after ${attempts} attempts: ${last}`);
}

async function listAll<T extends { id: string }>(
  o: ApiSourceOptions,
  kind: "companies" | "users",
  convert: (row: unknown) => T,
): Promise<T[]> {
  const concurrency = Math.max(1, o.concurrency ?? 4);
  const pageSize = Math.max(1, o.pageSize);
  let rows = new Map<string, T>();
  let count = 0;
  for (let pass = 1; pass <= 3; pass++) {
    const body = (await restGet(o, `/${kind}/count`)) as { data?: { count?: unknown } } | null;
    const c = body?.data?.count;
    if (typeof c !== "number" || !Number.isInteger(c) || c < 0) {
      throw new SourceError(`GET /${kind}/count answered no count`);
    }
    count = c;
    rows = new Map();
    let skipped = 0;
    // One page past the count, so rows added meanwhile are seen (and the listing's end is confirmed).
    const pages = Math.floor(count / pageSize) + 1;
    let next = 0;
    const worker = async () => {
      while (next < pages) {
        const offset = next++ * pageSize;
        const page = (await restGet(o, `/${kind}?limit=${pageSize}&offset=${offset}`)) as { data?: unknown } | null;
        if (!Array.isArray(page?.data)) throw new SourceError(`GET /${kind} answered no data array`);
        for (const row of page.data) {
          try {
            const entity = convert(row);
            rows.set(entity.id, entity);
          } catch {
            skipped++;
          }
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, pages) }, worker));
    if (skipped > 0)
      o.warn?.(`${skipped} ${kind} rows could not be read and were left out (the replicator skips them too)`);
    if (rows.size + skipped === count) break;
    o.warn?.(`${kind}: ${rows.size + skipped} rows listed but the count says ${count}; listing again`);
  }
  if (rows.size !== count) o.warn?.(`${kind}: comparing with the ${rows.size} rows listed (count ${count})`);
  return [...rows.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** One datastream session: the replicator's handshake, one Flags subscribe, the snapshot, close. */
async function flagsSnapshot(o: ApiSourceOptions): Promise<Fixture["flags"]> {
  const attempts = Math.max(1, o.attempts ?? 4);
  let last: SourceError | undefined;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    try {
      return await flagsSnapshotOnce(o);
    } catch (err) {
      if (err instanceof AuthError) throw err;
      last = err instanceof SourceError ? err : new SourceError(causeText(err));
    }
    if (attempt < attempts) {
      const delay = 250 * 2 ** (attempt - 1);
      o.warn?.(`datastream: ${last.message}; retrying in ${delay} ms`);
      await sleep(delay);
    }
  }
  throw new SourceError(`cannot read the flags from the datastream after ${attempts} attempts: ${last?.message}`);
}

function flagsSnapshotOnce(o: ApiSourceOptions): Promise<Fixture["flags"]> {
  const shown = redactUrl(o.datastreamUrl);
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(o.datastreamUrl, {
      headers: {
        "X-Schematic-Api-Key": o.apiKey,
        "X-Schematic-Datastream-Mode": "replicator",
        "X-Schematic-Client": CLIENT_NAME,
        "X-Schematic-Client-Version": o.clientVersion,
      },
      perMessageDeflate: false,
      handshakeTimeout: o.timeoutMs,
      maxPayload: 256 * 1024 * 1024,
    });
    let done = false;
    const timer = setTimeout(
      () => finish(new SourceError(`no flags snapshot from ${shown} within ${o.timeoutMs} ms`)),
      o.timeoutMs,
    );
    const finish = (result: Error | Fixture["flags"]) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (ws.readyState === WebSocket.OPEN) ws.close(1000, "verify done");
      else ws.terminate();
      if (result instanceof Error) reject(result);
      else resolve(result);
    };
    ws.on("unexpected-response", (_req, res) => {
      const status = res.statusCode ?? 0;
      res.resume();
      finish(
        status === 401 || status === 403
          ? new AuthError(`the datastream rejected the API key (HTTP ${status})`)
          : new SourceError(`the datastream upgrade at ${shown} was refused with HTTP ${status}`),
      );
    });
    ws.on("open", () => {
      ws.send(JSON.stringify({ data: { action: "start", entity_type: ENTITY_TYPES.flags } }));
    });
    ws.on("message", (data, isBinary) => {
      if (isBinary) return;
      let msg: { entity_type?: unknown; message_type?: unknown; data?: unknown };
      try {
        msg = JSON.parse(data.toString()) as typeof msg;
      } catch {
        return;
      }
      if (msg.entity_type !== ENTITY_TYPES.flags || msg.message_type !== "full") return;
      if (!Array.isArray(msg.data)) {
        finish(new SourceError("the datastream's flags snapshot is not an array"));
        return;
      }
      const flags: Fixture["flags"] = [];
      msg.data.forEach((raw, i) => {
        try {
          flags.push(parseFlag(raw, "engine", `flags[${i}]`));
        } catch (err) {
          o.warn?.(`skipping an invalid flag in the snapshot: ${(err as Error).message}`);
        }
      });
      finish(flags);
    });
    ws.on("close", (code, reason) => {
      if (code === 4001) finish(new AuthError(`the datastream rejected the API key (close 4001 ${reason.toString()})`));
      else finish(new SourceError(`the datastream at ${shown} closed (code ${code}) before sending the flags`));
    });
    ws.on("error", (err) => finish(new SourceError(`cannot connect to the datastream at ${shown}: ${causeText(err)}`)));
  });
}

/** The most telling text of a fetch/socket error (undici hides the cause: ECONNREFUSED, ENOTFOUND…). */
function causeText(err: unknown): string {
  const e = err as { message?: string; cause?: { code?: string; message?: string }; name?: string };
  if (e?.name === "TimeoutError") return "timed out";
  const cause = e?.cause;
  if (cause && (cause.code || cause.message)) return cause.code ?? cause.message ?? String(err);
  return e?.message ?? String(err);
}
