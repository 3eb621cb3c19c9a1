/**
 * Who holds the writer lease: the lease key's value is `{owner}-{32 hex}`, the owner being the holder's
 * `hostname-pid`. Read periodically so that a standby can name the writer it waits behind, in its logs (when it
 * starts standing by and whenever the holder changes) and on /health.
 */
import type { RedisClient } from "./connect.js";

/** The owner (`hostname-pid`) of a lease token. */
export function leaseOwner(token: string): string {
  return token.replace(/-[0-9a-f]{32}$/, "");
}

export class LeaseHolderWatch {
  /** The holder's owner id, null when nobody holds the lease, undefined until first read. */
  holder: string | null | undefined;
  private timer: NodeJS.Timeout | undefined;
  private reading = false;

  constructor(
    private readonly client: RedisClient,
    private readonly key: string,
    private readonly intervalMs: number,
    /** Called when the holder changes (`from` undefined on the first read). */
    private readonly onChange: (from: string | null | undefined, to: string | null) => void,
  ) {}

  start(): void {
    if (this.timer) return;
    void this.read();
    this.timer = setInterval(() => void this.read(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private async read(): Promise<void> {
    if (this.reading) return;
    this.reading = true;
    try {
      const token = await this.client.get(this.key);
      const holder = token === null ? null : leaseOwner(token);
      if (holder === this.holder) return;
      const from = this.holder;
      this.holder = holder;
      this.onChange(from, holder);
    } catch {
      // Redis is not answering: the status probes report that; the holder is read again next time.
    } finally {
      this.reading = false;
    }
  }
}
