/**
 * The replicator process's memory (docs/performance.md, changes 9 and 10):
 *
 * - the default cache version is the version key of the bundled rules engine, read in a short-lived child process:
 *   the calling process never loads the SDK;
 * - after a full load (the replicator's "loaded" event), and when the heap has grown and the process is idle, the
 *   heap is compacted and its empty pages are given back; stopping it ends both.
 */
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { createRequire } from "node:module";
import { describe, test } from "node:test";
import { getHeapStatistics } from "node:v8";
import { engineVersionKey } from "../src/model/engine-version.js";
import { startHeapCompaction } from "../src/util/heap-compaction.js";
import { boundHeapGrowth } from "../src/util/heap-growth.js";

const require = createRequire(import.meta.url);
const SDK = "@schematichq/schematic-typescript-node";

interface Entry {
  reason: string;
  heap_mb: [number, number];
  rss_mb: [number, number];
  ms: number;
}

function recordingLog() {
  const entries: Entry[] = [];
  let notify: (() => void) | undefined;
  return {
    entries,
    next: () => new Promise<void>((resolve) => (notify = resolve)),
    log: {
      info: (obj: object, msg?: string) => {
        if (msg === "compacted the heap") {
          entries.push(obj as Entry);
          notify?.();
        }
      },
      debug: () => {},
    } as never,
  };
}

/** ~60 MB of small objects of which a sixth stays alive: a fragmented old space, as a load leaves it. */
function fragmentHeap(): unknown[] {
  const keep: unknown[] = [];
  let batch: unknown[] = [];
  for (let i = 0; i < 200_000; i++) {
    const o = { id: `comp_${i}`, keys: { email: `user-${i}@example.com` }, pad: "x".repeat(200 + (i % 7)) };
    batch.push(o);
    if (i % 6 === 0) keep.push(o);
    if (batch.length === 20_000) batch = [];
  }
  return keep;
}

/** `p`, or a rejection after `ms`; the timer keeps the event loop alive meanwhile (the compaction's are unref'd). */
async function timeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

describe("engine version key", () => {
  test("is the bundled engine's key, read without loading the SDK into this process", async () => {
    const key = await engineVersionKey();
    assert.match(key, /^[0-9a-f]{8}$/);
    assert.equal(require.cache[require.resolve(SDK)], undefined, "the SDK stayed out of this process");
    const sdk = require(SDK) as typeof import("@schematichq/schematic-typescript-node");
    const engine = new sdk.RulesEngineClient();
    await engine.initialize();
    assert.equal(key, engine.getVersionKey());
  });
});

describe("heap compaction", () => {
  test("after a full load: the heap shrinks to about its live size", async () => {
    const events = new EventEmitter();
    const rec = recordingLog();
    const stop = startHeapCompaction(events, rec.log, { afterLoadMs: 0, checkIntervalMs: 3_600_000 });
    try {
      const keep = fragmentHeap();
      const logged = rec.next();
      events.emit("loaded");
      await timeout(logged, 20_000, "compaction after the load");
      const [entry] = rec.entries;
      assert.equal(entry!.reason, "full load complete");
      assert.ok(entry!.heap_mb[1] < entry!.heap_mb[0], `the heap shrank: ${JSON.stringify(entry)}`);
      assert.ok(getHeapStatistics().total_heap_size < entry!.heap_mb[0] * 1024 * 1024);
      assert.ok(keep.length > 0);
    } finally {
      stop();
    }
  });

  test("when the heap has grown and the process is idle; never after stop()", async () => {
    const events = new EventEmitter();
    const rec = recordingLog();
    const stop = startHeapCompaction(events, rec.log, {
      checkIntervalMs: 300,
      growthBytes: 16 * 1024 * 1024,
      quietUtilization: 0.5,
    });
    let keep: unknown[] = [];
    try {
      const logged = rec.next();
      keep = fragmentHeap();
      await timeout(logged, 20_000, "compaction once idle");
      assert.equal(rec.entries[0]!.reason, "the heap grew; now idle");
    } finally {
      stop();
    }
    const count = rec.entries.length;
    keep = fragmentHeap();
    events.emit("loaded");
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(rec.entries.length, count, "nothing runs after stop()");
    assert.ok(keep.length > 0);
  });
});

describe("the heap's growth during loads", () => {
  test("is bounded while a load runs; the last load to end gives it back to V8 (loads may overlap)", () => {
    const calls: string[] = [];
    const set = (flags: string) => calls.push(flags);
    const first = boundHeapGrowth(set);
    const second = boundHeapGrowth(set);
    assert.deepEqual(calls, ["--heap-growing-percent=150"]);
    first();
    first();
    assert.deepEqual(calls, ["--heap-growing-percent=150"], "the other load still runs; a second release is a no-op");
    second();
    assert.deepEqual(calls, ["--heap-growing-percent=150", "--heap-growing-percent=0"]);
    // The real V8 flag is accepted at run time.
    boundHeapGrowth()();
  });
});
