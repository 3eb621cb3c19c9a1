/**
 * The rows of a REST page, taken one at a time from the bytes received: a page (2–4 MB of JSON) is never decoded to
 * one string nor parsed to one object graph, so the load holds the pages in flight as bytes plus one row's object
 * graph (docs/design/loading.md, "Memory").
 */
import { isAscii } from "node:buffer";
import { arrayMemberSpans } from "../util/json-bytes.js";

/** The rows of one page as JSON texts, decoded when asked for. */
export interface PageRows {
  readonly count: number;
  text(i: number): string;
}

/** A page body that is not a JSON object with a `data` array (or a row of it that is not JSON). */
export class MalformedPageError extends Error {}

/**
 * Body buffers are whole multiples of this. glibc's malloc serves an allocation from its heap (where freed memory is
 * rarely given back to the system) once a larger mapped one was freed; every body buffer being at least as large as
 * any other large allocation of the process keeps them mapped, so their memory returns to the system when the load
 * ends. Only the bytes written count towards the resident size.
 */
const BODY_BLOCK = 8 * 1024 * 1024;

/**
 * A response body, received into one buffer that is reused page after page (see {@link BodyPool}): the chunks the
 * socket delivers are copied in and die young, and no large buffer is allocated (and left to the garbage collector)
 * per page.
 */
export class PageBody {
  bytes = Buffer.alloc(0);
  length = 0;

  reset(): void {
    this.length = 0;
  }

  append(chunk: Uint8Array): void {
    const needed = this.length + chunk.byteLength;
    if (needed > this.bytes.length) {
      const grown = Buffer.allocUnsafeSlow(Math.ceil(needed / BODY_BLOCK) * BODY_BLOCK);
      this.bytes.copy(grown, 0, 0, this.length);
      this.bytes = grown;
    }
    this.bytes.set(chunk, this.length);
    this.length = needed;
  }
}

/**
 * The pages one load holds, shared by its walks (companies and users run at once): each walk's current page, and
 * at most `ahead` pages fetched ahead of them in all. Bodies are reused page after page, so the load's page memory
 * is bounded by the pages in flight, whatever the page size and the number of entities.
 */
export class PageBudget {
  private aheadHeld = 0;
  private readonly free: PageBody[] = [];

  constructor(readonly ahead: number) {}

  /** Whether another page may be fetched ahead; if so, it counts until {@link releaseAhead}. */
  reserveAhead(): boolean {
    if (this.aheadHeld >= this.ahead) return false;
    this.aheadHeld++;
    return true;
  }

  /** A page fetched ahead is being taken (or was given up). */
  releaseAhead(): void {
    this.aheadHeld--;
  }

  body(): PageBody {
    return this.free.pop() ?? new PageBody();
  }

  /** A body whose page was taken, for the next page. */
  give(body: PageBody): void {
    this.free.push(body);
  }
}

/**
 * The rows of a page body, valid while the body is not reused; throws MalformedPageError when it is not a JSON
 * object with a `data` array. Rows are only delimited here: each is parsed by the caller.
 */
export function pageRows(what: string, body: PageBody): PageRows {
  const { bytes, length } = body;
  const spans = arrayMemberSpans(bytes, length, "data");
  if (spans === undefined) throw new MalformedPageError(`${what} returned no data array`);
  // Pure ASCII (the usual case) decodes byte for byte, at twice the speed of UTF-8.
  const encoding = isAscii(bytes.subarray(0, length)) ? "latin1" : "utf8";
  return { count: spans.length / 2, text: (i) => bytes.toString(encoding, spans[2 * i], spans[2 * i + 1]) };
}
