import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { keySlot } from "../src/store/cluster.js";
import { escapeGlob, goToLower, jsToLower, KeyScheme } from "../src/store/keys.js";
import { type RedisServer, startRedis } from "./helpers/redis.js";

describe("lower-casing", () => {
  it("matches Go strings.ToLower where JavaScript differs", () => {
    assert.equal(jsToLower("İ"), "i\u0307");
    assert.equal(goToLower("İ"), "i");
    assert.equal(jsToLower("ΟΔΟΣ"), "οδος");
    assert.equal(goToLower("ΟΔΟΣ"), "οδοσ");
    assert.equal(goToLower("ΣΑΣ ΣΑΣ"), "σασ σασ");
    assert.equal(goToLower("İSTANBUL"), "istanbul");
  });

  it("agrees with JavaScript on ASCII and ordinary Unicode", () => {
    for (const s of ["ACME.com", "Stripe_ID", "cus_ABC", "ÀÉÎÕÜ", "Straße", "ǅ", "ДОМ", "", "a:b:c"]) {
      assert.equal(goToLower(s), jsToLower(s), s);
    }
  });

  it("leaves letters unknown to Unicode 15.0 unchanged, as Go does", () => {
    assert.equal(goToLower("\u{10d50}"), "\u{10d50}");
    assert.equal(goToLower("A\u{10d50}B"), "a\u{10d50}b");
  });
});

describe("KeyScheme", () => {
  const keys = new KeyScheme("schematic:", "4b54a537");

  it("builds flag, id and lookup keys", () => {
    assert.equal(keys.flag("New-Checkout"), "schematic:flags:4b54a537:new-checkout");
    assert.equal(keys.companyId("Comp_9F8E"), "schematic:company:4b54a537:Comp_9F8E");
    assert.equal(keys.userId("User_77"), "schematic:user:4b54a537:User_77");
    assert.deepEqual(keys.companyLookups("Stripe_ID", "cus_ABC"), ["schematic:company:4b54a537:stripe_id:cus_abc"]);
    assert.deepEqual(keys.userLookups("Email", "Jane@Acme.com"), ["schematic:user:4b54a537:email:jane@acme.com"]);
    assert.equal(keys.marker(), "schematic:datastream:state:4b54a537");
  });

  it("adds Go's spelling of a lookup key when it differs", () => {
    assert.deepEqual(keys.companyLookups("city", "İSTANBUL"), [
      "schematic:company:4b54a537:city:i\u0307stanbul",
      "schematic:company:4b54a537:city:istanbul",
    ]);
    assert.deepEqual(keys.userLookups("ΟΝΟΜΑ", "ΟΔΟΣ"), [
      "schematic:user:4b54a537:ονομα:οδος",
      "schematic:user:4b54a537:ονομα:οδοσ",
    ]);
    assert.deepEqual(keys.companyLookups("domain", "ACME.com"), ["schematic:company:4b54a537:domain:acme.com"]);
  });

  it("honours a prefix override", () => {
    const k = new KeyScheme("myapp:", "v1");
    assert.equal(k.flag("F"), "myapp:flags:v1:f");
    assert.equal(k.companyId("c1"), "myapp:company:v1:c1");
    assert.deepEqual(k.userLookups("e", "X"), ["myapp:user:v1:e:x"]);
    assert.equal(k.marker(), "myapp:datastream:state:v1");
    assert.equal(k.scanPattern("flags"), "myapp:flags:v1:*");
  });

  it("takes cache keys apart for cleanup", () => {
    assert.equal(keys.versionOf("schematic:flags:abcd1234:f"), "abcd1234");
    assert.equal(keys.versionOf("schematic:company:abcd1234:domain:acme.com"), "abcd1234");
    assert.equal(keys.versionOf("schematic:company:abcd1234"), undefined);
    assert.equal(keys.versionOf("schematic:datastream:state:abcd1234"), undefined);
    assert.equal(keys.versionOf("schematic:credit-lease:a:b"), undefined);
    assert.equal(keys.versionOf("other:flags:abcd1234:f"), undefined);
    assert.deepEqual(keys.parse("schematic:user:v:email:a:b"), {
      kind: "user",
      version: "v",
      rest: ["email", "a", "b"],
    });
  });

  it("escapes glob characters in scan patterns", () => {
    assert.equal(escapeGlob("a*b?c[d]e\\f^"), "a\\*b\\?c\\[d\\]e\\\\f\\^");
    const k = new KeyScheme("te*st[1]:", "v?");
    assert.equal(k.scanPattern("company"), "te\\*st\\[1\\]:company:v\\?:*");
    assert.equal(k.scanPattern("company", null), "te\\*st\\[1\\]:company:*");
  });

  it("computes cluster hash slots like Redis", () => {
    // Reference values from the Redis Cluster specification and CLUSTER KEYSLOT.
    assert.equal(keySlot("123456789"), 0x31c3 & 16383);
    assert.equal(keySlot("foo"), 12182);
    assert.equal(keySlot("{user1000}.following"), keySlot("user1000"));
    assert.equal(keySlot("foo{bar}{zap}"), keySlot("bar"));
    assert.equal(keySlot("foo{{bar}}zap"), keySlot("{bar"));
    assert.notEqual(keySlot("foo{}{bar}"), keySlot("bar"));
  });
});

describe("KeyScheme against Redis SCAN", () => {
  let server: RedisServer;
  before(async () => {
    server = await startRedis();
  });
  after(async () => {
    await server.stop();
  });

  it("a prefix with glob characters matches only itself", async () => {
    const r = server.client();
    const k = new KeyScheme("te*st[1]:", "v1");
    await r.mset("te*st[1]:flags:v1:a", "1", "teXst1:flags:v1:b", "2", "te*st[1]:flags:v2:c", "3");
    const [, found] = await r.scan("0", "MATCH", k.scanPattern("flags"), "COUNT", 1000);
    assert.deepEqual(found, ["te*st[1]:flags:v1:a"]);
    const [, all] = await r.scan("0", "MATCH", k.scanPattern("flags", null), "COUNT", 1000);
    assert.deepEqual(all.sort(), ["te*st[1]:flags:v1:a", "te*st[1]:flags:v2:c"]);
  });
});
