/**
 * `snapshot export` (docs/design/decisions.md "verify and snapshots"): reads the current version's keyspace and turns
 * it into the fixture format (`{flags, companies, users}`, datastream wire shape) that `schematic-emulator --fixture`
 * and `snapshot import` load.
 *
 * - Flags come from the flag keys (a flag written under two spellings is taken once).
 * - Companies and users come from their id keys. Lookup keys are recognised by their value (a JSON string: the id)
 *   rather than by their name, since an id may itself contain `:`.
 * - Each body is read as the replicator stores it (rules-engine form) and must pass the emulator's strict wire
 *   validation; a body that cannot is left out and reported. The whole document is validated again at the end
 *   (unique ids, flag keys and key pairs), so what is written always loads.
 *
 * SCAN (never KEYS) on every master; values are read in batches.
 */
import { parseFixture } from "../emulator/fixture.js";
import { EntityError, parseCompany, parseFlag, parseUser } from "../model/entities.js";
import type { Company, Fixture, Flag, User } from "../model/wire.js";
import { connectedMasters, type RedisClient, scanNode } from "../store/connect.js";
import type { KeyScheme } from "../store/keys.js";
import { StoreWriter } from "../store/writer.js";

export interface SkippedKey {
  key: string;
  reason: string;
}

export interface ExportResult {
  fixture: Fixture;
  /** Keys whose values could not be exported (not JSON, or not a valid entity). */
  skipped: SkippedKey[];
  /** Lookup keys seen (not exported: they follow from each entity's `keys`). */
  lookups: number;
}

export class SnapshotError extends Error {
  override readonly name = "SnapshotError";
}

const READ_BATCH = 1000;

export async function exportSnapshot(client: RedisClient, keys: KeyScheme): Promise<ExportResult> {
  const reader = new StoreWriter(client, { ttlMs: 0 });
  const skipped: SkippedKey[] = [];
  let lookups = 0;

  const flags = new Map<string, Flag>();
  await eachValue(client, reader, keys.scanPattern("flags"), (key, raw) => {
    const value = parseJson(key, raw, skipped);
    const flag = value === undefined ? undefined : decode(key, value, skipped, (v) => toWire(v, parseFlag));
    if (!flag) return;
    if (!flag.key) {
      skipped.push({ key, reason: "the flag has an empty key" });
      return;
    }
    flags.set(flag.key.toLowerCase(), flag);
  });

  const entities = async <T extends Company | User>(
    kind: "company" | "user",
    parse: (raw: unknown, mode: "wire" | "engine", path?: string) => T,
  ): Promise<T[]> => {
    const out = new Map<string, T>();
    await eachValue(client, reader, keys.scanPattern(kind), (key, raw) => {
      const value = parseJson(key, raw, skipped);
      if (value === undefined) return;
      if (typeof value === "string") {
        lookups++;
        return;
      }
      const entity = decode(key, value, skipped, (v) => toWire(v, parse));
      if (!entity) return;
      if (key !== keys.entityId(kind, entity.id)) {
        skipped.push({ key, reason: `holds ${kind} ${JSON.stringify(entity.id)}, whose id key is another key` });
        return;
      }
      if (Object.keys(entity.keys).length === 0) return; // never cached by the replicator; nothing to export
      out.set(entity.id, entity);
    });
    return [...out.values()].sort((a, b) => compare(a.id, b.id));
  };

  const companies = await entities("company", parseCompany);
  const users = await entities("user", parseUser);
  const fixture: Fixture = {
    flags: [...flags.values()].sort((a, b) => compare(a.key, b.key)),
    companies,
    users,
  };
  try {
    parseFixture(fixture);
  } catch (err) {
    if (err instanceof EntityError) {
      throw new SnapshotError(`the exported data would not load as a fixture: ${err.path}: ${err.reason}`);
    }
    throw err;
  }
  return { fixture, skipped: skipped.sort((a, b) => compare(a.key, b.key)), lookups };
}

/**
 * A stored body in wire form: the engine parse fills what the engine lets writers leave out (absent lists `[]`,
 * absent nullables `null`), then the wire parse checks what the SDK's stream parser would require.
 */
function toWire<T>(value: unknown, parse: (raw: unknown, mode: "wire" | "engine", path?: string) => T): T {
  return parse(parse(value, "engine"), "wire");
}

function parseJson(key: string, raw: string, skipped: SkippedKey[]): unknown {
  try {
    return JSON.parse(raw) as unknown;
  } catch {
    skipped.push({ key, reason: "the value is not JSON" });
    return undefined;
  }
}

function decode<T>(key: string, value: unknown, skipped: SkippedKey[], convert: (value: unknown) => T): T | undefined {
  try {
    return convert(value);
  } catch (err) {
    skipped.push({ key, reason: err instanceof EntityError ? `${err.path}: ${err.reason}` : (err as Error).message });
    return undefined;
  }
}

/** SCANs `pattern` on every master and hands each key with its value (keys that vanished meanwhile are skipped). */
async function eachValue(
  client: RedisClient,
  reader: StoreWriter,
  pattern: string,
  each: (key: string, raw: string) => void,
): Promise<void> {
  for (const node of await connectedMasters(client)) {
    let pending: string[] = [];
    const flush = async () => {
      if (pending.length === 0) return;
      const batch = pending;
      pending = [];
      const values = await reader.readMany(batch);
      batch.forEach((key, i) => {
        const raw = values[i];
        if (typeof raw === "string") each(key, raw);
      });
    };
    for await (const page of scanNode(node, pattern)) {
      pending.push(...page);
      if (pending.length >= READ_BATCH) await flush();
    }
    await flush();
  }
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
