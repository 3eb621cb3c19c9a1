/**
 * Gives the memory of a full load back to the system: see {@link startHeapCompaction}.
 */
import { performance } from "node:perf_hooks";
import { getHeapStatistics } from "node:v8";
import type { Logger } from "./log.js";

const MB = 1024 * 1024;

export interface HeapCompactionOptions {
  /** How often the heap is looked at (default 30 s). */
  checkIntervalMs?: number;
  /** How much the heap must have grown since the last compaction (default 64 MB). */
  growthBytes?: number;
  /** Event-loop utilisation over the last interval below which the process counts as idle (default 0.1). */
  quietUtilization?: number;
  /** Delay after a full load completes (default 1 s). */
  afterLoadMs?: number;
}

/**
 * Gives the memory of a full load back to the system (docs/performance.md, change 10). A load parses ~1.5 GB of
 * REST JSON; V8 keeps the old-space pages it grew for it (hundreds of MB, mostly empty) until its memory reducer
 * happens to run — after tens of seconds, or not for minutes — and an ordinary full GC frees the objects but not the
 * pages. The heap profiler's "collect garbage" runs V8's memory-reducing GC (it compacts, then releases the empty
 * pages), with no --expose-gc or other flag.
 *
 * It runs once after each full load completes, and whenever the heap has grown by `growthBytes` since the last
 * compaction (an anti-entropy pass, a flood) and the event loop was idle over the last check interval. It stops the
 * event loop while it copies the live heap (~0.1–0.3 s for tens of MB), so it never runs while the replicator is
 * busy. Returns the function that stops it.
 */
export function startHeapCompaction(
  events: Pick<NodeJS.EventEmitter, "on" | "off">,
  log: Pick<Logger, "info" | "debug">,
  options: HeapCompactionOptions = {},
): () => void {
  const checkIntervalMs = options.checkIntervalMs ?? 30_000;
  const growthBytes = options.growthBytes ?? 64 * MB;
  const quietUtilization = options.quietUtilization ?? 0.1;
  const heapSize = () => getHeapStatistics().total_heap_size;
  let baseline = heapSize();
  let running = false;
  let stopped = false;
  const compact = async (reason: string) => {
    if (running || stopped) return;
    running = true;
    const heapBefore = heapSize();
    const rssBefore = process.memoryUsage.rss();
    const started = performance.now();
    try {
      const { Session } = await import("node:inspector");
      const session = new Session();
      session.connect();
      try {
        await new Promise<void>((resolve, reject) =>
          session.post("HeapProfiler.collectGarbage", (err) => (err ? reject(err) : resolve())),
        );
      } finally {
        session.disconnect();
      }
    } catch (err) {
      // A Node built without the inspector: V8's memory reducer still gives the pages back, later.
      log.debug({ err: (err as Error).message }, "cannot compact the heap");
      stopped = true;
      return;
    } finally {
      running = false;
    }
    baseline = heapSize();
    log.info(
      {
        reason,
        ms: Math.round(performance.now() - started),
        heap_mb: [Math.round(heapBefore / MB), Math.round(baseline / MB)],
        rss_mb: [Math.round(rssBefore / MB), Math.round(process.memoryUsage.rss() / MB)],
      },
      "compacted the heap",
    );
  };
  const afterLoad: NodeJS.Timeout[] = [];
  const onLoaded = () => {
    const timer = setTimeout(() => {
      afterLoad.splice(afterLoad.indexOf(timer), 1);
      void compact("full load complete");
    }, options.afterLoadMs ?? 1000);
    timer.unref();
    afterLoad.push(timer);
  };
  events.on("loaded", onLoaded);
  let utilization = performance.eventLoopUtilization();
  const timer = setInterval(() => {
    const now = performance.eventLoopUtilization();
    const busy = performance.eventLoopUtilization(now, utilization).utilization;
    utilization = now;
    if (heapSize() - baseline >= growthBytes && busy < quietUtilization) void compact("the heap grew; now idle");
  }, checkIntervalMs);
  timer.unref();
  return () => {
    stopped = true;
    clearInterval(timer);
    for (const t of afterLoad.splice(0)) clearTimeout(t);
    events.off("loaded", onLoaded);
  };
}
