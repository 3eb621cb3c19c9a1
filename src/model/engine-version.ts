/**
 * The default cache version: the version key of the rules engine bundled with the pinned official TypeScript SDK
 * (docs/design/decisions.md "Cache version"), read from that engine at start-up so that a package upgrade moves the key
 * namespace with it.
 *
 * The engine is asked in a short-lived child process: importing the SDK and initialising its WASM engine costs
 * ~55–60 MB of RSS that a process never gives back (and a worker thread keeps ~12 MB of it), while the child's
 * memory goes when it exits. The key is only read here; nothing else in the replicator uses the SDK at run time.
 */
import { execFile } from "node:child_process";
import { createRequire } from "node:module";

const SDK = "@schematichq/schematic-typescript-node";
/** Prefix of the child's one answer line (anything else the SDK might print is ignored). */
const ANSWER = "engine-version-key:";
const TIMEOUT_MS = 60_000;

/**
 * Run with `node -e` (CommonJS, no file needed: works from dist/ and from src/ under tsx alike). It exits once it has
 * answered, whatever the SDK left running.
 */
const CHILD = `
const answer = (value) =>
  process.stdout.write(${JSON.stringify(ANSWER)} + JSON.stringify(value) + "\\n", () => process.exit(0));
(async () => {
  const sdk = require(process.argv[1]);
  const engine = new sdk.RulesEngineClient();
  await engine.initialize();
  return engine.getVersionKey();
})().then(
  (key) => answer({ key: key || null }),
  (err) => answer({ error: err instanceof Error ? err.message : String(err) }),
);
`;

export async function engineVersionKey(): Promise<string> {
  const sdkPath = createRequire(import.meta.url).resolve(SDK);
  const answer = await new Promise<{ key?: string | null; error?: string }>((resolve, reject) => {
    execFile(
      process.execPath,
      ["-e", CHILD, sdkPath],
      { timeout: TIMEOUT_MS, maxBuffer: 1 << 20, windowsHide: true },
      (err, stdout, stderr) => {
        const line = stdout.split("\n").find((l) => l.startsWith(ANSWER));
        if (line) {
          try {
            resolve(JSON.parse(line.slice(ANSWER.length)));
            return;
          } catch {
            // fall through: reported below as an unreadable answer
          }
        }
        const thrown = stderr.split("\n").find((l) => /^\w*Error\b/.test(l));
        const detail = err?.killed
          ? `no answer within ${TIMEOUT_MS / 1000} s`
          : err?.signal
            ? `its process ended with ${err.signal}`
            : typeof err?.code === "string"
              ? err.message
              : (thrown ?? `its process exited with code ${err?.code ?? 0} without answering`);
        reject(new Error(`cannot read the version key of the bundled rules engine (${SDK}): ${detail}`));
      },
    );
  });
  if (answer.error !== undefined) throw new Error(answer.error);
  if (!answer.key) throw new Error("the bundled rules engine reported no version key");
  return answer.key;
}
