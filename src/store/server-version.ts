/**
 * The oldest Redis the replicator runs against: 6.0. The writer fence (writer.ts) rewrites another holder's lease
 * with `SET … KEEPTTL`, which older servers refuse inside the fence script; that would leave writes unfenced (or
 * every batch failing), so an older server is refused at start-up instead, with one line naming it.
 */
import type { Redis } from "ioredis";
import { serverAddress } from "./acks.js";

export const MIN_REDIS_VERSION = "6.0.0";

/** `redis_version` of an INFO reply, as numbers (`7.0.15` → [7, 0, 15]), or undefined when absent or garbled. */
export function parseRedisVersion(info: string): number[] | undefined {
  const m = /^redis_version:(\d+)\.(\d+)(?:\.(\d+))?/m.exec(info);
  if (!m) return undefined;
  return [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)];
}

/** True when `version` is at least {@link MIN_REDIS_VERSION}. */
export function supportedVersion(version: readonly number[]): boolean {
  const min = MIN_REDIS_VERSION.split(".").map(Number);
  for (let i = 0; i < min.length; i++) {
    const v = version[i] ?? 0;
    if (v !== min[i]) return v > min[i]!;
  }
  return true;
}

export interface ServerVersion {
  /** `host:port` of the server. */
  server: string;
  /** Parsed `redis_version`, undefined when the server does not report one (a Redis-compatible server may not). */
  version: number[] | undefined;
}

/** `INFO server` on every node, in parallel. Errors (a refused INFO included) propagate. */
export async function serverVersions(nodes: readonly Redis[]): Promise<ServerVersion[]> {
  return await Promise.all(
    nodes.map(async (node) => ({
      server: serverAddress(node),
      version: parseRedisVersion(String(await node.info("server"))),
    })),
  );
}

/** One line refusing the first server older than {@link MIN_REDIS_VERSION}, or undefined when every one will do. */
export function versionProblem(versions: readonly ServerVersion[]): string | undefined {
  const old = versions.find((v) => v.version !== undefined && !supportedVersion(v.version));
  if (!old) return undefined;
  return (
    `Redis at ${old.server} is version ${old.version!.join(".")}; schematic-replicator needs Redis ` +
    `${MIN_REDIS_VERSION.replace(/\.0$/, "")} or newer (the writer lease fence uses SET … KEEPTTL)`
  );
}
