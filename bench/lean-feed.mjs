#!/usr/bin/env node
// A REST feed of lean rows for load measurements (issue 16): GET /companies, /users (limit/offset, the `ids` filter)
// and their /count, with rows built from a template (companies ~3.6 KB: two keys, two traits, a plan, a subscription
// with one product, an entitlement, a metric; users ~1.1 KB: one key, one trait) so that the feed costs little CPU.
// Ids are comp_0000001… and user_0000001…, in id order. No datastream: run the emulator beside it for that.
// Usage: node bench/lean-feed.mjs [--port P] [--companies N] [--users N]   (prints "lean-feed listening on URL")
import { createServer } from "node:http";
import { fileURLToPath } from "node:url";

const T = "2024-04-01T23:25:53Z";
const U = "2024-04-18T21:26:39Z";
const ENV = "env_synthetic";
const key = (type, k) => ({
  created_at: T,
  definition: { created_at: T, entity_type: type, id: `ekd_${type}_${k}`, key: k, updated_at: T },
  definition_id: `ekd_${type}_${k}`,
  entity_id: "@ID@",
  entity_type: type,
  environment_id: ENV,
  id: `ek_@ID@_${k}`,
  key: k,
  updated_at: U,
  value: k === "id" ? "@ID@" : `@ID@@${k}.example.com`,
});
const trait = (type, name, traitType, value) => ({
  created_at: T,
  definition: {
    created_at: T,
    display_name: name,
    entity_type: type,
    hierarchy: [name],
    id: `trdf_${type}_${name}`,
    trait_type: traitType,
    updated_at: T,
  },
  definition_id: `trdf_${type}_${name}`,
  environment_id: ENV,
  id: `et_@ID@_${name}`,
  updated_at: U,
  value,
});
const product = {
  billing_scheme: "per_unit",
  created_at: T,
  currency: "usd",
  environment_id: ENV,
  external_id: "prod_2b87de8896e630",
  id: "bilp_ai_credits",
  interval: "month",
  name: "bilp_ai_credits",
  package_size: 1,
  price: 0,
  price_external_id: "price_87de8896e630af",
  price_id: "bpri_b87de8896e630a",
  price_tier: [],
  provider_type: "schematic",
  quantity: 1,
  subscription_id: "bsub_@ID@",
  updated_at: T,
  usage_type: "licensed",
};
const COMPANY = {
  add_ons: [],
  billing_credit_balances: { bcrd_ai_tokens: 7671 },
  billing_subscriptions: [
    {
      cancel_at_period_end: false,
      company_id: "@ID@",
      created_at: T,
      currency: "usd",
      customer_external_id: "cus_@ID@",
      discounts: [],
      id: "bsub_@ID@",
      interval: "month",
      period_end: 1785542400,
      period_start: 1782864000,
      products: [product],
      provider_type: "schematic",
      status: "active",
      subscription_external_id: "sub_@ID@",
      total_price: 0,
    },
  ],
  created_at: T,
  custom_plan_billings: [],
  entitlements: [
    {
      allocation: 1000,
      event_name: "api_call",
      feature_id: "feat_api_access",
      feature_key: "api-access",
      metric_period: "current_month",
      metric_reset_at: "2026-08-01T00:00:00Z",
      month_reset: "first_of_month",
      soft_limit: 800,
      usage: 1989,
      value_type: "numeric",
    },
  ],
  entity_traits: [trait("company", "seats", "number", "@N@"), trait("company", "region", "string", "us")],
  environment_id: ENV,
  id: "@ID@",
  keys: [key("company", "domain"), key("company", "id")],
  metrics: [
    {
      account_id: "acc_synthetic",
      captured_at_max: T,
      captured_at_min: T,
      company_id: "@ID@",
      created_at: T,
      environment_id: ENV,
      event_subtype: "api_call",
      month_reset: "first_of_month",
      period: "current_month",
      value: 42,
    },
  ],
  name: "@ID@",
  payment_methods: [],
  plan: { added_on: T, id: "plan_pro", included_credit_grants: [], name: "plan_pro", plan_version_id: "plvr_pro_1" },
  plans: [{ id: "plan_pro", name: "plan_pro" }],
  rules: [],
  updated_at: U,
  user_count: 0,
};
const USER = {
  company_memberships: [],
  created_at: T,
  entity_traits: [trait("user", "role", "string", "@N@")],
  environment_id: ENV,
  id: "@ID@",
  keys: [key("user", "email")],
  name: "User @ID@ (synthetic lean row)",
  traits: { role: "@N@", team: "platform-engineering" },
  updated_at: U,
};
const TEMPLATES = {
  companies: JSON.stringify(COMPANY).split(/(@ID@|@N@)/),
  users: JSON.stringify(USER).split(/(@ID@|@N@)/),
};

/** The id of row `i` (0-based) of a listing. */
export const leanId = (kind, i) => `${kind === "companies" ? "comp" : "user"}_${String(i + 1).padStart(7, "0")}`;

/** Row `i` of the companies or users listing, as JSON text. */
export function leanRow(kind, i) {
  const id = leanId(kind, i);
  let out = "";
  for (const part of TEMPLATES[kind]) out += part === "@ID@" ? id : part === "@N@" ? String(i % 1000) : part;
  return out;
}

function serve({ port = 0, companies = 100_000, users = 100_000 }) {
  const size = (kind) => (kind === "companies" ? companies : users);
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://feed");
    const m = /^\/(companies|users)(\/count)?$/.exec(url.pathname);
    if (!m) {
      res.writeHead(404).end("{}");
      return;
    }
    const kind = m[1];
    res.writeHead(200, { "content-type": "application/json" });
    if (m[2]) {
      res.end(`{"data":{"count":${size(kind)}},"params":{}}`);
      return;
    }
    const limit = Number(url.searchParams.get("limit") ?? 100);
    const offset = Number(url.searchParams.get("offset") ?? 0);
    const rows = [];
    const ids = url.searchParams.getAll("ids");
    if (ids.length > 0) {
      for (const id of ids) {
        const i = Number(id.slice(5)) - 1;
        if (i >= 0 && i < size(kind) && leanId(kind, i) === id) rows.push(leanRow(kind, i));
      }
    } else {
      for (let i = offset; i < Math.min(size(kind), offset + limit); i++) rows.push(leanRow(kind, i));
    }
    res.end(`{"data":[${rows.join(",")}],"params":{"limit":${limit},"offset":${offset}}}`);
  });
  server.listen(port, "127.0.0.1", () => {
    process.stdout.write(`lean-feed listening on http://127.0.0.1:${server.address().port}\n`);
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const opts = {};
  for (let i = 2; i < process.argv.length; i += 2)
    opts[process.argv[i].replace(/^--/, "")] = Number(process.argv[i + 1]);
  serve(opts);
}
