/**
 * The replicator's settings, fully validated. Built only by `loadConfig` (src/config/load.ts) from the
 * environment; every other module receives the parts it needs. Durations are milliseconds; `0` means
 * "unlimited"/"off" only where the setting's comment says so.
 */

export type LogLevel = "debug" | "info" | "warn" | "error";
export type LogFormat = "json" | "pretty";

export interface RedisTlsConfig {
  /** PEM contents, read from REDIS_TLS_CA_FILE. */
  ca?: string;
  cert?: string;
  key?: string;
  serverName?: string;
}

export type RedisTopology =
  | { kind: "single"; host: string; port: number; db: number }
  | { kind: "cluster"; nodes: { host: string; port: number }[] }
  | {
      kind: "sentinel";
      sentinels: { host: string; port: number }[];
      masterName: string;
      sentinelPassword?: string;
      db: number;
    };

export interface RedisConfig {
  topology: RedisTopology;
  username?: string;
  password?: string;
  /** Undefined: no TLS. */
  tls?: RedisTlsConfig;
  /** REDIS_MAX_RETRIES (default 3): attempts per command, and connection attempts at start-up. */
  maxRetries: number;
  dialTimeoutMs: number;
  readTimeoutMs: number;
  writeTimeoutMs: number;
  maxRedirects: number;
  routeByLatency: boolean;
  /** Prepended to every key (default `schematic:`). */
  keyPrefix: string;
}

export interface Config {
  apiKey: string;
  /** REST base URL, no trailing slash. */
  apiUrl: string;
  /** Datastream WebSocket URL (derived from apiUrl unless SCHEMATIC_DATASTREAM_URL is set). */
  datastreamUrl: string;
  datastreamUrlExplicit: boolean;
  apiTimeoutMs: number;
  /** How often a standby checks that its API key is accepted; 0 = only at start-up. */
  apiKeyCheckIntervalMs: number;

  /** 0 = no expiry. */
  cacheTtlMs: number;
  /** 0 = cleanup disabled. */
  cacheCleanupIntervalMs: number;
  /** Explicit CACHE_VERSION, or undefined to use the bundled rules engine's version key. */
  cacheVersion?: string;

  logLevel: LogLevel;
  logFormat: LogFormat;
  healthPort: number;

  wsPingIntervalMs: number;
  wsPongWaitMs: number;
  datastreamMaxReconnectDelayMs: number;
  /** Offer permessage-deflate to the datastream (the server decides). */
  datastreamCompression: boolean;

  numWorkers: number;
  batchSize: number;
  batchTimeoutMs: number;
  companyChannelSize: number;
  userChannelSize: number;
  flagsChannelSize: number;
  circuitBreakerThreshold: number;
  circuitBreakerTimeoutMs: number;

  useAsyncLoading: boolean;
  loader: {
    pageSize: number;
    circuitBreakerThreshold: number;
    circuitBreakerTimeoutMs: number;
    maxConcurrentRequests: number;
    /** 0 = unlimited. */
    rateLimitRps: number;
  };

  redis: RedisConfig;

  writerLock: { disabled: boolean; key: string; ttlMs: number };
  replay: { disabled: boolean; cursorKey: string; flushIntervalMs: number };

  /** 0 = /ready goes 503 as soon as the datastream drops. */
  readyGracePeriodMs: number;
  /** 0 = anti-entropy disabled. */
  reconcileIntervalMs: number;
  shutdownTimeoutMs: number;
  markerCheckIntervalMs: number;

  /**
   * Settings that were accepted but have no effect (e.g. REDIS_ENABLE_MAINTENANCE_NOTIFICATIONS=true, or
   * REDIS_MAX_REDIRECTS without Cluster), one sentence each, to log at warn level at start-up.
   */
  warnings: string[];
  /** Values that must never appear in a log line: the API key, passwords (also from URLs), the TLS client key. */
  secrets: string[];
}
