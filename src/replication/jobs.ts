/** The units of work that flow from the datastream and the REST loader into the per-entity lanes. */
import type { Company, User } from "../model/wire.js";
import type { Tracked } from "./cursor.js";

export type EntityKind = "company" | "user";
export type EntityOp = "full" | "partial" | "delete";

export interface EntityJob {
  kind: EntityKind;
  id: string;
  op: EntityOp;
  /** Raw payload: a full entity, a partial object, or (delete) the last-known entity. */
  data: unknown;
  /**
   * A stream `full`'s data as received (a slice of the frame: of its bytes when it is ASCII, so that the decoded
   * frame need not be kept): stored as it is when validation changes nothing. A REST row's serialisation by the
   * loader, whose `data` is then only the entity's keys (see fold.ts).
   */
  text?: string | Buffer;
  /**
   * A stream `full` validated when it arrived (fold.ts `checkFull`): a queue then holds its text and keys, not the
   * object graph of its data (`data` is undefined), which the garbage collector would otherwise copy while it waits.
   */
  checked?: CheckedFull;
  /**
   * Where the job stands in stream order (orders lookup-key writes across lanes, see claims.ts): a stream change's
   * arrival number; a REST row's is the arrival number when its request was made, plus ½ — older than every change
   * received after the request, which the row may not reflect.
   */
  order: number;
  /** Cursor entries this job completes (several once coalesced). */
  tracked: Tracked[];
  /** Stream changes always apply; REST rows yield to stream changes seen since their load began. */
  source: "stream" | "load";
  /** Load generation that produced a `load` job (stale generations are skipped). */
  generation?: number;
  /** A REST row of an anti-entropy pass: written only where Redis differs from it. */
  reconcile?: boolean;
  streamTime?: number;
}

export type FlagJob =
  | { type: "snapshot"; flags: unknown[] }
  | { type: "full"; data: unknown; tracked?: Tracked; streamTime?: number }
  | { type: "delete"; data: unknown; tracked?: Tracked; streamTime?: number };

/**
 * What a lane needs of a validated full: its keys, and the validated entity when its text cannot be stored as it is
 * (validation dropped or filled in something); or why it is invalid.
 */
export type CheckedFull = { keys: Record<string, string>; entity?: Company | User } | { invalid: string };
