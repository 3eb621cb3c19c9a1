/** Small node:http helpers shared by the REST and admin handlers. */
import { isAscii } from "node:buffer";
import type { IncomingMessage, ServerResponse } from "node:http";

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    /** More members of the error body, besides `error`. */
    readonly extra?: Record<string, unknown>,
  ) {
    super(message);
  }
}

/** Reads and parses a JSON body (an empty body is `undefined`). */
export async function readJson(req: IncomingMessage, maxBytes = 1 << 30): Promise<unknown> {
  const declared = Number(req.headers["content-length"]);
  if (declared > maxBytes) throw new HttpError(413, `request body larger than ${maxBytes} bytes`);
  // With a Content-Length, read straight into one buffer (no concatenation copy).
  let fixed = Number.isSafeInteger(declared) && declared > 0 ? Buffer.allocUnsafe(declared) : null;
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    if (fixed && size + chunk.length <= fixed.length) chunk.copy(fixed, size);
    else {
      if (fixed) chunks.push(fixed.subarray(0, size));
      fixed = null;
      chunks.push(chunk);
    }
    size += chunk.length;
    if (size > maxBytes) throw new HttpError(413, `request body larger than ${maxBytes} bytes`);
  }
  if (size === 0) return undefined;
  const buf = fixed ? fixed.subarray(0, size) : Buffer.concat(chunks, size);
  // Pure ASCII (the usual case) decodes as latin1: a plain copy instead of a UTF-8 decode.
  const text = buf.toString(isAscii(buf) ? "latin1" : "utf8");
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new HttpError(400, `invalid JSON body: ${(err as Error).message}`);
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers?: Record<string, string>): void {
  const text = typeof body === "string" ? body : JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

export function sendError(
  res: ServerResponse,
  status: number,
  message: string,
  headers?: Record<string, string>,
  extra?: Record<string, unknown>,
): void {
  sendJson(res, status, { error: message, ...extra }, headers);
}
