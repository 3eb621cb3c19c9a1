/**
 * Finds the text of one top-level member of a JSON object without parsing the rest: the datastream writes an
 * entity's received `data` text to Redis unchanged (no re-serialisation), and reads only the `keys` of a stored
 * body to learn which lookup keys it owns. Strings are skipped with indexOf, so the cost is a scan over the
 * structural characters, a few µs for a 3 KB entity.
 *
 * The input may be anything (a stored value can be corrupt): every malformed case returns undefined, never throws.
 */

const QUOTE = 34;
const BACKSLASH = 92;
const OPEN_BRACE = 123;
const CLOSE_BRACE = 125;
const OPEN_BRACKET = 91;
const CLOSE_BRACKET = 93;
const COMMA = 44;
const COLON = 58;

function skipSpace(text: string, i: number): number {
  for (; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c !== 32 && c !== 10 && c !== 13 && c !== 9) break;
  }
  return i;
}

/** `i` at an opening quote: the index just past the closing quote, or -1. */
function stringEnd(text: string, i: number): number {
  let from = i + 1;
  for (;;) {
    const q = text.indexOf('"', from);
    if (q < 0) return -1;
    let backslashes = 0;
    for (let b = q - 1; text.charCodeAt(b) === BACKSLASH; b--) backslashes++;
    if (backslashes % 2 === 0) return q + 1;
    from = q + 1;
  }
}

/** `i` at the first character of a value: the index just past it, or -1. */
function valueEnd(text: string, i: number): number {
  const first = text.charCodeAt(i);
  if (first === QUOTE) return stringEnd(text, i);
  if (first !== OPEN_BRACE && first !== OPEN_BRACKET) {
    // A number or a literal: up to the next delimiter.
    let j = i;
    for (; j < text.length; j++) {
      const c = text.charCodeAt(j);
      if (c === COMMA || c === CLOSE_BRACE || c === CLOSE_BRACKET || c === 32 || c === 10 || c === 13 || c === 9) break;
    }
    return j > i ? j : -1;
  }
  let depth = 0;
  for (let j = i; j < text.length; j++) {
    const c = text.charCodeAt(j);
    if (c === QUOTE) {
      const end = stringEnd(text, j);
      if (end < 0) return -1;
      j = end - 1;
    } else if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      depth++;
    } else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
      if (--depth === 0) return j + 1;
    }
  }
  return -1;
}

/**
 * The text of member `name` of the JSON object `text` (the last one when the name repeats, as JSON.parse keeps),
 * or undefined when `text` is not an object or has no such member. Brackets are only counted, not matched: the
 * caller parses the span (or has parsed the whole text) before trusting it.
 */
export function memberText(text: string, name: string): string | undefined {
  const span = memberSpan(text, name);
  return span && text.slice(span[0], span[1]);
}

/** Where {@link memberText} is in `text`: [start, end). */
export function memberSpan(text: string, name: string): [number, number] | undefined {
  let i = skipSpace(text, 0);
  if (text.charCodeAt(i) !== OPEN_BRACE) return undefined;
  i = skipSpace(text, i + 1);
  if (text.charCodeAt(i) === CLOSE_BRACE) return undefined;
  let found: [number, number] | undefined;
  for (;;) {
    if (text.charCodeAt(i) !== QUOTE) return undefined;
    const nameEnd = stringEnd(text, i);
    if (nameEnd < 0) return undefined;
    let member = text.slice(i + 1, nameEnd - 1);
    if (member.includes("\\")) {
      try {
        member = JSON.parse(text.slice(i, nameEnd)) as string;
      } catch {
        return undefined;
      }
    }
    i = skipSpace(text, nameEnd);
    if (text.charCodeAt(i) !== COLON) return undefined;
    i = skipSpace(text, i + 1);
    const end = valueEnd(text, i);
    if (end < 0) return undefined;
    if (member === name) found = [i, end];
    i = skipSpace(text, end);
    const c = text.charCodeAt(i);
    if (c === CLOSE_BRACE) return found;
    if (c !== COMMA) return undefined;
    i = skipSpace(text, i + 1);
  }
}
