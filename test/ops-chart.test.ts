/**
 * The Helm chart (deploy/helm/schematic-replicator), rendered and linted by a real `helm` (skipped with the reason
 * when helm is not installed; .ci/run installs it):
 *
 * - `helm lint --strict` passes with the chart's test values;
 * - the render is what docs/operations.md promises: two replicas rolled one at a time, probes on /health (startup
 *   generous), secrets mounted as files (never in the environment), non-root with a read-only root filesystem, a
 *   PodDisruptionBudget of minAvailable 1 over the same pods, a Service for /ready and /metrics, and the optional
 *   ServiceMonitor, PrometheusRule (exactly files/alert-rules.yaml) and dashboard ConfigMap;
 * - the environment the Deployment gives the container is accepted by the replicator's own settings loader;
 * - a missing API key or Redis address fails the render with one line; a created Secret rolls the pods on change.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { before, describe, test } from "node:test";
import { parseAllDocuments, parse as parseYaml } from "yaml";
import { loadConfig } from "../src/config/index.js";
import { opsTool, ROOT, requireTool, runProgram } from "./ops-helpers.js";

const CHART = join(ROOT, "deploy", "helm", "schematic-replicator");
const TEST_VALUES = join(CHART, "ci", "test-values.yaml");
const helm = opsTool("helm", "GOFLAGS=-mod=mod go install helm.sh/helm/v4/cmd/helm@v4.3.2");

// biome-ignore lint/suspicious/noExplicitAny: rendered Kubernetes manifests are checked field by field.
type Manifest = any;

describe("the Helm chart", { skip: helm.skip, timeout: 120_000 }, () => {
  let bin: string;

  before(() => {
    bin = requireTool(helm, "helm");
  });

  const helmRun = (args: string[]) => runProgram(bin, args, ROOT, {}, 60_000);
  const render = async (...args: string[]): Promise<Manifest[]> => {
    const out = await helmRun(["template", "rel", CHART, "--namespace", "flags", ...args]);
    assert.equal(out.code, 0, out.stderr);
    return parseAllDocuments(out.stdout)
      .map((doc) => doc.toJS())
      .filter((m) => m);
  };
  const find = (manifests: Manifest[], kind: string) => {
    const found = manifests.filter((m) => m.kind === kind);
    assert.equal(found.length, 1, `one ${kind}`);
    return found[0];
  };

  test("helm lint --strict passes", async () => {
    const out = await helmRun(["lint", CHART, "--strict", "-f", TEST_VALUES]);
    assert.equal(out.code, 0, out.stdout + out.stderr);
    assert.match(out.stdout, /0 chart\(s\) failed/);
  });

  test("two replicas, rolled one at a time, probes on /health, secrets as files, locked down", async () => {
    const manifests = await render("-f", TEST_VALUES);
    const deployment = find(manifests, "Deployment");
    const spec = deployment.spec;
    assert.equal(spec.replicas, 2);
    assert.deepEqual(spec.strategy.rollingUpdate, { maxSurge: 1, maxUnavailable: 0 });
    const pod = spec.template.spec;
    assert.equal(pod.automountServiceAccountToken, false);
    assert.ok(pod.terminationGracePeriodSeconds > 30, "longer than SHUTDOWN_TIMEOUT's default 30s");
    assert.equal(pod.securityContext.runAsNonRoot, true);
    assert.equal(pod.securityContext.runAsUser, 1000, "the image's user");
    assert.equal(pod.containers.length, 1);
    const c = pod.containers[0];
    assert.equal(c.securityContext.readOnlyRootFilesystem, true);
    assert.equal(c.securityContext.allowPrivilegeEscalation, false);
    assert.deepEqual(c.securityContext.capabilities.drop, ["ALL"]);
    assert.ok(c.resources.requests.memory && c.resources.limits.memory);

    const port = c.ports.find((p: Manifest) => p.name === "http");
    for (const probe of ["startupProbe", "livenessProbe", "readinessProbe"]) {
      assert.equal(c[probe].httpGet.path, "/health", probe);
      assert.equal(c[probe].httpGet.port, "http", probe);
    }
    const startup = c.startupProbe;
    assert.ok(startup.periodSeconds * startup.failureThreshold >= 300, "at least 5 minutes to start");

    const env = Object.fromEntries(c.env.map((e: Manifest) => [e.name, e.value]));
    assert.equal(Number(env.HEALTH_PORT), port.containerPort);
    assert.equal(env.REDIS_ADDR, "redis-master.redis.svc:6379");
    assert.ok(!("SCHEMATIC_API_KEY" in env) && !("REDIS_PASSWORD" in env), "no secret in the environment");
    const mount = c.volumeMounts.find((m: Manifest) => m.name === "secrets");
    assert.equal(mount.readOnly, true);
    assert.equal(env.SCHEMATIC_API_KEY_FILE, `${mount.mountPath}/api-key`);
    assert.equal(env.REDIS_PASSWORD_FILE, `${mount.mountPath}/redis-password`);
    const secretVolume = pod.volumes.find((v: Manifest) => v.name === "secrets").secret;
    assert.equal(secretVolume.secretName, "schematic-replicator");
    assert.deepEqual(secretVolume.items, [
      { key: "api-key", path: "api-key" },
      { key: "redis-password", path: "redis-password" },
    ]);
    assert.equal(manifests.filter((m) => m.kind === "Secret").length, 0, "an existing Secret is used as it is");

    // The replicator accepts exactly this environment (files stand in for the mounted Secret).
    const dir = mkdtempSync(join(tmpdir(), "chart-env-"));
    try {
      writeFileSync(join(dir, "api-key"), "sch_test_key\n");
      writeFileSync(join(dir, "redis-password"), "hunter2\n");
      const config = loadConfig(
        {
          ...env,
          SCHEMATIC_API_KEY_FILE: join(dir, "api-key"),
          REDIS_PASSWORD_FILE: join(dir, "redis-password"),
        },
        { isTTY: false },
      );
      assert.equal(config.apiKey, "sch_test_key");
      assert.equal(config.redis.password, "hunter2");
      assert.equal(config.healthPort, port.containerPort);
      assert.equal(config.logFormat, "json");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }

    const selector = spec.selector.matchLabels;
    assert.deepEqual(
      Object.fromEntries(Object.entries(spec.template.metadata.labels).filter(([k]) => k in selector)),
      selector,
    );
    const pdb = find(manifests, "PodDisruptionBudget");
    assert.equal(pdb.spec.minAvailable, 1);
    assert.deepEqual(pdb.spec.selector.matchLabels, selector);
    const service = find(manifests, "Service");
    assert.deepEqual(service.spec.selector, selector);
    assert.deepEqual(
      service.spec.ports.map((p: Manifest) => [p.name, p.port, p.targetPort]),
      [["http", 8090, "http"]],
    );
    assert.equal(find(manifests, "ServiceAccount").automountServiceAccountToken, false);
  });

  test("ServiceMonitor, PrometheusRule (the rules file as it is) and the dashboard, when enabled", async () => {
    const manifests = await render("-f", TEST_VALUES);
    const monitor = find(manifests, "ServiceMonitor");
    const service = find(manifests, "Service");
    assert.deepEqual(monitor.spec.selector.matchLabels, find(manifests, "Deployment").spec.selector.matchLabels);
    for (const [k, v] of Object.entries(monitor.spec.selector.matchLabels)) assert.equal(service.metadata.labels[k], v);
    assert.deepEqual(
      monitor.spec.endpoints.map((e: Manifest) => [e.port, e.path]),
      [["http", "/metrics"]],
    );
    const rule = find(manifests, "PrometheusRule");
    assert.equal(rule.metadata.labels.release, "kube-prometheus-stack", "the labels Prometheus selects rules by");
    const rulesFile = parseYaml(readFileSync(join(CHART, "files", "alert-rules.yaml"), "utf8"));
    assert.deepEqual(rule.spec, rulesFile);
    assert.ok(rulesFile.groups[0].rules.length >= 10);
    const dashboard = find(manifests, "ConfigMap");
    assert.equal(dashboard.metadata.labels.grafana_dashboard, "1");
    const json = readFileSync(join(CHART, "files", "grafana-dashboard.json"), "utf8");
    assert.deepEqual(JSON.parse(dashboard.data["schematic-replicator.json"]), JSON.parse(json));

    const plain = await render("--set", "config.REDIS_ADDR=redis:6379", "--set", "secrets.existingSecret=s");
    for (const kind of ["ServiceMonitor", "PrometheusRule", "ConfigMap"]) {
      assert.ok(!plain.some((m) => m.kind === kind), `${kind} is optional (off by default)`);
    }
  });

  test("a Secret created from values, rolled into the pods by its checksum", async () => {
    const withKey = (key: string) =>
      render(
        "--set",
        "config.REDIS_URL=redis://redis:6379",
        "--set",
        `secrets.apiKey=${key}`,
        "--set",
        "secrets.redisPassword=pw",
      );
    const manifests = await withKey("sch_one");
    const secret = find(manifests, "Secret");
    assert.equal(Buffer.from(secret.data["api-key"], "base64").toString(), "sch_one");
    assert.equal(Buffer.from(secret.data["redis-password"], "base64").toString(), "pw");
    const pod = find(manifests, "Deployment").spec.template;
    assert.equal(pod.spec.volumes.find((v: Manifest) => v.name === "secrets").secret.secretName, secret.metadata.name);
    const checksum = pod.metadata.annotations["checksum/secret"];
    assert.match(checksum, /^[0-9a-f]{64}$/);
    const other = find(await withKey("sch_two"), "Deployment").spec.template.metadata.annotations["checksum/secret"];
    assert.notEqual(other, checksum, "a new key rolls the pods");
  });

  test("without an API key or a Redis address the render fails with one clear line", async () => {
    const noKey = await helmRun(["template", "rel", CHART, "--set", "config.REDIS_ADDR=redis:6379"]);
    assert.notEqual(noKey.code, 0);
    assert.match(noKey.stderr, /set secrets\.existingSecret .* or secrets\.apiKey/);
    const noRedis = await helmRun(["template", "rel", CHART, "--set", "secrets.apiKey=k"]);
    assert.notEqual(noRedis.code, 0);
    assert.match(noRedis.stderr, /name the Redis: config\.REDIS_ADDR/);
    const secretInConfig = await helmRun([
      "template",
      "rel",
      CHART,
      "--set",
      "secrets.apiKey=k",
      "--set",
      "config.REDIS_ADDR=r:1",
      "--set",
      "config.SCHEMATIC_API_KEY=oops",
    ]);
    assert.notEqual(secretInConfig.code, 0);
    assert.match(secretInConfig.stderr, /config\.SCHEMATIC_API_KEY: the chart sets it/);
  });
});
