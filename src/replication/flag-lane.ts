/**
 * The flags lane: one ordered queue for the flags snapshot and single-flag changes. A snapshot replaces the whole
 * flag set (flags missing from it are deleted), except that an empty snapshot deletes nothing: with no flags at
 * all it is more likely a server fault than an environment that removed every flag (logged as a warning).
 */
import { parseFlag } from "../model/entities.js";
import type { Flag } from "../model/wire.js";
import type { KeyScheme } from "../store/keys.js";
import type { StoreWriter, WriteOp } from "../store/writer.js";
import type { Logger } from "../util/log.js";
import type { Tracked } from "./cursor.js";
import type { FlagJob } from "./jobs.js";
import { type RetryContext, StoppedError, withRetry } from "./retry.js";
import type { ReplicationStats } from "./stats.js";

export interface FlagLaneOptions {
  capacity: number;
  keys: KeyScheme;
  writer: StoreWriter;
  stats: ReplicationStats;
  log: Logger;
  retry: RetryContext;
  /** Every current-version flag key in Redis (scanned on every master). */
  listFlagKeys(): Promise<string[]>;
  complete(entry: Tracked): void;
  onSnapshotApplied(count: number): void;
  onProgress(): void;
  onFatal(err: unknown): void;
}

export class FlagLane {
  private queue: FlagJob[] = [];
  private wake: (() => void) | undefined;
  private running: Promise<void> | undefined;
  private busy = false;
  private stopped = false;

  constructor(private readonly o: FlagLaneOptions) {}

  get depth(): number {
    return this.queue.length;
  }
  get full(): boolean {
    return this.queue.length >= this.o.capacity;
  }
  get idle(): boolean {
    return this.queue.length === 0 && !this.busy;
  }

  push(job: FlagJob): void {
    this.queue.push(job);
    this.wake?.();
  }

  clear(): void {
    this.queue = [];
  }

  start(): void {
    this.running ??= this.loop().catch((err) => {
      if (!(err instanceof StoppedError)) this.o.onFatal(err);
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.running;
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      const job = this.queue.shift();
      if (!job) {
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
        this.wake = undefined;
        continue;
      }
      this.busy = true;
      try {
        if (job.type === "snapshot") await this.applySnapshot(job.flags);
        else await this.applyOne(job);
      } finally {
        this.busy = false;
      }
      this.o.onProgress();
    }
  }

  private parse(raw: unknown, where: string): Flag | undefined {
    try {
      return parseFlag(raw, "engine");
    } catch (err) {
      this.o.stats.skipped++;
      this.o.log.warn({ where, reason: (err as Error).message }, "skipping an invalid flag");
      return undefined;
    }
  }

  private async applySnapshot(rawFlags: unknown[]): Promise<void> {
    const { keys, writer, retry, log } = this.o;
    let ops: WriteOp[] = [];
    const written = new Set<string>();
    rawFlags.forEach((raw, i) => {
      const flag = this.parse(raw, `flags snapshot[${i}]`);
      if (!flag?.key) return;
      const value = JSON.stringify(flag);
      for (const key of keys.flagKeys(flag.key)) {
        written.add(key);
        ops.push({ op: "set", key, value });
      }
    });
    if (written.size === 0) {
      log.warn({ received: rawFlags.length }, "the flags snapshot is empty; keeping the flags already in Redis");
    } else {
      // Write only the flags that differ from Redis (a snapshot arrives on every connect and anti-entropy pass).
      const current = await withRetry("reading flags", retry, () => writer.readMany(ops.map((op) => op.key)));
      ops = ops.filter((op, i) => op.op !== "set" || current[i] !== op.value);
      const existing = await withRetry("listing flag keys", retry, () => this.o.listFlagKeys());
      for (const key of existing) if (!written.has(key)) ops.push({ op: "del", key });
    }
    if (ops.length) await withRetry("writing the flags snapshot", retry, () => writer.apply(ops));
    this.o.stats.countApplied("flags", "full");
    log.info({ flags: written.size, written: ops.length }, "flags snapshot applied");
    this.o.onSnapshotApplied(written.size);
  }

  private async applyOne(job: Exclude<FlagJob, { type: "snapshot" }>): Promise<void> {
    const { keys, writer, retry, stats } = this.o;
    let ops: WriteOp[] = [];
    if (job.type === "full") {
      const flag = this.parse(job.data, "flag");
      if (flag?.key) {
        const value = JSON.stringify(flag);
        ops = keys.flagKeys(flag.key).map((key) => ({ op: "set", key, value }));
      }
    } else {
      ops = await this.deleteOps(job.data);
    }
    if (ops.length) await withRetry("writing a flag", retry, () => writer.apply(ops));
    stats.countApplied("flag", job.type, "stream", job.streamTime);
    if (job.tracked) this.o.complete(job.tracked);
  }

  /** A delete names the flag by key; failing that, by id (found by reading the stored flags). */
  private async deleteOps(data: unknown): Promise<WriteOp[]> {
    const { key, id } = (data ?? {}) as { key?: unknown; id?: unknown };
    if (typeof key === "string" && key) return this.o.keys.flagKeys(key).map((k) => ({ op: "del", key: k }));
    if (typeof id !== "string" || !id) {
      this.o.stats.skipped++;
      this.o.log.warn({ reason: "a flag delete names neither key nor id" }, "skipping a flag delete");
      return [];
    }
    const { retry, writer } = this.o;
    const existing = await withRetry("listing flag keys", retry, () => this.o.listFlagKeys());
    const bodies = await withRetry("reading flags", retry, () => writer.readMany(existing));
    const index = bodies.findIndex((body) => {
      try {
        return body !== null && (JSON.parse(body) as { id?: unknown }).id === id;
      } catch {
        return false;
      }
    });
    return index >= 0 ? [{ op: "del", key: existing[index]! }] : [];
  }
}
