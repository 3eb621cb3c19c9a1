/**
 * Cluster routing helpers: the hash slot of a key (CRC16/XMODEM of the key, or of its `{hash tag}`, mod 16384)
 * and grouping of keys by the node set that serves their slot, because an ioredis Cluster pipeline must stay on
 * one node. Keys in this project carry no hash tags, so a batch spreads over every master.
 */
import type { Cluster } from "ioredis";

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

/**
 * Groups item indexes by the node set serving each key's slot, keeping their order inside a group. Before the
 * first slots refresh everything lands in one group (the pipeline then waits for the cluster to be ready and
 * fails cleanly if the keys turn out to span nodes; the caller retries).
 */
export function groupBySlotOwner<T>(cluster: Cluster, items: readonly T[], keyOf: (item: T) => string): T[][] {
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const owners = cluster.slots[keySlot(keyOf(item))];
    const id = owners && owners.length > 0 ? owners.join(";") : "?";
    let group = groups.get(id);
    if (!group) {
      group = [];
      groups.set(id, group);
    }
    group.push(item);
  }
  return [...groups.values()];
}
