/**
 * Delimits the elements of one array in a JSON document held as UTF-8 bytes, without decoding or parsing the rest.
 * A REST page of the bulk load (2–4 MB) is then parsed one row at a time: only one row's object graph is alive at
 * once, and the page itself never becomes a JavaScript string (docs/design/loading.md, "Memory"). UTF-8 never uses
 * the bytes of `"`, `\`, brackets, braces or commas inside a multi-byte character, so scanning bytes is safe.
 *
 * Elements are only delimited (strings skipped, brackets counted, not matched): the caller parses each one. Every
 * malformed case returns undefined, never throws. The scanner mirrors json-span.ts (which scans strings): one loop
 * over either representation through an accessor cost the hot path more than the copy costs the reader.
 */

const QUOTE = 34;
const BACKSLASH = 92;
const OPEN_BRACE = 123;
const CLOSE_BRACE = 125;
const OPEN_BRACKET = 91;
const CLOSE_BRACKET = 93;
const COMMA = 44;
const COLON = 58;

function skipSpace(b: Uint8Array, i: number, end: number): number {
  for (; i < end; i++) {
    const c = b[i];
    if (c !== 32 && c !== 10 && c !== 13 && c !== 9) break;
  }
  return i;
}

/** `i` at an opening quote: the index just past the closing quote, or -1. */
function stringEnd(b: Uint8Array, i: number, end: number): number {
  for (let j = i + 1; j < end; j++) {
    const c = b[j];
    if (c === QUOTE) return j + 1;
    if (c === BACKSLASH) j++;
  }
  return -1;
}

/** `i` at the first byte of a value: the index just past it, or -1. */
function valueEnd(b: Uint8Array, i: number, end: number): number {
  const first = b[i];
  if (first === QUOTE) return stringEnd(b, i, end);
  if (first !== OPEN_BRACE && first !== OPEN_BRACKET) {
    // A number or a literal: up to the next delimiter.
    let j = i;
    for (; j < end; j++) {
      const c = b[j];
      if (c === COMMA || c === CLOSE_BRACE || c === CLOSE_BRACKET || c === 32 || c === 10 || c === 13 || c === 9) break;
    }
    return j > i ? j : -1;
  }
  let depth = 0;
  for (let j = i; j < end; j++) {
    const c = b[j];
    if (c === QUOTE) {
      const close = stringEnd(b, j, end);
      if (close < 0) return -1;
      j = close - 1;
    } else if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      depth++;
    } else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
      if (--depth === 0) return j + 1;
    }
  }
  return -1;
}

/** Whether the member name at `[i, nameEnd)` (quotes included) is `name`. */
function isName(b: Uint8Array, i: number, nameEnd: number, name: string): boolean {
  let escaped = false;
  for (let j = i + 1; j < nameEnd - 1; j++) if (b[j] === BACKSLASH) escaped = true;
  if (escaped) {
    try {
      return JSON.parse(Buffer.from(b.buffer, b.byteOffset + i, nameEnd - i).toString("utf8")) === name;
    } catch {
      return false;
    }
  }
  if (nameEnd - i - 2 !== name.length) return false;
  for (let k = 0; k < name.length; k++) if (b[i + 1 + k] !== name.charCodeAt(k)) return false;
  return true;
}

/** `i` at an opening bracket: the element spans (appended to `spans`) and the index just past the array, or -1. */
function arraySpans(b: Uint8Array, i: number, end: number, spans: number[]): number {
  i = skipSpace(b, i + 1, end);
  if (b[i] === CLOSE_BRACKET) return i + 1;
  for (;;) {
    const close = valueEnd(b, i, end);
    if (close < 0) return -1;
    spans.push(i, close);
    i = skipSpace(b, close, end);
    const c = b[i];
    if (c === CLOSE_BRACKET) return i + 1;
    if (c !== COMMA) return -1;
    i = skipSpace(b, i + 1, end);
  }
}

/**
 * The elements of the array member `name` of the JSON object in `b[0, end)` (the last member of that name, as
 * JSON.parse keeps) as start and end offsets, `[start0, end0, start1, end1, …]`; undefined when the bytes are not
 * one object ending at `end`, or it has no such array.
 */
export function arrayMemberSpans(b: Uint8Array, end: number, name: string): number[] | undefined {
  let i = skipSpace(b, 0, end);
  if (b[i] !== OPEN_BRACE) return undefined;
  i = skipSpace(b, i + 1, end);
  if (b[i] === CLOSE_BRACE) return undefined;
  let found: number[] | undefined;
  for (;;) {
    if (b[i] !== QUOTE) return undefined;
    const nameEnd = stringEnd(b, i, end);
    if (nameEnd < 0) return undefined;
    const wanted = isName(b, i, nameEnd, name);
    i = skipSpace(b, nameEnd, end);
    if (b[i] !== COLON) return undefined;
    i = skipSpace(b, i + 1, end);
    let close: number;
    if (wanted && b[i] === OPEN_BRACKET) {
      found = [];
      close = arraySpans(b, i, end, found);
    } else {
      if (wanted) found = undefined;
      close = valueEnd(b, i, end);
    }
    if (close < 0) return undefined;
    i = skipSpace(b, close, end);
    const c = b[i];
    if (c === CLOSE_BRACE) return skipSpace(b, i + 1, end) === end ? found : undefined;
    if (c !== COMMA) return undefined;
    i = skipSpace(b, i + 1, end);
  }
}
