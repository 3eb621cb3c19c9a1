/**
 * ioredis listens for the first error of a connection's socket only (`once`), so a second one is an unhandled 'error'
 * event that kills the process. A Redis that refuses our TLS client certificate does exactly that: the alert, then a
 * reset (ioredis declined to change it: redis/ioredis#962). These connectors are ioredis's own with a listener of
 * their own on every socket they open; ioredis still handles the first error (and reconnects) as before.
 */
import type { SentinelConnectionOptions, StandaloneConnectionOptions } from "ioredis";
import { SentinelConnector, StandaloneConnector } from "ioredis/built/connectors/index.js";

type Stream = Awaited<ReturnType<StandaloneConnector["connect"]>>;

/** The error itself reaches ioredis's own listener, or already did: this one only keeps a second one caught. */
function caught(stream: Stream): Stream {
  stream.on("error", () => {});
  return stream;
}

// ioredis types a connector's options as unknown (ConnectorConstructor); it passes the client's options.
export class GuardedStandaloneConnector extends StandaloneConnector {
  constructor(options: unknown) {
    super(options as StandaloneConnectionOptions);
  }

  override async connect(...args: Parameters<StandaloneConnector["connect"]>): Promise<Stream> {
    return caught(await super.connect(...args));
  }
}

/**
 * A client given a connector no longer hands itself to it as `emitter`, which the sentinel connector only uses for
 * the informational `sentinelReconnecting` and `failoverSubscribed` events (the replicator listens to neither).
 */
export class GuardedSentinelConnector extends SentinelConnector {
  constructor(options: unknown) {
    super(options as SentinelConnectionOptions);
  }

  override async connect(...args: Parameters<SentinelConnector["connect"]>): Promise<Stream> {
    return caught(await super.connect(...args));
  }
}
