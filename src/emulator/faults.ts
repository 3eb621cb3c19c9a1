/**
 * Fault injection (`POST /_emulator/faults`). A POST replaces the whole set; `{}` clears it.
 */

export interface FaultSettings {
  rest_error_rate?: number;
  rest_error_status?: number;
  rest_fail_next?: number;
  rest_fail_paths?: string[];
  rest_retry_after_s?: number;
  rest_latency_ms?: number;
  seed?: number;
  datastream_refuse_status?: number;
  auth_failure?: "http401" | "close4001";
}

export class FaultError extends Error {}

function isInt(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v);
}

function httpStatus(name: string, v: unknown): number {
  if (!isInt(v) || v < 100 || v > 599)
    throw new FaultError(`${name}: expected an HTTP status code (100-599), got ${JSON.stringify(v)}`);
  return v;
}

function nonNegInt(name: string, v: unknown): number {
  if (!isInt(v) || v < 0) throw new FaultError(`${name}: expected a non-negative integer, got ${JSON.stringify(v)}`);
  return v;
}

export function parseFaults(raw: unknown): FaultSettings {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new FaultError("expected a JSON object");
  const out: FaultSettings = {};
  for (const [k, v] of Object.entries(raw)) {
    if (v === null) continue;
    switch (k) {
      case "rest_error_rate":
        if (typeof v !== "number" || !(v >= 0 && v <= 1)) {
          throw new FaultError(`rest_error_rate: expected a number from 0.0 to 1.0, got ${JSON.stringify(v)}`);
        }
        out.rest_error_rate = v;
        break;
      case "rest_error_status":
        out.rest_error_status = httpStatus(k, v);
        break;
      case "datastream_refuse_status":
        out.datastream_refuse_status = httpStatus(k, v);
        break;
      case "rest_fail_next":
        out.rest_fail_next = nonNegInt(k, v);
        break;
      case "rest_retry_after_s":
        out.rest_retry_after_s = nonNegInt(k, v);
        break;
      case "rest_latency_ms":
        out.rest_latency_ms = nonNegInt(k, v);
        break;
      case "seed":
        if (!isInt(v)) throw new FaultError(`seed: expected an integer, got ${JSON.stringify(v)}`);
        out.seed = v;
        break;
      case "rest_fail_paths":
        if (!Array.isArray(v) || !v.every((p) => typeof p === "string" && p.startsWith("/"))) {
          throw new FaultError(
            `rest_fail_paths: expected an array of paths starting with "/", got ${JSON.stringify(v)}`,
          );
        }
        out.rest_fail_paths = v as string[];
        break;
      case "auth_failure":
        if (v !== "http401" && v !== "close4001") {
          throw new FaultError(`auth_failure: expected "http401" or "close4001", got ${JSON.stringify(v)}`);
        }
        out.auth_failure = v;
        break;
      default:
        throw new FaultError(`unknown fault ${JSON.stringify(k)}`);
    }
  }
  return out;
}

/** mulberry32: a small deterministic PRNG. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface RestFaultDecision {
  latencyMs: number;
  /** Status to fail with, or 0 to serve normally. */
  failStatus: number;
  retryAfterS?: number;
}

export class Faults {
  settings: FaultSettings = {};
  private random: () => number = prng(1);

  set(settings: FaultSettings): void {
    this.settings = settings;
    this.random = prng(settings.seed ?? Date.now());
  }

  /** Decides the fate of one REST request to `path` (no query string). */
  rest(path: string): RestFaultDecision {
    const s = this.settings;
    if (s.rest_fail_paths && !s.rest_fail_paths.includes(path)) return { latencyMs: 0, failStatus: 0 };
    let fail = false;
    if (s.rest_fail_next !== undefined && s.rest_fail_next > 0) {
      s.rest_fail_next--;
      fail = true;
    } else if (s.rest_error_rate !== undefined && s.rest_error_rate > 0 && this.random() < s.rest_error_rate) {
      fail = true;
    }
    return {
      latencyMs: s.rest_latency_ms ?? 0,
      failStatus: fail ? (s.rest_error_status ?? 503) : 0,
      retryAfterS: fail ? s.rest_retry_after_s : undefined,
    };
  }
}
