/**
 * Go `time.ParseDuration` syntax: an optional sign, then one or more `<number><unit>` parts, such as `300ms`,
 * `-1.5h` or `2h45m30.5s`. Units: ns, us, µs (U+00B5), μs (U+03BC), ms, s, m, h. A bare `0` (optionally
 * signed) is the only number allowed without a unit. Computed in whole nanoseconds (fractions of a nanosecond
 * are truncated, as Go does) and limited to Go's int64 range, so `parseGoDuration` accepts exactly what the Go
 * replicator accepts.
 */

const NANOS_PER_UNIT: Record<string, bigint> = {
  ns: 1n,
  us: 1_000n,
  µs: 1_000n,
  μs: 1_000n,
  ms: 1_000_000n,
  s: 1_000_000_000n,
  m: 60_000_000_000n,
  h: 3_600_000_000_000n,
};

const MAX_NANOS = (1n << 63n) - 1n;
const MIN_NANOS = -(1n << 63n);

/** One `<number><unit>` part: integer digits, optional fraction, unit. */
const PART = /^(\d*)(?:\.(\d*))?(ns|us|µs|μs|ms|s|m|h)/;

export class DurationSyntaxError extends Error {
  override name = "DurationSyntaxError";
}

/** Parses a Go duration and returns nanoseconds. Throws DurationSyntaxError. */
export function parseGoDurationNanos(input: string): bigint {
  let rest = input;
  let negative = false;
  if (rest.startsWith("-") || rest.startsWith("+")) {
    negative = rest.startsWith("-");
    rest = rest.slice(1);
  }
  if (rest === "0") return 0n;
  if (rest === "") throw new DurationSyntaxError(`invalid duration ${JSON.stringify(input)}`);

  let total = 0n;
  while (rest !== "") {
    const m = PART.exec(rest);
    if (!m) {
      // Say what went wrong: a number without a unit, or an unknown unit.
      const num = /^\d*(?:\.\d*)?/.exec(rest)?.[0] ?? "";
      if (num === "" || num === ".") throw new DurationSyntaxError(`invalid duration ${JSON.stringify(input)}`);
      const after = rest.slice(num.length);
      if (after === "") throw new DurationSyntaxError(`missing unit in duration ${JSON.stringify(input)}`);
      throw new DurationSyntaxError(`unknown unit in duration ${JSON.stringify(input)}`);
    }
    const [whole, intDigits = "", fracDigits] = m;
    if (intDigits === "" && (fracDigits === undefined || fracDigits === "")) {
      throw new DurationSyntaxError(`invalid duration ${JSON.stringify(input)}`);
    }
    const unit = NANOS_PER_UNIT[m[3] as string] as bigint;
    let part = intDigits === "" ? 0n : BigInt(intDigits) * unit;
    if (fracDigits) part += (BigInt(fracDigits) * unit) / 10n ** BigInt(fracDigits.length);
    total += part;
    if (total > MAX_NANOS + (negative ? 1n : 0n)) {
      throw new DurationSyntaxError(`duration out of range ${JSON.stringify(input)}`);
    }
    rest = rest.slice(whole.length);
  }
  const signed = negative ? -total : total;
  if (signed > MAX_NANOS || signed < MIN_NANOS) {
    throw new DurationSyntaxError(`duration out of range ${JSON.stringify(input)}`);
  }
  return signed;
}

/**
 * Parses a Go duration and returns milliseconds (fractional below 1 ms: `"1500us"` → 1.5). Negative values
 * are returned as such; callers decide whether they are allowed. Throws DurationSyntaxError.
 */
export function parseGoDuration(s: string): number {
  const nanos = parseGoDurationNanos(s);
  const ms = nanos / 1_000_000n;
  const rem = nanos % 1_000_000n;
  return Number(ms) + Number(rem) / 1e6;
}
