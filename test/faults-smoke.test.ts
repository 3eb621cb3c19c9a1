import { after, before, test } from "node:test";
import { bulk, churn, markerChange, sdkSeesMarker, startStack, type Stack } from "./helpers/faults.js";

let s: Stack;
before(async () => {
  s = await startStack();
  await s.rep.waitReady();
});
after(async () => s?.close());
test("smoke", async () => {
  const t = Date.now();
  await bulk(s, churn(3000));
  await markerChange(s);
  await s.waitConsistent();
  console.log("consistent after", Date.now() - t, await s.rep.debug());
  await sdkSeesMarker(s);
});
