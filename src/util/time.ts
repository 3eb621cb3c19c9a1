/** Small timing helpers shared by the loops that retry, back off or wait. */

export const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });

/** Resolves after the current event-loop turn (I/O already received is handled first), or after `maxMs`. */
export const nextTurn = (maxMs: number): Promise<void> =>
  new Promise((resolve) => {
    const timer = setTimeout(done, maxMs);
    const immediate = setImmediate(done);
    function done() {
      clearTimeout(timer);
      clearImmediate(immediate);
      resolve();
    }
  });

/**
 * Exponential backoff with jitter: attempt 1 waits about `minMs`, doubling up to `maxMs`, plus up to `minMs` of
 * random jitter so that many replicators restarted together do not reconnect in lockstep.
 */
export function backoffDelay(attempt: number, minMs: number, maxMs: number, random = Math.random): number {
  const base = Math.min(maxMs, minMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(base + random() * Math.min(minMs, maxMs));
}

export const nowIso = (ms = Date.now()): string => new Date(ms).toISOString();
