export { DatastreamUrlError, deriveDatastreamUrl } from "./datastream-url.js";
export { DurationSyntaxError, parseGoDuration, parseGoDurationNanos } from "./duration.js";
export {
  ConfigError,
  DEFAULT_API_URL,
  DEFAULT_KEY_PREFIX,
  describeConfig,
  type LoadConfigOptions,
  loadConfig,
  logFormatOf,
  parseHostPort,
  redactUrl,
} from "./load.js";
export { SETTING_GROUPS, SETTING_NAMES, type SettingDoc, settingsHelp, settingsMarkdown } from "./settings.js";
export type * from "./types.js";
