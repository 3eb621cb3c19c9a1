/**
 * A replication Pipeline driven directly, for races that need a change at an exact moment: a private redis-server
 * with a real StoreWriter, datastream frames handed to handleFrame, and (optionally) the emulator's REST API for
 * the loader. The writer can hold back the batches of one entity, which puts that entity's lane behind the others.
 */
import { type RunningEmulator, startEmulator } from "../../src/emulator/index.js";
import { type LoaderOptions, type LoadResult, loadEverything } from "../../src/loader/loader.js";
import { RestClient } from "../../src/loader/rest-client.js";
import { ENTITY_TYPES, type Fixture } from "../../src/model/wire.js";
import type { EntityKind } from "../../src/replication/jobs.js";
import { Pipeline, type PipelineOptions } from "../../src/replication/pipeline.js";
import { KeyScheme } from "../../src/store/keys.js";
import { StoreWriter } from "../../src/store/writer.js";
import { CircuitBreaker } from "../../src/util/breaker.js";
import { createLogger } from "../../src/util/log.js";
import { type RedisServer, startRedis } from "./redis.js";

export const log = createLogger({ level: "silent", format: "json", name: "test" });
export const keys = new KeyScheme("schematic:", "v1");

export interface Gate {
  /** Resolves once a batch of the entity is held. */
  held: Promise<void>;
  release(): void;
}

export interface PipelineRig {
  redis: RedisServer;
  client: ReturnType<RedisServer["client"]>;
  writer: StoreWriter;
  pipeline: Pipeline;
  /** The emulator (with `fixture`), for the loader's REST requests. */
  emu?: RunningEmulator;
  /** The loader's REST client (with `fixture`). */
  rest?: RestClient;
  /**
   * Holds the next batch that reads `id`'s stored body (a batch reads before it decides what to write) until
   * release(): the entity's lane stays behind while the others go on.
   */
  holdReads(kind: EntityKind, id: string): Gate;
  /**
   * Holds the next batch that writes `id`'s stored body until release(), then fails it once, as a write that timed
   * out would (a transient fault of that one round trip, which a real Redis cannot be made to produce on cue).
   */
  failWrite(kind: EntityKind, id: string): Gate;
  /** Holds the next batch that writes `id`'s stored body until release(), then lets it through. */
  holdWrite(kind: EntityKind, id: string): Gate;
  /** A full load or anti-entropy pass through the loader, against the emulator. */
  load(generation: number, extra?: Partial<LoaderOptions>, signal?: AbortSignal): Promise<LoadResult>;
  /** Ends the load window and waits until everything queued is written. */
  endLoad(): Promise<void>;
  close(): Promise<void>;
}

/** Runs `body` with a fresh rig, closed afterwards whatever happens. */
export async function withPipelineRig(
  opts: Parameters<typeof startPipelineRig>[0],
  body: (rig: PipelineRig) => Promise<void>,
): Promise<void> {
  const rig = await startPipelineRig(opts);
  try {
    await body(rig);
  } finally {
    await rig.close();
  }
}

/** The writer lease key and token of a rig started with `lease: true`. */
export const RIG_LEASE = { key: "schematic:datastream:writer_lock", token: "rig-token" };

export async function startPipelineRig(
  opts: {
    pipeline?: Partial<PipelineOptions>;
    fixture?: Fixture;
    /** Fence the writer with a lease this rig holds (RIG_LEASE), as a replicator's writer is. */
    lease?: boolean;
  } = {},
): Promise<PipelineRig> {
  const redis = await startRedis();
  const client = redis.client();
  if (opts.lease) await client.set(RIG_LEASE.key, RIG_LEASE.token);
  const lease = opts.lease ? { key: RIG_LEASE.key, token: () => RIG_LEASE.token } : undefined;
  const writer = new StoreWriter(redis.client(), { ttlMs: 0, lease });
  const readGates = new Map<string, GateState>();
  const writeGates = new Map<string, GateState>();
  const heldWrites = new Map<string, GateState>();
  const readMany = writer.readMany.bind(writer);
  writer.readMany = async (readKeys) => {
    await passGates(readGates, readKeys);
    return await readMany(readKeys);
  };
  const apply = writer.apply.bind(writer);
  writer.apply = async (ops) => {
    const written = ops.map((op) => op.key);
    if (await passGates(writeGates, written)) throw new Error("injected: the write timed out");
    await passGates(heldWrites, written);
    return await apply(ops);
  };
  const pipeline = new Pipeline({
    numWorkers: 2,
    batchSize: 5,
    batchTimeoutMs: 5,
    companyChannelSize: 100,
    userChannelSize: 100,
    flagsChannelSize: 10,
    keys,
    writer,
    breaker: new CircuitBreaker("redis", 3, 100),
    log,
    listFlagKeys: async () => [],
    pause: () => undefined,
    resume: () => undefined,
    ...opts.pipeline,
  });
  pipeline.start();
  const emu = opts.fixture ? await startEmulator({ fixture: opts.fixture }) : undefined;
  const rest = emu
    ? new RestClient({
        apiUrl: emu.url,
        apiKey: "test-api-key",
        timeoutMs: 5000,
        breaker: new CircuitBreaker("api", 5, 100),
        log,
        rateLimitRps: 0,
        maxConcurrent: 2,
        userAgent: "test",
      })
    : undefined;
  return {
    redis,
    client,
    writer,
    pipeline,
    emu,
    rest,
    holdReads: (kind, id) => gate(readGates, kind, id),
    failWrite: (kind, id) => gate(writeGates, kind, id),
    holdWrite: (kind, id) => gate(heldWrites, kind, id),
    load(generation, extra = {}, signal = new AbortController().signal) {
      if (!rest) throw new Error("the rig has no emulator (give it a fixture)");
      return loadEverything(
        {
          rest,
          pipeline,
          keys,
          writer,
          log,
          pageSize: 10,
          concurrent: true,
          scanKeys: (pattern) => scan(client, pattern),
          ...extra,
        },
        generation,
        signal,
      );
    },
    async endLoad() {
      pipeline.endLoad();
      await pipeline.whenLoadApplied();
      await pipeline.whenIdle();
    },
    async close() {
      await pipeline.stop();
      await emu?.close();
      await redis.stop();
    },
  };
}

interface GateState {
  hit: () => void;
  wait: Promise<void>;
}

function gate(gates: Map<string, GateState>, kind: EntityKind, id: string): Gate {
  let hit!: () => void;
  let release!: () => void;
  const held = new Promise<void>((resolve) => {
    hit = resolve;
  });
  const wait = new Promise<void>((resolve) => {
    release = resolve;
  });
  gates.set(kind === "company" ? keys.companyId(id) : keys.userId(id), { hit, wait });
  return { held, release };
}

/** Waits at the first gate set on one of `keys` (each gate holds once); true when one was passed. */
async function passGates(gates: Map<string, GateState>, touched: string[]): Promise<boolean> {
  for (const key of touched) {
    const gate = gates.get(key);
    if (!gate) continue;
    gates.delete(key);
    gate.hit();
    await gate.wait;
    return true;
  }
  return false;
}

async function* scan(client: PipelineRig["client"], pattern: string): AsyncIterable<string[]> {
  let cursor = "0";
  do {
    const [next, batch] = await client.scan(cursor, "MATCH", pattern, "COUNT", 1000);
    cursor = next;
    if (batch.length) yield batch;
  } while (cursor !== "0");
}

/** A datastream frame for a company or user change, as the server sends it. */
export function entityFrame(
  kind: EntityKind,
  op: "full" | "partial" | "delete",
  id: string,
  data: unknown,
  streamId: string,
): string {
  return JSON.stringify({
    entity_type: kind === "company" ? ENTITY_TYPES.company : ENTITY_TYPES.user,
    message_type: op,
    entity_id: id,
    stream_id: streamId,
    data,
  });
}
