/**
 * What a full's body is stored as (pipeline.ts `dataOf`, fold.ts): the entity's text as received — a slice of the
 * frame's bytes when the frame is ASCII, of its decoded text otherwise — unless validation dropped or filled in
 * something, when the validated entity is serialised. Frames are handed over with their bytes, as the datastream
 * client does.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { company, templates } from "./helpers/faults.js";
import { entityFrame, keys, withPipelineRig } from "./helpers/pipeline.js";

const TEMPLATE = templates().company;

test("a full is stored byte for byte as received (ASCII or not), or serialised when validation changed it", async () => {
  await withPipelineRig({ lease: true }, async (rig) => {
    const ascii = company(TEMPLATE, "comp_ascii", "eu");
    const unicode = company(TEMPLATE, "comp_unicode", "Zürich 🏔");
    const extra = { ...company(TEMPLATE, "comp_extra", "eu"), unknown_field: 1 };
    // Received with spacing of its own, which only storing the received text keeps.
    const spaced = (c: object) => JSON.stringify(c, null, 1);
    const frames = [ascii, unicode, extra].map((c, i) =>
      entityFrame("company", "full", c.id, "@DATA@", `600-${i}`).replace('"@DATA@"', spaced(c)),
    );
    for (const frame of frames) rig.pipeline.handleFrame(frame, Buffer.from(frame, "utf8"));
    await rig.pipeline.whenIdle();
    const stored = async (id: string) => await rig.client.getBuffer(keys.companyId(id));
    assert.deepEqual(await stored("comp_ascii"), Buffer.from(spaced(ascii), "utf8"));
    assert.deepEqual(await stored("comp_unicode"), Buffer.from(spaced(unicode), "utf8"));
    const serialised = JSON.parse((await stored("comp_extra"))!.toString());
    assert.equal(serialised.unknown_field, undefined, "an unknown field is dropped");
    assert.deepEqual(serialised.keys, extra.keys);
    assert.equal(await rig.client.get(keys.companyLookups("slug", "comp_unicode")[0]!), '"comp_unicode"');
  });
});
