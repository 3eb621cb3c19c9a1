// Small statistics helpers for the benchmark report.

export function median(xs) {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** Median, min, max and relative spread ((max - min) / median) of repeated measurements. */
export function summarise(xs) {
  const m = median(xs);
  if (m === null) return null;
  const min = Math.min(...xs);
  const max = Math.max(...xs);
  return { median: m, min, max, spread: m === 0 ? 0 : (max - min) / m, runs: xs.length };
}

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

export function round(x, digits = 2) {
  if (x === null || x === undefined || !Number.isFinite(x)) return x ?? null;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

export const mb = (bytes) => round(bytes / (1024 * 1024), 1);
