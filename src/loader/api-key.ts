/**
 * Does Schematic accept our API key? A writer finds out by using it (a rejection ends the process with exit 3); a
 * standby uses it only once it takes over, so without this check a standby with a wrong or revoked key would look
 * healthy until the failover it exists for, then exit and leave no writer. The check is one authenticated REST
 * call, `GET /companies/count` (small, and served by the emulator too): 401/403 means rejected, a 2xx accepted,
 * anything else (network, 5xx, 429) tells nothing and leaves the last verdict in force.
 */
import { EventEmitter } from "node:events";
import type { Logger } from "../util/log.js";

export type ApiKeyState = "unchecked" | "valid" | "rejected";

const CHECK_PATH = "/companies/count";

export interface ApiKeyMonitorOptions {
  apiUrl: string;
  apiKey: string;
  timeoutMs: number;
  /** Period of the checks started by {@link ApiKeyMonitor.start}; 0 = none. */
  intervalMs: number;
  userAgent: string;
  log: Logger;
}

export class ApiKeyMonitor extends EventEmitter<{ change: [state: ApiKeyState] }> {
  state: ApiKeyState = "unchecked";
  /** When Schematic last gave a verdict (ms since the epoch). */
  checkedAt: number | undefined;
  /** The rejection, e.g. `HTTP 401 on GET /companies/count`, while rejected. */
  rejection: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<ApiKeyState> | undefined;

  constructor(private readonly o: ApiKeyMonitorOptions) {
    super();
  }

  /** The one-line reason a rejected key gives (for the exit line and /health). */
  get rejectionMessage(): string {
    return `the Schematic API rejected the API key (${this.rejection ?? "HTTP 401"}); check SCHEMATIC_API_KEY`;
  }

  /** One check now (joins one already running). Never throws. */
  check(signal?: AbortSignal): Promise<ApiKeyState> {
    this.running ??= this.checkOnce(signal).finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  /** Checks every `intervalMs` while `when()` is true (a writer proves its key by using it). */
  start(when: () => boolean): void {
    if (this.o.intervalMs <= 0 || this.timer) return;
    this.timer = setInterval(() => {
      if (when()) void this.check();
    }, this.o.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private async checkOnce(signal?: AbortSignal): Promise<ApiKeyState> {
    const url = this.o.apiUrl + CHECK_PATH;
    let status: number;
    try {
      const res = await fetch(url, {
        headers: { "X-Schematic-Api-Key": this.o.apiKey, Accept: "application/json", "User-Agent": this.o.userAgent },
        signal: signal
          ? AbortSignal.any([signal, AbortSignal.timeout(this.o.timeoutMs)])
          : AbortSignal.timeout(this.o.timeoutMs),
      });
      status = res.status;
      await res.body?.cancel();
    } catch (err) {
      if (!signal?.aborted) {
        this.o.log.warn(
          { err: (err as Error).message, url, state: this.state },
          "could not check the API key with Schematic; keeping the last verdict",
        );
      }
      return this.state;
    }
    if (status === 401 || status === 403) {
      this.rejection = `HTTP ${status} on GET ${CHECK_PATH}`;
      this.record("rejected");
    } else if (status >= 200 && status < 300) {
      this.rejection = undefined;
      this.record("valid");
    } else {
      this.o.log.warn(
        { status, url, state: this.state },
        "could not check the API key with Schematic; keeping the last verdict",
      );
    }
    return this.state;
  }

  private record(state: ApiKeyState): void {
    this.checkedAt = Date.now();
    const previous = this.state;
    this.state = state;
    if (state === previous) return;
    if (state === "rejected") {
      this.o.log.error({ rejection: this.rejection }, this.rejectionMessage);
    } else if (previous === "rejected") {
      this.o.log.info("the Schematic API accepts the API key again");
    }
    this.emit("change", state);
  }
}
