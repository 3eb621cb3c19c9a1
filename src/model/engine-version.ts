/**
 * The default cache version: the version key of the rules engine bundled with the pinned official TypeScript SDK
 * (DESIGN.md §6), read from that engine at start-up so that a package upgrade moves the key namespace with it.
 */
import sdk from "@schematichq/schematic-typescript-node";

export async function engineVersionKey(): Promise<string> {
  const engine = new sdk.RulesEngineClient();
  await engine.initialize();
  const key = engine.getVersionKey();
  if (!key) throw new Error("the bundled rules engine reported no version key");
  return key;
}
