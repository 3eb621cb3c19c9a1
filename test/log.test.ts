/**
 * The logger's second line of defence: whatever a log line says, the values in Config.secrets never reach the
 * output — as written, and as JSON escapes them (a PEM client key holds line breaks, which a JSON line shows as
 * `\n`). The secrets come from the settings: the API key, the Redis password, a password in REDIS_URL that
 * REDIS_PASSWORD overrides, the Sentinel password, the TLS client key.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { after, describe, test } from "node:test";
import { loadConfig } from "../src/config/index.js";
import { createLogger } from "../src/util/log.js";

const dir = mkdtempSync(join(tmpdir(), "log-test-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function capture(secrets: string[]): { log: ReturnType<typeof createLogger>; text: () => string } {
  let out = "";
  const destination = new Writable({
    write(chunk, _enc, cb) {
      out += String(chunk);
      cb();
    },
  });
  return { log: createLogger({ level: "debug", format: "json", secrets, destination }), text: () => out };
}

describe("createLogger masks secrets", () => {
  const pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcw\n-----END PRIVATE KEY-----\n";
  writeFileSync(join(dir, "key.pem"), pem);
  writeFileSync(join(dir, "cert.pem"), "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n");
  const config = loadConfig({
    SCHEMATIC_API_KEY: "sch_dev_log_test_key",
    REDIS_SENTINEL_ADDRS: "s1:26379",
    REDIS_SENTINEL_MASTER: "mymaster",
    REDIS_SENTINEL_PASSWORD: "sentinel-Secret-42",
    REDIS_PASSWORD: "redis-Secret-43",
    REDIS_TLS_CERT_FILE: join(dir, "cert.pem"),
    REDIS_TLS_KEY_FILE: join(dir, "key.pem"),
  });

  test("every secret of the settings, in messages and fields, raw and JSON-escaped", () => {
    const { log, text } = capture(config.secrets);
    log.error({ err: "AUTH sentinel-Secret-42 refused" }, "sentinel said sentinel-Secret-42");
    log.warn({ detail: { quoted: "password redis-Secret-43" } }, "redis");
    log.info({ key: pem }, `key file: ${pem}`);
    log.info({ apiKey: "sch_dev_log_test_key", header: "X-Schematic-Api-Key: sch_dev_log_test_key" }, "api");
    const out = text();
    for (const secret of [
      "sentinel-Secret-42",
      "redis-Secret-43",
      "sch_dev_log_test_key",
      "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcw",
    ]) {
      assert.ok(!out.includes(secret), `${secret} leaked:\n${out}`);
    }
    assert.equal(out.split("\n").filter(Boolean).length, 4, "four lines, still JSON");
    for (const line of out.split("\n").filter(Boolean)) JSON.parse(line);
  });

  test("a password in REDIS_URL that REDIS_PASSWORD overrides is masked too", () => {
    const c = loadConfig({
      SCHEMATIC_API_KEY: "sch_dev_log_test_key",
      REDIS_URL: "redis://user:url-Secret-44@h:6379",
      REDIS_PASSWORD: "redis-Secret-43",
    });
    const { log, text } = capture(c.secrets);
    log.warn("the URL was redis://user:url-Secret-44@h:6379");
    assert.ok(!text().includes("url-Secret-44"), text());
  });
});
