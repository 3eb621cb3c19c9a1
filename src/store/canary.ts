/**
 * Cluster canaries: how the writer notices that one master of a Redis Cluster lost its data (flushed, restarted
 * empty, or replaced by an empty replica), when the readiness marker lives on another master and so survives. The
 * design, and why it holds through failovers and reshardings, is in docs/design/cluster-data-loss.md. In short:
 *
 * - every master serves a few canary keys (`{prefix}datastream:canary:{ver}:{tag}`, no expiry), each in a slot that
 *   master owns: the {@link PER_MASTER} owned slots whose tags rank first in one fixed, topology-independent order;
 * - they are planted when a full load completes, and checked with the marker (MARKER_CHECK_INTERVAL);
 * - a canary known to exist that is gone means the master serving its slot lost its data: a full reload;
 * - canaries a master lacks (it gained slots, or slots of its canaries moved away) are planted: migrated slots carry
 *   their keys, so that master did not lose its data, and no reload is needed.
 *
 * Single node and Sentinel need none of this: one server holds every key, the marker included.
 */
import type { Cluster } from "ioredis";
import { keySlot } from "./cluster.js";
import type { KeyScheme } from "./keys.js";
import type { StoreWriter } from "./writer.js";

/** Canaries per master: several, so that a resharding rarely takes them all from a master (see the design note). */
export const PER_MASTER = 3;

const SLOTS = 16384;

let slotRanks: Int32Array | undefined;

/**
 * For each slot, the smallest n whose base-36 form hashes to it: its canary tag is `n.toString(36)`, and n is its
 * rank in the order that picks a master's canaries. Computed once (about 170,000 hashes).
 */
export function canaryRanks(): Int32Array {
  if (slotRanks) return slotRanks;
  const ranks = new Int32Array(SLOTS).fill(-1);
  let left = SLOTS;
  for (let n = 0; left > 0; n++) {
    const slot = keySlot(n.toString(36));
    if (ranks[slot] === -1) {
      ranks[slot] = n;
      left--;
    }
  }
  slotRanks = ranks;
  return ranks;
}

/**
 * The canary keys each master should serve, by master (`host:port`), from a slot map (`slots[slot][0]` is the
 * master serving the slot, as ioredis keeps it): the `perMaster` slots of that master with the smallest ranks. When
 * the key prefix carries a hash tag of its own, every key lives in one slot: one canary, on its master.
 */
export function canariesByMaster(
  slots: readonly (readonly string[] | undefined)[],
  keys: KeyScheme,
  perMaster = PER_MASTER,
): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const pinned = keySlot(keys.canary("0")) === keySlot(keys.canary("1"));
  if (pinned) {
    const master = slots[keySlot(keys.canary("0"))]?.[0];
    if (master) out.set(master, [keys.canary("0")]);
    return out;
  }
  const ranks = canaryRanks();
  const best = new Map<string, number[]>();
  for (let slot = 0; slot < SLOTS; slot++) {
    const master = slots[slot]?.[0];
    if (!master) continue;
    let list = best.get(master);
    if (!list) {
      list = [];
      best.set(master, list);
    }
    const rank = ranks[slot]!;
    if (list.length === perMaster && rank > list[perMaster - 1]!) continue;
    let at = list.length;
    while (at > 0 && list[at - 1]! > rank) at--;
    list.splice(at, 0, rank);
    if (list.length > perMaster) list.pop();
  }
  for (const [master, list] of best)
    out.set(
      master,
      list.map((rank) => keys.canary(rank.toString(36))),
    );
  return out;
}

/** The canaries of one writer tenure: create one per tenure (it starts knowing of no canary). */
export class ClusterCanaries {
  /** Canaries known to exist: planted by this tenure, or found by its first check. */
  private known = new Set<string>();

  constructor(
    private readonly cluster: Cluster,
    private readonly keys: KeyScheme,
    /** Written into each canary, for operators. */
    private readonly writerId: string,
  ) {}

  /** After a complete load, before the marker says `loaded`: every master's canaries, written afresh. */
  async plant(writer: StoreWriter): Promise<void> {
    const wanted = [...(await this.expected()).values()].flat();
    await this.write(writer, wanted);
    this.known = new Set(wanted);
  }

  /**
   * Undefined while every master still holds its data (planting the canaries a master lacks); otherwise one line
   * naming the masters whose canaries are gone. The first check of a tenure knows of no canary yet: a master with
   * none of its canaries counts as lost then, unless no master has any (a keyspace written before canaries existed,
   * or by `snapshot import`): the marker is trusted, as on a single node.
   */
  async check(writer: StoreWriter): Promise<string | undefined> {
    const expected = await this.expected();
    const probe = [...new Set([...this.known, ...[...expected.values()].flat()])];
    const values = await writer.readMany(probe);
    const present = new Set(probe.filter((_, i) => values[i] !== null));
    let gone: string[];
    if (this.known.size > 0) gone = [...this.known].filter((key) => !present.has(key));
    else if (present.size === 0) gone = [];
    else gone = [...expected.values()].filter((list) => !list.some((key) => present.has(key))).flat();
    if (gone.length > 0) return this.describeLoss(gone);
    const missing = [...expected.values()].flat().filter((key) => !present.has(key));
    await this.write(writer, missing);
    this.known = new Set([...present, ...missing]);
    return undefined;
  }

  /** The canaries each master should serve, from a fresh slot map (a resharding moves slots between masters). */
  private async expected(): Promise<Map<string, string[]>> {
    await new Promise<void>((resolve) => this.cluster.refreshSlotsCache(() => resolve()));
    return canariesByMaster(this.cluster.slots, this.keys);
  }

  private async write(writer: StoreWriter, keys: string[]): Promise<void> {
    if (keys.length === 0) return;
    const value = JSON.stringify({ writer: this.writerId, planted_at: new Date().toISOString() });
    await writer.apply(keys.map((key) => ({ op: "set", key, value, ttl: false })));
  }

  private describeLoss(gone: string[]): string {
    const masters = new Set(gone.map((key) => this.cluster.slots[keySlot(key)]?.[0] ?? "(no master)"));
    return `the canary keys of Redis master ${[...masters].join(", ")} are gone`;
  }
}
