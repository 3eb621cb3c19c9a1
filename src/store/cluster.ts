/**
 * Cluster routing helpers: the hash slot of a key (CRC16/XMODEM of the key, or of its `{hash tag}`, mod 16384)
 * and grouping of keys by the master that serves their slot, because a pipeline must stay on one node. Keys in this
 * project carry no hash tags, so a batch spreads over every master.
 */
import type { Cluster, Redis } from "ioredis";
import { clusterReady, scanNode } from "./connect.js";

const CRC16_TABLE = (() => {
  const table = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let crc = i << 8;
    for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    table[i] = crc;
  }
  return table;
})();

function crc16(bytes: Uint8Array, start: number, end: number): number {
  let crc = 0;
  for (let i = start; i < end; i++) crc = ((crc << 8) & 0xffff) ^ CRC16_TABLE[((crc >> 8) ^ bytes[i]!) & 0xff]!;
  return crc;
}

/** The cluster hash slot of `key` (0–16383), honouring `{hash tags}` like the server does. */
export function keySlot(key: string): number {
  const bytes = Buffer.from(key, "utf8");
  const open = bytes.indexOf(0x7b); // {
  if (open >= 0) {
    const close = bytes.indexOf(0x7d, open + 1); // }
    if (close > open + 1) return crc16(bytes, open + 1, close) & 16383;
  }
  return crc16(bytes, 0, bytes.length) & 16383;
}

/** `host:port`, as ioredis names a cluster node in `cluster.slots`. */
export function nodeKey(node: Redis): string {
  return `${node.options.host}:${node.options.port}`;
}

/**
 * Groups items by the master serving each key's slot (from the client's last slots refresh), keeping their order
 * inside a group, with that master's connection. Items whose slot has no known master (before the first refresh,
 * or a slot no node serves) form one group with `node` undefined: the caller sends those through the cluster
 * client, which waits for the slot map and follows redirects.
 */
export function groupByMaster<T>(
  cluster: Cluster,
  items: readonly T[],
  keyOf: (item: T) => string,
): { node: Redis | undefined; items: T[] }[] {
  const byKey = new Map<string, Redis>();
  for (const node of cluster.nodes("master")) byKey.set(nodeKey(node), node);
  const groups = new Map<Redis | undefined, T[]>();
  for (const item of items) {
    const owner = cluster.slots[keySlot(keyOf(item))]?.[0];
    const node = owner === undefined ? undefined : byKey.get(owner);
    let group = groups.get(node);
    if (!group) {
      group = [];
      groups.set(node, group);
    }
    group.push(item);
  }
  return [...groups].map(([node, list]) => ({ node, items: list }));
}

/**
 * Every key matching `pattern` on every master of a Cluster, in batches, or an error when that cannot be vouched
 * for: the caller scans again. Masters come from a fresh slot map (the client's may predate a failover, and name a
 * node that has since restarted empty), each must say it is a master (ROLE) before it is scanned, and the slot map,
 * read again at the end, must not have changed: a failover or a resharding during the scan could hide keys from it.
 */
export async function* scanEveryMaster(cluster: Cluster, pattern: string, count = 1000): AsyncGenerator<string[]> {
  const before = await slotOwners(cluster);
  const byAddress = new Map(cluster.nodes("master").map((node) => [nodeKey(node), node]));
  for (const address of before.masters) {
    const node = byAddress.get(address);
    if (!node) throw new Error(`Redis master ${address} is not connected`);
    const role = (await node.call("ROLE")) as unknown[];
    if (role?.[0] !== "master") throw new Error(`Redis ${address} is no longer a master: the slot map changed`);
    yield* scanNode(node, pattern, count);
  }
  if ((await slotOwners(cluster)).map !== before.map)
    throw new Error("the Redis Cluster's slot map changed during a scan");
}

/** A fresh slot map, as text (`start-end=host:port` ranges), and the masters that serve it; every slot must be served. */
async function slotOwners(cluster: Cluster): Promise<{ map: string; masters: string[] }> {
  await clusterReady(cluster);
  await new Promise<void>((resolve, reject) => cluster.refreshSlotsCache((err) => (err ? reject(err) : resolve())));
  const ranges: string[] = [];
  const masters = new Set<string>();
  let start = 0;
  for (let slot = 0; slot <= 16384; slot++) {
    const owner = slot < 16384 ? cluster.slots[slot]?.[0] : undefined;
    if (slot < 16384 && owner === undefined) throw new Error(`no Redis master serves slot ${slot}`);
    if (slot === 16384 || owner !== cluster.slots[start]?.[0]) {
      ranges.push(`${start}-${slot - 1}=${cluster.slots[start]![0]}`);
      masters.add(cluster.slots[start]![0]!);
      start = slot;
    }
  }
  return { map: ranges.join(","), masters: [...masters] };
}
