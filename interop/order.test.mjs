// Per-publisher order with the official faye@1.4.3 Node client: three
// publishers each burst 500 publishes in one tick; every subscriber must get
// each publisher's messages once and in the order it published them.
//
// Over long-polling, Faye's client cuts such a burst into many POSTs sent at
// once on separate connections, which a multi-threaded server reads in
// parallel: this is what the test is about. It checks on the wire that the
// burst really went out that way, and which transport every delivery came by.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { after, before, describe, it } from 'node:test';
import { bounded, makeClient, startServer, waitFor } from './helpers.mjs';

// Faye's Node HTTP transport, wrapped to see its POSTs: how many carried
// publishes, and how many of those were in flight at once.
const require = createRequire(import.meta.url);
const NodeHttp = require('faye/src/transport/node_http.js');
const posts = { sent: 0, inFlight: 0, maxInFlight: 0 };
const request = NodeHttp.prototype.request;
NodeHttp.prototype.request = function (messages) {
  const req = request.call(this, messages);
  if (messages.some((m) => m.data !== undefined && !m.channel.startsWith('/meta/'))) {
    posts.sent += 1;
    posts.inFlight += 1;
    posts.maxInFlight = Math.max(posts.maxInFlight, posts.inFlight);
    req.on('close', () => { posts.inFlight -= 1; });
  }
  return req;
};

const REPETITIONS = 20;
const PUBLISHERS = 3;
const BURST = 500;

for (const transport of ['long-polling', 'websocket']) {
  describe(`per-publisher order over ${transport}`, () => {
    let server;
    before(async () => { server = await startServer(); });
    after(async () => { await server?.stop(); });

    it(`${PUBLISHERS} publishers x ${BURST} messages arrive in order, ${REPETITIONS} times`,
      { timeout: 240_000 }, async () => {
        for (let rep = 0; rep < REPETITIONS; rep++) {
          await burst(server.url, transport, rep);
        }
      });
  });
}

async function burst(url, transport, rep) {
  const channel = `/order/${transport}/${rep}`;
  // One subscriber on each transport, so both delivery paths are checked.
  const subscribers = ['long-polling', 'websocket'].map((t) => makeClient(url, t));
  const publishers = Array.from({ length: PUBLISHERS }, () => makeClient(url, transport));
  const everyone = [...subscribers, ...publishers];
  try {
    const received = subscribers.map(() => []);
    await Promise.all(subscribers.map((s, i) =>
      bounded(s.client.subscribe(channel, (data) => received[i].push(data)), 10_000, 'subscribe')));
    // Connected publishers, so that the burst is nothing but publishes.
    await Promise.all(publishers.map((p) =>
      bounded(p.client.publish(`${channel}/warm-up`, {}), 10_000, 'warm-up publish')));

    // The burst: every publisher, all in one tick.
    Object.assign(posts, { sent: 0, maxInFlight: 0 });
    const publications = [];
    for (let n = 0; n < BURST; n++) {
      for (let p = 0; p < PUBLISHERS; p++) {
        publications.push(publishers[p].client.publish(channel, { p, n }));
      }
    }
    await bounded(Promise.all(publications), 60_000, 'the burst to be acknowledged');
    const total = PUBLISHERS * BURST;
    await waitFor(() => received.every((r) => r.length >= total), 60_000,
      `${total} deliveries to each subscriber (have ${received.map((r) => r.length)})`);

    for (const p of publishers) {
      assert.equal(p.connectionType(), transport, `a publisher fell back to ${p.connectionType()}`);
    }
    if (transport === 'long-polling') {
      // The burst went out as many POSTs at once: what puts order at stake.
      assert.ok(posts.sent >= 2 * PUBLISHERS && posts.maxInFlight >= 2,
        `the burst went out as ${posts.sent} POSTs, at most ${posts.maxInFlight} at once`);
    } else {
      assert.equal(posts.sent, 0, 'publishes went by HTTP in the websocket run');
    }
    subscribers.forEach((s, i) => {
      const raw = s.deliveries(channel);
      assert.equal(raw.length, total, `rep ${rep}: raw deliveries to the ${i}th subscriber`);
      const wrong = raw.filter(({ transport: t }) => t !== ['long-polling', 'websocket'][i]);
      assert.deepEqual(wrong.map(({ transport: t }) => t), [], 'deliveries by another transport');
      assert.equal(received[i].length, total, `rep ${rep}: each message once`);
      for (let p = 0; p < PUBLISHERS; p++) {
        const seen = received[i].filter((d) => d.p === p).map((d) => d.n);
        const firstOutOfOrder = seen.findIndex((n, k) => n !== k);
        assert.equal(firstOutOfOrder, -1,
          `rep ${rep}, publisher ${p}, subscriber over ${['long-polling', 'websocket'][i]}: ` +
          `out of order from position ${firstOutOfOrder}: ` +
          `${JSON.stringify(seen.slice(Math.max(0, firstOutOfOrder - 3), firstOutOfOrder + 5))}`);
      }
    });
  } finally {
    await Promise.all(everyone.map((c) => c.close()));
  }
}
