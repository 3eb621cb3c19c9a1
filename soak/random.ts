/**
 * The soak's only source of randomness: a seeded generator (the emulator's mulberry32), forked into independent
 * streams by label, so that the workload and the fault schedule each depend on the seed alone — changing how faults
 * are drawn never changes the workload, and the reverse.
 */
import { prng } from "../src/emulator/faults.js";

export class Rand {
  private readonly next: () => number;

  constructor(readonly seed: number) {
    this.next = prng(seed);
  }

  /** An independent stream derived from this one's seed and `label`. */
  fork(label: string): Rand {
    let h = this.seed >>> 0;
    for (let i = 0; i < label.length; i++) h = Math.imul(h ^ label.charCodeAt(i), 0x01000193) >>> 0;
    return new Rand(h);
  }

  float(): number {
    return this.next();
  }

  /** An integer from `min` to `max`, both included. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error("pick from an empty list");
    return items[Math.floor(this.next() * items.length)]!;
  }

  /** One of the keys, with probability proportional to its weight (weights of 0 are never drawn). */
  weighted<K extends string>(weights: Partial<Record<K, number>>): K {
    const entries = Object.entries(weights).filter(([, w]) => (w as number) > 0) as [K, number][];
    const total = entries.reduce((sum, [, w]) => sum + w, 0);
    let r = this.next() * total;
    for (const [k, w] of entries) {
      r -= w;
      if (r < 0) return k;
    }
    return entries.at(-1)![0];
  }

  /** An exponentially distributed gap with the given mean (a Poisson process of events). */
  gap(meanMs: number): number {
    return Math.round(-Math.log(1 - this.next()) * meanMs);
  }
}
