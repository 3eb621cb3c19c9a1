/**
 * What a `track` event does to a company: it adds its quantity to every metric the company keeps for the event's
 * subtype (one per metric period), the way the rules engine's `metric` conditions and entitlements read them
 * (`company.metrics` found by event subtype, period and month reset). Periods that rules or entitlements measure
 * but the company has no metric for yet are created, and an all-time count is always kept. A metric whose
 * `valid_until` has passed starts a new period at the event's quantity. Pure: the caller pushes the result as a
 * company partial (metrics are upserted by subtype, period and month reset; docs/design/emulator.md).
 */
import type { Company, CompanyMetric, Condition, Flag, MetricPeriod, MonthReset } from "../model/wire.js";

type PeriodKey = `${MetricPeriod}/${MonthReset}`;

const DAY_MS = 86_400_000;

function utcMidnight(ms: number): number {
  return Math.floor(ms / DAY_MS) * DAY_MS;
}

function firstOfNextMonth(ms: number): number {
  const d = new Date(ms);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
}

/** The same day and time of day as `anchor`, in the month of `ms` shifted by `months` (UTC; clamps like Go's). */
function monthlyAt(anchor: Date, ms: number, months: number): number {
  const d = new Date(ms);
  return Date.UTC(
    d.getUTCFullYear(),
    d.getUTCMonth() + months,
    anchor.getUTCDate(),
    anchor.getUTCHours(),
    anchor.getUTCMinutes(),
    anchor.getUTCSeconds(),
    anchor.getUTCMilliseconds(),
  );
}

/**
 * When the metric period that contains `now` ends (ms since the epoch), or null for all-time. Calendar periods
 * reset at UTC midnight, on Sundays and on the 1st; a billing-cycle month resets on the day and time the
 * company's subscription started, never later than the subscription's end (the rules engine's reset times).
 */
export function periodEnd(period: MetricPeriod, reset: MonthReset, company: Company, now: number): number | null {
  switch (period) {
    case "all_time":
      return null;
    case "current_day":
      return utcMidnight(now) + DAY_MS;
    case "current_week": {
      const daysToSunday = 7 - new Date(now).getUTCDay();
      return utcMidnight(now) + daysToSunday * DAY_MS;
    }
    case "current_month": {
      const sub = company.subscription;
      if (reset !== "billing_cycle" || !sub) return firstOfNextMonth(now);
      const start = Date.parse(sub.period_start);
      const end = Date.parse(sub.period_end);
      if (start > now) return Math.min(firstOfNextMonth(now), start);
      let next = monthlyAt(new Date(start), now, 0);
      if (next <= now) next = monthlyAt(new Date(start), now, 1);
      return Math.min(next, end);
    }
  }
}

function conditionsOf(rules: { conditions: Condition[]; condition_groups: { conditions: Condition[] }[] }[]) {
  return rules.flatMap((r) => [...r.conditions, ...r.condition_groups.flatMap((g) => g.conditions)]);
}

/** The metric periods the flags' rules, the company's rules and its entitlements measure `event` by. */
export function measuredPeriods(event: string, flags: Iterable<Flag>, company: Company): Set<PeriodKey> {
  const out = new Set<PeriodKey>(["all_time/first_of_month"]);
  const rules = [...company.rules];
  for (const f of flags) rules.push(...f.rules);
  for (const c of conditionsOf(rules)) {
    if (c.condition_type === "metric" && c.event_subtype === event) {
      out.add(`${c.metric_period ?? "all_time"}/${c.metric_period_month_reset ?? "first_of_month"}`);
    }
  }
  for (const e of company.entitlements ?? []) {
    if ((e.event_subtype ?? e.event_name) === event && e.metric_period) {
      out.add(`${e.metric_period}/${e.month_reset ?? "first_of_month"}`);
    }
  }
  return out;
}

/**
 * The company's metrics for `event` after it was tracked `quantity` times at `now`: each existing one increased
 * (or restarted, if its period is over), plus one per measured period it lacked. Only the metrics that change.
 */
export function trackedMetrics(
  company: Company,
  event: string,
  quantity: number,
  periods: Set<PeriodKey>,
  now: number,
): CompanyMetric[] {
  const stamp = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString().replace(".000Z", "Z"));
  const out: CompanyMetric[] = [];
  const seen = new Set<PeriodKey>();
  for (const m of company.metrics) {
    if (m.event_subtype !== event) continue;
    seen.add(`${m.period}/${m.month_reset}`);
    const over = m.valid_until !== null && Date.parse(m.valid_until) <= now;
    out.push(
      over
        ? {
            ...m,
            value: quantity,
            created_at: stamp(now)!,
            valid_until: stamp(periodEnd(m.period, m.month_reset, company, now)),
          }
        : { ...m, value: m.value + quantity },
    );
  }
  for (const key of periods) {
    if (seen.has(key)) continue;
    const [period, reset] = key.split("/") as [MetricPeriod, MonthReset];
    out.push({
      account_id: company.account_id,
      environment_id: company.environment_id,
      company_id: company.id,
      event_subtype: event,
      period,
      month_reset: reset,
      value: quantity,
      created_at: stamp(now)!,
      valid_until: stamp(periodEnd(period, reset, company, now)),
    });
  }
  return out;
}
