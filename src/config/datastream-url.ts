/**
 * Datastream WebSocket URL derivation (docs/reference/protocol.md §1.1), as the Go and Node clients do it:
 * - `http(s)://` URLs are converted: scheme `http` → `ws`, `https` → `wss`; a first host label of exactly `api`
 *   becomes `datastream` when the host has more than one label; the path is replaced by `/datastream`; the
 *   query is kept (a fragment is dropped: WebSocket URLs cannot carry one); the port is kept.
 * - `ws(s)://` URLs are used verbatim.
 * - Anything else is an error.
 */

export class DatastreamUrlError extends Error {
  override name = "DatastreamUrlError";
}

export function deriveDatastreamUrl(apiUrl: string): string {
  let url: URL;
  try {
    url = new URL(apiUrl);
  } catch {
    throw new DatastreamUrlError("is not a URL");
  }
  switch (url.protocol) {
    case "ws:":
    case "wss:":
      if (url.hash !== "" || apiUrl.includes("#")) throw new DatastreamUrlError("must not contain a fragment (#…)");
      return apiUrl;
    case "http:":
    case "https:":
      break;
    default:
      throw new DatastreamUrlError(`has unsupported scheme ${JSON.stringify(url.protocol.slice(0, -1))}`);
  }
  if (url.hostname === "") throw new DatastreamUrlError("has no host");
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  // IPv6 literals ("[::1]") contain no dots and are never renamed.
  const labels = url.hostname.split(".");
  if (labels.length > 1 && labels[0] === "api") {
    url.hostname = ["datastream", ...labels.slice(1)].join(".");
  }
  url.pathname = "/datastream";
  url.hash = "";
  return url.href;
}
