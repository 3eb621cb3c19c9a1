/**
 * Bounds how far V8 lets its heap grow between full collections while a bulk load runs. A load allocates fast and
 * keeps little (docs/design/loading.md, "Memory"); V8 then sets the next collection at up to 4 times the live heap,
 * so most of the load's peak is garbage waiting for it. At 2.5 times, the peak falls by ~30–45 MB for ~20 MB live, at
 * no CPU cost that could be measured (docs/performance.md). V8 reads the setting at every collection; outside loads
 * it is left to V8.
 */
import { setFlagsFromString } from "node:v8";

const DURING_LOADS = "--heap-growing-percent=150";
const DEFAULT = "--heap-growing-percent=0";

let holders = 0;

/** Bounds the growth until the returned function is called (loads may overlap: the last one to end restores it). */
export function boundHeapGrowth(setFlags: (flags: string) => void = setFlagsFromString): () => void {
  if (holders++ === 0) setFlags(DURING_LOADS);
  let released = false;
  return () => {
    if (released) return;
    released = true;
    if (--holders === 0) setFlags(DEFAULT);
  };
}
