import assert from "node:assert/strict";
import { test } from "node:test";
import { memberSpan, memberText } from "../src/util/json-span.js";

test("memberText returns the exact text of a top-level member, whatever its neighbours hold", () => {
  const frame =
    '{"entity_type":"rulesengine.Company","data":{"id":"c1","keys":{"k":"a\\"}b"},"x":[1,{"y":"]"}],"data":"no"},' +
    '"message_type":"full","n":-1.5e3,"t":true,"z":null}';
  const data = memberText(frame, "data");
  assert.equal(data, '{"id":"c1","keys":{"k":"a\\"}b"},"x":[1,{"y":"]"}],"data":"no"}');
  assert.deepEqual(JSON.parse(data!), JSON.parse(frame).data);
  assert.equal(memberText(frame, "n"), "-1.5e3");
  assert.equal(memberText(frame, "t"), "true");
  assert.equal(memberText(frame, "z"), "null");
  assert.equal(memberText(frame, "message_type"), '"full"');
  // Only top-level members: "id" exists only inside data.
  assert.equal(memberText(frame, "id"), undefined);
  // memberSpan says where: the same text, by offsets.
  const [start, end] = memberSpan(frame, "data")!;
  assert.equal(frame.slice(start, end), data);
  assert.equal(memberSpan(frame, "id"), undefined);
});

test("memberText follows JSON.parse: whitespace, escaped names, backslashes before quotes, the last duplicate", () => {
  const text = ' {\n "a" : "x\\\\" ,\t"d\\u0061ta": [ "\\\\\\"" , {} ] , "b":{"c":"\\\\"}, "a": {"v":2} }\r\n';
  const parsed = JSON.parse(text);
  assert.deepEqual(JSON.parse(memberText(text, "data")!), parsed.data);
  assert.deepEqual(JSON.parse(memberText(text, "b")!), parsed.b);
  assert.equal(memberText(text, "a"), '{"v":2}');
});

test("memberText never throws on malformed input and returns undefined", () => {
  for (const bad of [
    "",
    "[]",
    "{}",
    "null",
    '"data"',
    '{"data"',
    '{"data":',
    '{"data":{"a":1}',
    '{"data":"unterminated}',
    '{"data" 1}',
    "{data:1}",
    '{"a":1 "data":2}',
    '{"\\x":1,"data":2}',
  ]) {
    assert.equal(memberText(bad, "data"), undefined, bad);
  }
});
