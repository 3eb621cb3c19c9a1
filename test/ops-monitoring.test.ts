/**
 * The alert rules (deploy/helm/schematic-replicator/files/alert-rules.yaml) and the Grafana dashboard
 * (files/grafana-dashboard.json) against the metrics a real writer and a real standby expose:
 *
 * - `promtool check rules` and `promtool test rules test/alerts/alert-rules.test.yaml` pass (skipped with the
 *   reason when promtool is not installed; .ci/run installs it);
 * - every metric the rules and the dashboard name is in a real scrape, and every series the rule unit tests feed
 *   promtool exists, with the same labels, in a real scrape (so the unit tests test the real shape);
 * - the real scrapes of a healthy writer and standby, held for 40 minutes, fire no alert (a standby is no broken
 *   writer);
 * - the dashboard is well formed: unique panel ids, panels on the 24-column grid, every query on the data source
 *   variable and filtered by the namespace and job variables.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { parse as parseYaml, stringify } from "yaml";
import { loadFixtureFile, type RunningEmulator, startEmulator } from "../src/emulator/index.js";
import { type RedisServer, startRedis } from "./helpers/redis.js";
import { type ReplicatorProcess, startReplicator, testEnv } from "./helpers/replicator.js";
import { FIXTURE, opsTool, ROOT, requireTool, runProgram } from "./ops-helpers.js";

const FILES = join(ROOT, "deploy", "helm", "schematic-replicator", "files");
const RULES_FILE = join(FILES, "alert-rules.yaml");
const RULE_TESTS = join(ROOT, "test", "alerts", "alert-rules.test.yaml");
const promtool = opsTool("promtool", "apt-get install -y prometheus, or go install …/prometheus/cmd/promtool");

interface Rules {
  groups: { rules: { alert: string; expr: string }[] }[];
}
interface Panel {
  id: number;
  type: string;
  gridPos: { x: number; y: number; w: number; h: number };
  datasource?: { uid: string };
  targets?: { expr: string; datasource: { uid: string } }[];
}
const rules = parseYaml(readFileSync(RULES_FILE, "utf8")) as Rules;
const alerts = rules.groups.flatMap((g) => g.rules.map((r) => r.alert));
const exprs = rules.groups.flatMap((g) => g.rules.map((r) => r.expr));
const dashboard = JSON.parse(readFileSync(join(FILES, "grafana-dashboard.json"), "utf8")) as {
  panels: Panel[];
  templating: { list: { name: string; type: string }[] };
};
const queries = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
// biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's variable syntax, not a template.
const DATASOURCE = "${datasource}";
/** Labels Prometheus adds to a target's series (not exposed by the replicator itself). */
const TARGET_LABELS = new Set(["namespace", "job", "instance", "pod"]);

/** Metric names in PromQL expressions (ours, and Node's process metrics). */
function metricNames(expressions: string[]): Set<string> {
  const names = new Set<string>();
  for (const e of expressions)
    for (const m of e.matchAll(/\b(?:schematic_replicator|process|nodejs)_\w+/g)) names.add(m[0]);
  return names;
}

/** A series `name{a="x",b="y"}` as its name and labels (label order ignored). */
function parseSeries(series: string): { name: string; labels: Map<string, string> } {
  const brace = series.indexOf("{");
  const name = brace < 0 ? series : series.slice(0, brace);
  const labels = new Map<string, string>();
  if (brace >= 0) for (const m of series.slice(brace).matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels.set(m[1]!, m[2]!);
  return { name, labels };
}

/** The samples of an exposition as `[series, value]`. */
function samples(text: string): [string, number][] {
  return text
    .split("\n")
    .filter((l) => l && !l.startsWith("#"))
    .map((l) => [l.slice(0, l.lastIndexOf(" ")), Number(l.slice(l.lastIndexOf(" ") + 1))]);
}

describe("alert rules and dashboard", { timeout: 180_000 }, () => {
  test("promtool: the rules are valid and pass their unit tests", { skip: promtool.skip }, async () => {
    const bin = requireTool(promtool, "promtool");
    const check = await runProgram(bin, ["check", "rules", RULES_FILE], ROOT);
    assert.equal(check.code, 0, check.stdout + check.stderr);
    assert.match(check.stdout, new RegExp(`SUCCESS: ${alerts.length} rules found`));
    const unit = await runProgram(bin, ["test", "rules", RULE_TESTS], ROOT);
    assert.equal(unit.code, 0, unit.stdout + unit.stderr);
    assert.match(unit.stdout, /SUCCESS/);
    // Every alert has a test that makes it fire.
    const tests = parseYaml(readFileSync(RULE_TESTS, "utf8")) as {
      tests: { alert_rule_test: { alertname: string; exp_alerts: unknown[] }[] }[];
    };
    const fired = new Set(
      tests.tests.flatMap((t) => t.alert_rule_test.filter((a) => a.exp_alerts.length > 0).map((a) => a.alertname)),
    );
    assert.deepEqual([...fired].sort(), [...alerts].sort());
  });

  test("the dashboard is well formed and filtered by the data source, namespace and job variables", () => {
    const ids = dashboard.panels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, "unique panel ids");
    for (const p of dashboard.panels) {
      assert.ok(p.gridPos.x >= 0 && p.gridPos.x + p.gridPos.w <= 24, `panel ${p.id} within the grid`);
      if (p.type === "row") continue;
      assert.equal(p.datasource?.uid, DATASOURCE, `panel ${p.id} data source`);
      assert.ok(p.targets && p.targets.length > 0, `panel ${p.id} has queries`);
      for (const t of p.targets) {
        assert.equal(t.datasource.uid, DATASOURCE);
        assert.match(t.expr, /namespace=~"\$namespace",job=~"\$job"/, `panel ${p.id}: ${t.expr}`);
      }
    }
    assert.deepEqual(
      dashboard.templating.list.map((v) => v.name),
      ["datasource", "namespace", "job"],
    );
  });

  describe("against a real writer and standby", () => {
    let redis: RedisServer;
    let emulator: RunningEmulator;
    let writer: ReplicatorProcess;
    let standby: ReplicatorProcess;
    let scrapes: { instance: string; text: string }[];

    before(async () => {
      [redis, emulator] = await Promise.all([startRedis(), startEmulator({ fixture: loadFixtureFile(FIXTURE) })]);
      const env = testEnv({ REDIS_ADDR: redis.addr, SCHEMATIC_API_URL: emulator.url });
      writer = await startReplicator(env);
      await writer.waitReady();
      standby = await startReplicator(env);
      await standby.waitReady();
      scrapes = [
        { instance: "10.0.0.1:8090", text: await writer.metrics() },
        { instance: "10.0.0.2:8090", text: await standby.metrics() },
      ];
      assert.match(scrapes[0]!.text, /^schematic_replicator_role\{role="writer"\} 1$/m);
      assert.match(scrapes[1]!.text, /^schematic_replicator_role\{role="standby"\} 1$/m);
    });

    after(async () => {
      await Promise.all([writer?.stop(), standby?.stop()]);
      await emulator?.close();
      await redis?.stop();
    });

    test("every metric the rules and the dashboard name is in a real scrape", () => {
      const exposed = new Set(scrapes.flatMap((s) => samples(s.text).map(([series]) => parseSeries(series).name)));
      const named = metricNames([...exprs, ...queries]);
      assert.ok(named.size >= 20, `found ${named.size} names`);
      for (const name of named) assert.ok(exposed.has(name), `${name} is exposed`);
    });

    test("every series the rule unit tests use exists, with the same labels, in a real scrape", () => {
      const exposed = new Set(
        scrapes.flatMap((s) =>
          samples(s.text).map(([series]) => {
            const { name, labels } = parseSeries(series);
            return `${name}${JSON.stringify([...labels].sort())}`;
          }),
        ),
      );
      const unit = parseYaml(readFileSync(RULE_TESTS, "utf8")) as { tests: { input_series: { series: string }[] }[] };
      const used = unit.tests.flatMap((t) => t.input_series.map((s) => s.series));
      assert.ok(used.length > 20);
      for (const series of used) {
        const { name, labels } = parseSeries(series);
        for (const target of TARGET_LABELS) labels.delete(target);
        assert.ok(exposed.has(`${name}${JSON.stringify([...labels].sort())}`), `${series} is shaped like /metrics`);
      }
    });

    test("a healthy writer and standby, held for 40 minutes, fire no alert", { skip: promtool.skip }, async () => {
      const bin = requireTool(promtool, "promtool");
      const target = (instance: string) => `namespace="flags",job="schematic-replicator",instance="${instance}"`;
      const input = scrapes.flatMap(({ instance, text }) =>
        samples(text)
          .filter(([, value]) => Number.isFinite(value))
          .map(([series, value]) => ({
            series: series.includes("{")
              ? series.replace(/\}$/, `,${target(instance)}}`)
              : `${series}{${target(instance)}}`,
            values: `${value}+0x40`,
          })),
      );
      const dir = mkdtempSync(join(tmpdir(), "alerts-"));
      try {
        const file = join(dir, "healthy.test.yaml");
        writeFileSync(
          file,
          stringify({
            rule_files: [RULES_FILE],
            evaluation_interval: "1m",
            tests: [
              {
                interval: "1m",
                input_series: input,
                alert_rule_test: alerts.map((alertname) => ({ eval_time: "40m", alertname, exp_alerts: [] })),
              },
            ],
          }),
        );
        const out = await runProgram(bin, ["test", "rules", file], ROOT);
        assert.equal(out.code, 0, out.stdout + out.stderr);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });
});
