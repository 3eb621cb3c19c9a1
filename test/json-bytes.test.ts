import assert from "node:assert/strict";
import { test } from "node:test";
import { arrayMemberSpans } from "../src/util/json-bytes.js";

/** The elements of the `data` array as the scanner delimits them, each parsed. */
function elements(text: string): unknown[] | undefined {
  const bytes = Buffer.from(text, "utf8");
  const spans = arrayMemberSpans(bytes, bytes.length, "data");
  if (spans === undefined) return undefined;
  const out: unknown[] = [];
  for (let i = 0; i < spans.length; i += 2) out.push(JSON.parse(bytes.toString("utf8", spans[i], spans[i + 1])));
  return out;
}

test("arrayMemberSpans delimits each element of the data array as JSON.parse reads it", () => {
  const page =
    ' {\n "params" : {"data": [1]}, "data" : [ {"id":"c1","keys":[{"key":"k","value":"a\\"}]b"}],"x":[1,{"y":"]"}]},' +
    '\t{"id":"c2","s":"\\\\","n":-1.5e3,"t":true,"z":null,"u":"ünïcødé ✓ 𝄞","e":"\\u005d\\u007d"} ,"str",42,null,[[]],{} ]' +
    ', "more": "x" }\r\n';
  assert.deepEqual(elements(page), JSON.parse(page).data);
  assert.deepEqual(elements('{"data":[]}'), []);
});

test("arrayMemberSpans follows JSON.parse: escaped member names, the last duplicate wins", () => {
  assert.deepEqual(elements('{"d\\u0061ta":[{"a":1}]}'), [{ a: 1 }]);
  assert.deepEqual(elements('{"data":[1],"data":[2,3]}'), [2, 3]);
  // The last `data` is not an array: JSON.parse's page has no data array.
  assert.equal(elements('{"data":[1],"data":{"a":[2]}}'), undefined);
  // A `data` nested in another member, or in an element, is not the page's.
  assert.equal(elements('{"params":{"data":[1]}}'), undefined);
  assert.deepEqual(elements('{"data":[{"data":[9]}]}'), [{ data: [9] }]);
});

test("arrayMemberSpans never throws on malformed input and returns undefined", () => {
  const page = '{"data":[{"id":"a","v":[1,2,{"w":"}"}]},{"id":"b\\"]"}],"params":{"limit":2}}';
  assert.deepEqual(elements(page), JSON.parse(page).data);
  // Every truncation of a page is refused: a page cut short must never pass for a short last page.
  for (let n = 0; n < page.length; n++) assert.equal(elements(page.slice(0, n)), undefined, `prefix of ${n} bytes`);
  for (const bad of [
    "",
    "[]",
    '"data"',
    "{",
    '{"data":[1,2]} x',
    '{"data":[1,2]}}',
    '{"data":[1,,2]}',
    '{"data":[1 2]}',
    '{"data" [1]}',
    "{data:[1]}",
    '{"data":[1],}',
    '{"data":[1]',
    '{"data":["\\"]}',
    '{"data":"[1]"}',
  ]) {
    assert.equal(elements(bad), undefined, bad);
  }
});

test("arrayMemberSpans agrees with JSON.parse on random pages", () => {
  let seed = 7;
  const random = () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x80000000;
  };
  const pieces = ["a", "\\", '"', "]", "}", "[", "{", ",", ":", " ", "é", "✓", "\u0000", "\n"];
  const value = (depth: number): unknown => {
    const r = random();
    if (depth > 3 || r < 0.3) {
      return Array.from({ length: Math.floor(random() * 6) }, () => pieces[Math.floor(random() * pieces.length)]).join(
        "",
      );
    }
    if (r < 0.4) return Math.round(random() * 1e6) / 100;
    if (r < 0.45) return random() < 0.5 ? null : true;
    if (r < 0.7) return Array.from({ length: Math.floor(random() * 4) }, () => value(depth + 1));
    const o: Record<string, unknown> = {};
    for (let i = Math.floor(random() * 4); i > 0; i--) o[String(value(9))] = value(depth + 1);
    return o;
  };
  for (let i = 0; i < 300; i++) {
    const data = Array.from({ length: Math.floor(random() * 5) }, () => value(0));
    const text = JSON.stringify({ before: value(1), data, after: value(1) }, null, i % 3 === 0 ? 1 : undefined);
    assert.deepEqual(elements(text), data);
  }
});
