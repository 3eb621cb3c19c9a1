/**
 * Fixtures: `{"flags": [...], "companies": [...], "users": [...]}`, every element in the datastream wire shape,
 * validated as strictly as the SDK parses the stream; ids, flag keys and (key name, value) pairs unique.
 */
import { readFileSync } from "node:fs";
import { EntityError, parseCompany, parseFlag, parseUser } from "../model/entities.js";
import type { Fixture } from "../model/wire.js";

/** A fixture problem: `path` is the JSON path inside the document (`$` for the whole file). */
export class FixtureError extends Error {
  constructor(
    readonly file: string,
    readonly path: string,
    readonly reason: string,
  ) {
    super(`${file}: ${path}: ${reason}`);
    this.name = "FixtureError";
  }
}

const SECTIONS = ["flags", "companies", "users"] as const;

/** Validates a parsed fixture document; throws EntityError (path, reason) on the first problem. */
export function parseFixture(raw: unknown): Fixture {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new EntityError("$", 'expected an object {"flags": [...], "companies": [...], "users": [...]}');
  }
  const doc = raw as Record<string, unknown>;
  for (const k of Object.keys(doc)) {
    if (!(SECTIONS as readonly string[]).includes(k)) {
      throw new EntityError(`$.${k}`, `unknown section (expected ${SECTIONS.join(", ")})`);
    }
  }
  const list = (name: string): unknown[] => {
    const v = doc[name];
    if (v === undefined) return [];
    if (!Array.isArray(v)) throw new EntityError(`$.${name}`, "expected an array");
    return v;
  };
  const out: Fixture = { flags: [], companies: [], users: [] };

  const flagKeys = new Map<string, number>();
  const flagIds = new Map<string, number>();
  list("flags").forEach((f, i) => {
    const path = `$.flags[${i}]`;
    const flag = parseFlag(f, "wire", path);
    const sameKey = flagKeys.get(flag.key.toLowerCase());
    if (sameKey !== undefined)
      throw new EntityError(
        `${path}.key`,
        `duplicates the key of $.flags[${sameKey}] (flag keys are case-insensitive)`,
      );
    const sameId = flagIds.get(flag.id);
    if (sameId !== undefined) throw new EntityError(`${path}.id`, `duplicates the id of $.flags[${sameId}]`);
    flagKeys.set(flag.key.toLowerCase(), i);
    flagIds.set(flag.id, i);
    out.flags.push(flag);
  });

  for (const section of ["companies", "users"] as const) {
    const ids = new Map<string, number>();
    const pairs = new Map<string, number>();
    list(section).forEach((e, i) => {
      const path = `$.${section}[${i}]`;
      const entity = section === "companies" ? parseCompany(e, "wire", path) : parseUser(e, "wire", path);
      const sameId = ids.get(entity.id);
      if (sameId !== undefined) throw new EntityError(`${path}.id`, `duplicates the id of $.${section}[${sameId}]`);
      ids.set(entity.id, i);
      for (const [name, value] of Object.entries(entity.keys)) {
        const pair = `${name.toLowerCase()}\u0000${value.toLowerCase()}`;
        const owner = pairs.get(pair);
        if (owner !== undefined && owner !== i) {
          throw new EntityError(
            /^[A-Za-z_][A-Za-z0-9_]*$/.test(name) ? `${path}.keys.${name}` : `${path}.keys[${JSON.stringify(name)}]`,
            `(key ${JSON.stringify(name)}, value ${JSON.stringify(value)}) is already used by $.${section}[${owner}] (case-insensitive)`,
          );
        }
        pairs.set(pair, i);
      }
      if (section === "companies") out.companies.push(entity as Fixture["companies"][number]);
      else out.users.push(entity as Fixture["users"][number]);
    });
  }
  return out;
}

/** Byte offset → "line L, column C" for JSON syntax errors. */
function position(text: string, message: string): string {
  const m = /position (\d+)/.exec(message);
  if (!m) return "";
  const offset = Number(m[1]);
  let line = 1;
  let col = 1;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      col = 1;
    } else col++;
  }
  return ` (line ${line}, column ${col})`;
}

/** Reads and validates a fixture file; every problem is a FixtureError naming the file, JSON path and reason. */
export function loadFixtureFile(file: string): Fixture {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new FixtureError(file, "$", `cannot read the file (${e.code ?? e.message})`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    // Keep the report on one line: V8 quotes the offending text, newlines included.
    const message = (err as Error).message.replace(/\r?\n/g, "\\n");
    throw new FixtureError(file, "$", `invalid JSON: ${message}${position(text, message)}`);
  }
  try {
    return parseFixture(raw);
  } catch (err) {
    if (err instanceof EntityError) throw new FixtureError(file, err.path, err.reason);
    throw err;
  }
}
