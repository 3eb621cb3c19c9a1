/**
 * Logs when the probes' answers change: /ready turning 200 or 503 (with the reason), the reason of a 503 changing,
 * /health turning 503 or 200 again. Fed with every status the probes compute, and periodically by the service, so
 * that a flip is logged even when nothing polls.
 */
import type { Logger } from "../util/log.js";
import type { HealthStatus } from "./server.js";

export function probeTransitions(log: Logger): (status: HealthStatus) => void {
  let ready: boolean | undefined;
  let reason: string | undefined;
  let unhealthy: string | undefined;
  return (s) => {
    if (s.ready !== ready) {
      // Not ready at start-up is no news; every later change is.
      if (s.ready)
        log.info({ ready: true, role: s.role }, "/ready now answers 200: Redis holds a complete, current data set");
      else if (ready !== undefined) log.warn({ ready: false, reason: s.reason }, `/ready now answers 503: ${s.reason}`);
    } else if (!s.ready && s.reason !== reason) {
      log.info({ ready: false, reason: s.reason }, `/ready still answers 503, now because: ${s.reason}`);
    }
    if (s.unhealthy !== unhealthy) {
      if (s.unhealthy) log.error({ reason: s.unhealthy }, `/health now answers 503: ${s.unhealthy}`);
      else log.info("/health answers 200 again");
    }
    ready = s.ready;
    reason = s.reason;
    unhealthy = s.unhealthy;
  };
}
