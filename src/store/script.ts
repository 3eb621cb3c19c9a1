/**
 * A Lua script run by EVALSHA with its SHA-1 computed once; on NOSCRIPT (a restarted or failed-over server, a
 * SCRIPT FLUSH) it falls back to EVAL, which also puts the script back into the server's cache.
 */
import { createHash } from "node:crypto";
import type { Redis } from "ioredis";
import type { RedisClient } from "./connect.js";

export type ScriptArg = string | number | Buffer;

export class LuaScript {
  readonly sha: string;

  constructor(readonly source: string) {
    this.sha = createHash("sha1").update(source).digest("hex");
  }

  /** Runs the script; on a cluster it goes to the node of `keys[0]` (all keys must share a slot). */
  async run(client: RedisClient | Redis, keys: readonly string[], args: readonly ScriptArg[]): Promise<unknown> {
    try {
      return await client.evalsha(this.sha, keys.length, ...keys, ...args);
    } catch (err) {
      if (!isNoScript(err)) throw err;
      return await client.eval(this.source, keys.length, ...keys, ...args);
    }
  }
}

export function isNoScript(err: unknown): boolean {
  return err instanceof Error && err.message.startsWith("NOSCRIPT");
}
