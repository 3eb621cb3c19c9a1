/**
 * Rigs of the emulator's own tests (test/emulator-*.test.ts): small wire entities, a datastream client that
 * records every frame, and admin calls that report their status.
 */
import assert from "node:assert/strict";
import { WebSocket } from "ws";
import type { RunningEmulator } from "../../src/emulator/index.js";
import type { Company, CompanyMetric, Flag, User } from "../../src/model/wire.js";

export const A = { account_id: "acc_1", environment_id: "env_1" };

export function company(id: string, keys: Record<string, string>, extra: Partial<Company> = {}): Company {
  return {
    id,
    ...A,
    base_plan_id: null,
    billing_product_ids: [],
    credit_balances: {},
    keys,
    metrics: [],
    plan_ids: [],
    plan_version_ids: [],
    rules: [],
    subscription: null,
    traits: [],
    ...extra,
  };
}

export function user(id: string, keys: Record<string, string>, extra: Partial<User> = {}): User {
  return { id, ...A, keys, traits: [], rules: [], ...extra };
}

export function flag(key: string, defaultValue = false, extra: Partial<Flag> = {}): Flag {
  return { id: `flag_${key}`, ...A, key, rules: [], default_value: defaultValue, ...extra };
}

export function metric(
  companyId: string,
  event: string,
  value: number,
  extra: Partial<CompanyMetric> = {},
): CompanyMetric {
  return {
    ...A,
    company_id: companyId,
    event_subtype: event,
    period: "all_time",
    month_reset: "first_of_month",
    value,
    created_at: "2026-06-01T00:00:00Z",
    valid_until: null,
    ...extra,
  };
}

/** An admin call (`/_emulator{path}`) with its status and parsed body. */
export async function call(
  emu: RunningEmulator,
  method: string,
  path: string,
  body?: unknown,
  // biome-ignore lint/suspicious/noExplicitAny: parsed JSON answers, read field by field in assertions
): Promise<{ status: number; body: any }> {
  const res = await fetch(`${emu.url}/_emulator${path}`, {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined };
}

export type Msg = {
  entity_type: string;
  message_type: string;
  entity_id?: string | null;
  stream_id?: string;
  data?: unknown;
  pagination?: unknown;
};

/** A datastream client that records every frame, in order. */
export class Probe {
  readonly frames: string[] = [];
  private readonly waiters: (() => void)[] = [];
  private read = 0;
  closeInfo: { code: number; reason: string } | undefined;
  private closedWaiters: (() => void)[] = [];

  private constructor(readonly ws: WebSocket) {
    ws.on("message", (data, isBinary) => {
      assert.equal(isBinary, false, "the emulator sends text frames only");
      this.frames.push(data.toString());
      for (const w of this.waiters.splice(0)) w();
    });
    ws.on("close", (code, reason) => {
      this.closeInfo = { code, reason: reason.toString() };
      for (const w of this.closedWaiters.splice(0)) w();
      for (const w of this.waiters.splice(0)) w();
    });
  }

  static open(url: string, key: string | undefined = "k", extraHeaders: Record<string, string> = {}): Promise<Probe> {
    const headers: Record<string, string> = { ...extraHeaders };
    if (key !== undefined) headers["X-Schematic-Api-Key"] = key;
    const ws = new WebSocket(url, { headers, perMessageDeflate: false });
    const probe = new Probe(ws);
    return new Promise((resolve, reject) => {
      ws.once("open", () => resolve(probe));
      ws.once("error", reject);
    });
  }

  /** Resolves with the HTTP status of a refused upgrade. */
  static refusedStatus(url: string, key: string | undefined): Promise<number> {
    const headers: Record<string, string> = key === undefined ? {} : { "X-Schematic-Api-Key": key };
    const ws = new WebSocket(url, { headers });
    return new Promise((resolve, reject) => {
      ws.once("open", () => reject(new Error("the upgrade was accepted")));
      ws.once("unexpected-response", (_req, res) => {
        resolve(res.statusCode ?? 0);
        res.resume();
        ws.terminate();
      });
      ws.once("error", () => {});
    });
  }

  send(data: Record<string, unknown>): void {
    this.ws.send(JSON.stringify({ data }));
  }

  /** The next frame not yet read, parsed. */
  async next(timeoutMs = 10_000): Promise<Msg> {
    const deadline = Date.now() + timeoutMs;
    while (this.read >= this.frames.length) {
      if (this.closeInfo) throw new Error(`connection closed (${this.closeInfo.code}) while waiting for a frame`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error("timed out waiting for a frame");
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    const raw = this.frames[this.read++]!;
    const msg = JSON.parse(raw) as Msg;
    assert.equal(typeof msg, "object");
    return msg;
  }

  async closed(timeoutMs = 10_000): Promise<{ code: number; reason: string }> {
    if (!this.closeInfo) {
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error("timed out waiting for close")), timeoutMs);
        this.closedWaiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.closeInfo!;
  }

  close(): void {
    this.ws.terminate();
  }
}

/** Subscribes and consumes the confirmation. */
export async function subscribe(p: Probe, entityType: string, replayFrom?: string): Promise<void> {
  p.send({ action: "start", entity_type: entityType, ...(replayFrom ? { replay_from: replayFrom } : {}) });
  const confirmation = await p.next();
  assert.deepEqual(confirmation, {
    entity_type: entityType,
    message_type: "full",
    entity_id: null,
    data: { subscribed: true },
  });
}
