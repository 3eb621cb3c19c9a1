// The command line of `npm run bench` (docs/performance.md, "Running the benchmark").
import { resolve } from "node:path";

export const SCENARIOS = ["throughput", "latency", "trickle", "fresh", "load", "scale", "ceilings"];
export const ROW_SHAPES = ["full", "lean"];

const USAGE = `Usage: npm run bench -- [--scenario ${SCENARIOS.join("|")}] [--runs N] [--cluster] [--json-only]
    [--companies N] [--users N] [--rate N] [--duration S] [--trickle-rate N] [--trickle-duration S]
    [--fresh-rates N,N] [--fresh-duration S] [--sizes N,N|C+U,…] [--scale-companies N] [--rows full,lean]
    [--rest-wait S] [--wait-quiet S] [--no-ceilings] [--profile DIR] [--node-args "--flag …"] [--env K=V]
    [--root DIR]
`;

export class UsageError extends Error {
  name = "UsageError";
}

/** `100000`, `100k`, `1.5M` → an integer. */
export function parseCount(text) {
  const m = /^(\d+(?:\.\d+)?)([kKmM]?)$/.exec(String(text ?? "").trim());
  if (!m) return undefined;
  const n = Number(m[1]) * (m[2] === "" ? 1 : /k/i.test(m[2]) ? 1e3 : 1e6);
  return Number.isSafeInteger(n) ? n : undefined;
}

/**
 * One point of the scale curve: `N` entities (companies = min(scaleCompanies, N/2), users the rest: 200k is 100k +
 * 100k, 1M is 100k + 900k, as in issue 16) or `C+U` given explicitly.
 */
export function parseSize(text, scaleCompanies) {
  const parts = String(text).split("+");
  if (parts.length === 2) {
    const [companies, users] = parts.map(parseCount);
    if (companies === undefined || users === undefined || companies < 1) return undefined;
    return { companies, users };
  }
  const n = parseCount(text);
  if (n === undefined || n < 2) return undefined;
  const companies = Math.min(scaleCompanies, Math.floor(n / 2));
  return { companies, users: n - companies };
}

export function parseOptions(argv) {
  const o = {
    runs: undefined,
    scenarios: new Set(),
    cluster: false,
    jsonOnly: false,
    profile: undefined,
    companies: 100_000,
    users: 100_000,
    rate: 5000,
    duration: 20,
    trickleRate: 50,
    trickleDuration: 10,
    freshRates: [1000, 5000],
    freshDuration: 15,
    sizeTexts: ["100k", "500k", "1M"],
    scaleCompanies: 100_000,
    rows: [...ROW_SHAPES],
    restWait: 60,
  };
  const int = (name, v, min = 1) => {
    const n = parseCount(v);
    if (n === undefined || n < min) throw new UsageError(`${name}: expected an integer ≥ ${min}, got ${v}`);
    return n;
  };
  const list = (v) =>
    String(v ?? "")
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean);
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let value;
    const eq = arg.indexOf("=");
    if (arg.startsWith("--") && eq > 0) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    const next = () => value ?? argv[++i];
    switch (arg) {
      case "--runs":
        o.runs = int(arg, next());
        break;
      case "--scenario":
        for (const s of list(next())) {
          if (s === "all") for (const x of SCENARIOS) o.scenarios.add(x);
          else if (SCENARIOS.includes(s)) o.scenarios.add(s);
          else throw new UsageError(`unknown scenario ${JSON.stringify(s)} (expected ${SCENARIOS.join(", ")} or all)`);
        }
        break;
      case "--cluster":
        o.cluster = true;
        break;
      case "--rest-wait":
        o.restWait = int(arg, next(), 0);
        break;
      case "--no-ceilings":
        o.noCeilings = true;
        break;
      case "--json-only":
        o.jsonOnly = true;
        break;
      case "--env": {
        const [k, ...v] = String(next()).split("=");
        o.env = { ...o.env, [k]: v.join("=") };
        break;
      }
      case "--node-args":
        o.nodeArgs = String(next()).split(/\s+/).filter(Boolean);
        break;
      case "--profile":
        o.profile = resolve(String(next()));
        break;
      case "--wait-quiet":
        o.waitQuiet = int(arg, next(), 0);
        break;
      case "--root":
        o.root = resolve(String(next()));
        break;
      case "--companies":
        o.companies = int(arg, next(), 10);
        break;
      case "--users":
        o.users = int(arg, next(), 0);
        break;
      case "--rate":
        o.rate = int(arg, next());
        break;
      case "--duration":
        o.duration = int(arg, next());
        break;
      case "--trickle-rate":
        o.trickleRate = int(arg, next());
        break;
      case "--trickle-duration":
        o.trickleDuration = int(arg, next());
        break;
      case "--fresh-rates":
        o.freshRates = list(next()).map((r) => int(arg, r));
        if (o.freshRates.length === 0) throw new UsageError(`${arg}: expected a list of rates, e.g. 1000,5000`);
        break;
      case "--fresh-duration":
        o.freshDuration = int(arg, next());
        break;
      case "--sizes":
        o.sizeTexts = list(next());
        if (o.sizeTexts.length === 0) throw new UsageError(`${arg}: expected a list of sizes, e.g. 100k,500k,1M`);
        break;
      case "--scale-companies":
        o.scaleCompanies = int(arg, next());
        break;
      case "--rows":
        o.rows = list(next());
        for (const r of o.rows) {
          if (!ROW_SHAPES.includes(r))
            throw new UsageError(`--rows: expected ${ROW_SHAPES.join(" and/or ")}, got ${r}`);
        }
        break;
      case "-h":
      case "--help":
        throw new UsageError("");
      default:
        throw new UsageError(`unknown argument ${JSON.stringify(argv[i])}`);
    }
  }
  o.sizes = o.sizeTexts.map((text) => {
    const size = parseSize(text, o.scaleCompanies);
    if (!size) throw new UsageError(`--sizes: expected N (e.g. 1M) or COMPANIES+USERS, got ${JSON.stringify(text)}`);
    return size;
  });
  if (o.scenarios.size === 0) for (const x of SCENARIOS) o.scenarios.add(x);
  return o;
}

/** Parses the command line, or prints the usage (with the problem) and exits 2. */
export function optionsOrExit(argv) {
  try {
    return parseOptions(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`${err.message ? `bench: ${err.message}\n` : ""}${USAGE}`);
    process.exit(2);
  }
}
