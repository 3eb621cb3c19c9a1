export { DatastreamUrlError, deriveDatastreamUrl } from "./datastream-url.js";
export { DurationSyntaxError, parseGoDuration, parseGoDurationNanos } from "./duration.js";
export {
  ConfigError,
  DEFAULT_API_URL,
  DEFAULT_KEY_PREFIX,
  describeConfig,
  type LoadConfigOptions,
  loadConfig,
  parseHostPort,
  redactUrl,
} from "./load.js";
export type * from "./types.js";
