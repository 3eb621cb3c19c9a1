/**
 * A flood far larger than every queue (issue 4): with tiny COMPANY/USER/FLAGS_CHANNEL_SIZE the replicator stops
 * reading the socket while its queues are full (TCP backpressure: the backlog waits in the server, not in the
 * replicator), so its resident memory stays bounded, and nothing is dropped: Redis ends equal to the emulator and
 * the SDK reads the last values.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { bulk, churn, markerChange, rssBytes, type Stack, sdkSeesMarker, sleep, startStack } from "./helpers/faults.js";

const MB = 1024 * 1024;

describe("faults: a flood larger than all queues", () => {
  let s: Stack;
  before(async () => {
    s = await startStack({
      env: {
        COMPANY_CHANNEL_SIZE: "8",
        USER_CHANNEL_SIZE: "8",
        FLAGS_CHANNEL_SIZE: "4",
        NUM_WORKERS: "2",
        BATCH_SIZE: "5",
      },
    });
    await s.rep.waitReady();
  });
  after(async () => s?.close());

  test("memory stays bounded, queues stay near their capacity, nothing is lost", async (t) => {
    const baseline = await rssBytes(s.rep);
    // About 30k changes, most of ~2 KB (~50 MB of frames), queued on the connection at once.
    const changes = churn(30_000, { tag: "flood", seed: 41, entities: 4000 });
    let peakRss = baseline;
    let peakDepth = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        try {
          peakRss = Math.max(peakRss, await rssBytes(s.rep));
          const queues = (await s.rep.debug()).queues as Record<string, number>;
          peakDepth = Math.max(peakDepth, queues.company ?? 0, queues.user ?? 0, queues.flags ?? 0);
        } catch {}
        await sleep(100);
      }
    })();
    await bulk(s, changes, 5000);
    await markerChange(s);
    try {
      await s.waitConsistent(50_000);
    } finally {
      sampling = false;
      await sampler;
    }
    t.diagnostic(
      `RSS baseline ${Math.round(baseline / MB)} MB, peak ${Math.round(peakRss / MB)} MB; peak queue depth ${peakDepth}`,
    );
    assert.ok(peakRss < 400 * MB, `RSS peaked at ${Math.round(peakRss / MB)} MB`);
    // 2 lanes of 8 per kind: a full lane pauses the socket; frames already parsed from one read still land.
    assert.ok(peakDepth < 2 * 8 + 200, `queues stayed bounded (peak ${peakDepth})`);
    const debug = await s.rep.debug();
    const messages = debug.messages as Record<string, number>;
    assert.equal(messages.dropped, 0);
    assert.ok((messages.received ?? 0) >= changes.length, `received ${messages.received} of ${changes.length}`);
    await sdkSeesMarker(s);
  });
});
