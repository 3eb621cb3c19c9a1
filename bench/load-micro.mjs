#!/usr/bin/env node
// CPU per REST row of each stage of the load (issue 16), on a page of 500 rows built in this process: delimiting the
// rows in the page's bytes, decoding, parsing, mapping, checking and serialising each, and, for comparison, what the
// bare client of the ceiling does (decode and JSON.parse the whole page). Uses dist/ (npm run build first).
// Each kind of page is measured in its own process (shared call sites would slow every stage down).
// Usage: node bench/load-micro.mjs [--iterations N]
import { isAscii } from "node:buffer";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { generateFixture } from "../dist/emulator/generate.js";
import { parseEngineEntity } from "../dist/model/entities.js";
import { companyToRest, restCompanyToEngine, restUserToEngine, userToRest } from "../dist/model/rest.js";
import { arrayMemberSpans } from "../dist/util/json-bytes.js";

const at = process.argv.indexOf("--iterations");
const iterations = at > 0 ? Number(process.argv[at + 1]) : 30;
/** Each kind of page (the emulator's rows, `--generate …,rows=SHAPE`), built only in the process that measures it. */
const page = (rows, kind) => () => {
  const f = generateFixture({ companies: 500, users: 500, flags: 5, seed: 1, rows });
  return kind === "companies"
    ? f.companies.map((c) => JSON.stringify(companyToRest(c)))
    : f.users.map((u) => JSON.stringify(userToRest(u)));
};
const pages = {
  "lean companies": page("lean", "companies"),
  "lean users": page("lean", "users"),
  "full companies": page("full", "companies"),
  "full users": page("full", "users"),
};

const only = process.env.LOAD_MICRO_PAGE;
if (only === undefined) {
  for (const name of Object.keys(pages)) {
    const args = [fileURLToPath(import.meta.url), ...process.argv.slice(2)];
    process.stdout.write(execFileSync(process.execPath, args, { env: { ...process.env, LOAD_MICRO_PAGE: name } }));
  }
}

for (const [name, build] of Object.entries(pages)) {
  if (name !== only) continue;
  const rows = build();
  const kind = name.endsWith("companies") ? "company" : "user";
  const map = kind === "company" ? restCompanyToEngine : restUserToEngine;
  const page = Buffer.from(`{"data":[${rows.join(",")}],"params":{"limit":500,"offset":0}}`);
  const spans = arrayMemberSpans(page, page.length, "data");
  const texts = rows;
  const parsed = texts.map((t) => JSON.parse(t));
  const mapped = parsed.map(map);
  let sink = 0;
  const stages = {
    "ceiling (decode + JSON.parse of the page)": () => {
      sink += JSON.parse(page.toString("utf8")).data.length;
    },
    delimit: () => {
      sink += arrayMemberSpans(page, page.length, "data").length;
    },
    decode: () => {
      const encoding = isAscii(page) ? "latin1" : "utf8";
      for (let i = 0; i < spans.length; i += 2) sink += page.toString(encoding, spans[i], spans[i + 1]).length;
    },
    parse: () => {
      for (const t of texts) sink += JSON.parse(t) ? 1 : 0;
    },
    map: () => {
      for (const r of parsed) sink += map(r).id.length;
    },
    check: () => {
      for (const e of mapped) sink += parseEngineEntity(kind, e).exact ? 1 : 0;
    },
    serialise: () => {
      for (const e of mapped) sink += JSON.stringify(e).length;
    },
  };
  const line = [];
  for (const [stage, run] of Object.entries(stages)) {
    for (let i = 0; i < 5; i++) run();
    const c0 = process.cpuUsage();
    for (let i = 0; i < iterations; i++) run();
    const c = process.cpuUsage(c0);
    line.push(`${stage} ${((c.user + c.system) / iterations / rows.length).toFixed(2)}`);
  }
  console.log(`${name} (${Math.round(page.length / rows.length)} B a row), µs CPU a row: ${line.join(", ")}`);
  if (sink < 0) console.log(sink);
}
