// Three `faye serve --engine redis` nodes on one throwaway redis-server, driven
// by the official faye@1.4.3 Node client: a client of one node receives what
// is published on another, and a long-polling client whose every poll lands on
// a different node loses nothing and gets each publisher's messages in order.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import {
  bounded, makeClient, sleep, startProxy, startRedis, startServer, waitFor,
} from './helpers.mjs';

const NODES = 3;
// How long we keep listening to be sure nothing more (a duplicate) arrives.
const QUIET_MS = 500;

// Requests carrying a /meta/connect go to the targets in turn, on their own
// counter, so consecutive polls always land on different nodes; other requests
// take turns too.
function startRoundRobinProxy(targets) {
  const turns = { connect: 0, other: 0 };
  return startProxy(targets, {
    route: (isConnect) => (isConnect ? turns.connect++ : turns.other++) % targets.length,
  });
}

// Everything goes to the first target still alive; a target that fails a
// request is given up on for good (a load balancer's health check).
function startFailoverProxy(targets) {
  const dead = new Set();
  return startProxy(targets, {
    route: () => Math.max(0, targets.findIndex((_, i) => !dead.has(i))),
    failed: (index) => dead.add(index),
  });
}

describe(`${NODES} faye serve nodes on one Redis`, () => {
  let redis;
  let nodes = [];
  let clients = [];

  const newClient = (url, transport) => {
    const c = makeClient(url, transport);
    clients.push(c);
    return c;
  };

  before(async () => {
    redis = await startRedis();
    nodes = await Promise.all(Array.from({ length: NODES }, () => startServer({
      extraArgs: ['--engine', 'redis', '--redis-url', redis.url],
    })));
  });

  afterEach(async () => {
    const closing = clients;
    clients = [];
    await Promise.all(closing.map((c) => c.close()));
  });

  after(async () => {
    const exits = await Promise.all(nodes.map((node) => node.stop()));
    await redis?.stop();
    exits.forEach((exit, i) => assert.deepEqual(exit, { code: 0, signal: null },
      `node ${i} did not exit cleanly on SIGTERM; stderr:\n${nodes[i].stderr()}`));
  });

  for (const transport of ['websocket', 'long-polling']) {
    it(`a subscriber on node A receives what is published on B and C, over ${transport}`,
      { timeout: 30_000 }, async () => {
        const channel = `/cluster/${transport}`;
        const subscriber = newClient(nodes[0].url, transport);
        const publishers = [newClient(nodes[1].url, transport), newClient(nodes[2].url, transport)];
        const received = [];
        await bounded(subscriber.client.subscribe(channel, (data) => received.push(data)),
          5000, `subscribe to ${channel} on node A`);

        // No pause after the acknowledgement: a subscription acknowledged on one
        // node must see every later publish on any node.
        for (const [i, publisher] of publishers.entries()) {
          await bounded(publisher.client.publish(channel, { from: i + 1, text: `hello ${i}` }),
            5000, `publish on node ${'BC'[i]}`);
        }
        await waitFor(() => received.length >= 2, 10_000,
          `2 deliveries on node A (have ${received.length})`);
        await sleep(QUIET_MS);

        assert.deepEqual(received, [{ from: 1, text: 'hello 0' }, { from: 2, text: 'hello 1' }]);
        // What the server sent, before the client's own channel filter.
        const raw = subscriber.deliveries(channel);
        assert.deepEqual(raw.map(({ message }) => message.data), received);
        for (const { message, transport: via } of raw) {
          assert.equal(via, transport, `a delivery arrived over ${via}`);
          assert.ok(!('clientId' in message), `delivery carries a clientId: ${JSON.stringify(message)}`);
        }
        // Faye silently falls back to long-polling when a WebSocket fails.
        for (const c of [subscriber, ...publishers]) {
          assert.equal(c.connectionType(), transport);
          assert.ok(c.outgoing.some((m) =>
            m.channel === '/meta/connect' && m.connectionType === transport),
          `no /meta/connect with connectionType ${transport}`);
        }
        if (transport === 'long-polling') {
          assert.equal(subscriber.client._dispatcher.transports.websocket, undefined,
            'a WebSocket was opened');
        }
        // The three clients are three different sessions, each on its own node.
        assert.equal(new Set([subscriber, ...publishers].map((c) => c.clientId())).size, 3);
      });
  }

  it('a long-polling client whose every poll goes to another node receives 10,000 messages, ' +
    'none lost or reordered', {
    timeout: 90_000,
  }, async (t) => {
    const PUBLISHERS = 2;
    const PER_PUBLISHER = 5000;
    const BURST = 250;
    const TOTAL = PUBLISHERS * PER_PUBLISHER;
    const channel = '/cluster/stream';
    const proxy = await startRoundRobinProxy(nodes.map((node) => node.url));
    try {
      const subscriber = newClient(proxy.url, 'long-polling');
      const received = [];
      await bounded(subscriber.client.subscribe(channel, (data) => received.push(data)),
        10_000, 'subscribe through the proxy');
      // The publishers talk to nodes B and C directly, over WebSocket.
      const publishers = Array.from({ length: PUBLISHERS },
        (_, p) => newClient(nodes[1 + (p % (NODES - 1))].url, 'websocket'));
      await Promise.all(publishers.map((c) =>
        bounded(c.client.publish('/cluster/warm-up', {}), 10_000, 'warm-up publish')));

      // Each publisher: bursts of BURST publishes in one tick, numbered, the
      // next burst once the last is acknowledged; both publishers at once.
      await Promise.all(publishers.map(async (publisher, p) => {
        for (let start = 0; start < PER_PUBLISHER; start += BURST) {
          const burst = [];
          for (let n = start; n < Math.min(start + BURST, PER_PUBLISHER); n++) {
            burst.push(publisher.client.publish(channel, { p, n }));
          }
          await bounded(Promise.all(burst), 20_000, `publisher ${p}'s burst from ${start}`);
        }
      }));
      await waitFor(() => received.length >= TOTAL, 60_000,
        `${TOTAL} deliveries (have ${received.length})`);
      await sleep(QUIET_MS);

      // Faye's client resends every message still unanswered when its transport
      // goes down, which it does itself when any reply (a held /meta/connect's
      // too) takes longer than 1.2 x the server's timeout: then any server
      // delivers those messages twice. The publishers' transports must have
      // stayed up (resends do not pass the outgoing extensions again, so the
      // event is what shows them).
      for (const [p, publisher] of publishers.entries()) {
        assert.deepEqual(publisher.events.filter((e) => e.startsWith('transport:down')), [],
          `publisher ${p}'s transport went down: it resent what was pending`);
      }

      for (let p = 0; p < PUBLISHERS; p++) {
        const seen = received.filter((d) => d.p === p).map((d) => d.n);
        const wrong = seen.findIndex((n, k) => n !== k);
        assert.equal(wrong, -1, `publisher ${p}: position ${wrong} holds ` +
          `${JSON.stringify(seen.slice(Math.max(0, wrong - 3), wrong + 5))} (from position ${Math.max(0, wrong - 3)})`);
        assert.equal(seen.length, PER_PUBLISHER, `publisher ${p}: deliveries`);
      }
      assert.equal(received.length, TOTAL, 'each message once');

      // Over the wire, by long-polling, in one session (no re-handshake, which
      // would mean the cluster had given up on the client).
      const raw = subscriber.deliveries(channel);
      assert.equal(raw.length, TOTAL);
      assert.deepEqual([...new Set(raw.map(({ transport: via }) => via))], ['long-polling']);
      assert.equal(subscriber.connectionType(), 'long-polling');
      assert.equal(subscriber.outgoing.filter((m) => m.channel === '/meta/handshake').length, 1,
        'the subscriber handshook more than once');

      // The proxy really moved the client: its polls went round all three
      // nodes, and each node answered some of them with part of the stream.
      const { connects, deliveries } = proxy.log;
      const perNode = nodes.map((_, i) => connects.filter((n) => n === i).length);
      t.diagnostic(`polls per node: ${perNode}; deliveries per node: ${deliveries}`);
      assert.ok(perNode.every((count) => count >= 2), `/meta/connect requests per node: ${perNode}`);
      assert.ok(deliveries.every((count) => count > 0),
        `deliveries per node: ${deliveries} (the stream did not come through every node)`);
      assert.equal(deliveries.reduce((a, b) => a + b, 0), TOTAL,
        `deliveries through the proxy per node: ${deliveries}`);
    } finally {
      // The clients first, so that their disconnects still reach a node.
      const closing = clients;
      clients = [];
      await Promise.all(closing.map((c) => c.close()));
      await proxy.close();
    }
  });
  // Faye's client resends a connect that failed with the same message id, and the
  // engine hands the answer it last gave that id out again: so the answer the
  // killed node was giving (or had just taken from the queue) is not lost.
  it('a node killed mid-stream: its long-polling client carries on through another node, ' +
    'losing nothing', { timeout: 60_000 }, async (t) => {
    const TOTAL = 3000;
    const BURST = 100;
    const channel = '/cluster/failover';
    const doomed = await startServer({ extraArgs: ['--engine', 'redis', '--redis-url', redis.url] });
    let killed = false;
    const proxy = await startFailoverProxy([doomed.url, nodes[0].url]);
    try {
      const subscriber = newClient(proxy.url, 'long-polling');
      const received = [];
      await bounded(subscriber.client.subscribe(channel, (data) => received.push(data.n)),
        10_000, 'subscribe through the proxy');
      const publisher = newClient(nodes[1].url, 'websocket');
      // Connected first: Faye's client sends the publish that made it handshake
      // after the ones made meanwhile.
      await bounded(publisher.client.publish('/cluster/warm-up', {}), 10_000, 'warm-up publish');
      for (let start = 0; start < TOTAL; start += BURST) {
        if (start === TOTAL / 3) {
          // Whatever the doomed node is doing with the subscriber's poll (holding
          // it, or answering it with the burst just published), it dies now.
          doomed.proc.kill('SIGKILL');
          killed = true;
        }
        const burst = [];
        for (let n = start; n < start + BURST; n++) {
          burst.push(publisher.client.publish(channel, { n }));
        }
        await bounded(Promise.all(burst), 20_000, `the burst from ${start}`);
      }
      await waitFor(() => received.length >= TOTAL, 30_000,
        `${TOTAL} deliveries (have ${received.length})`);
      await sleep(QUIET_MS);

      assert.deepEqual(publisher.events.filter((e) => e.startsWith('transport:down')), [],
        'the publisher\'s transport went down: it resent what was pending');
      const wrong = received.findIndex((n, k) => n !== k);
      assert.equal(wrong, -1, `position ${wrong} holds ` +
        `${JSON.stringify(received.slice(Math.max(0, wrong - 3), wrong + 5))}`);
      assert.equal(received.length, TOTAL, 'each message once');
      assert.equal(subscriber.outgoing.filter((m) => m.channel === '/meta/handshake').length, 1,
        'the subscriber handshook again: its session was lost');
      const { deliveries } = proxy.log;
      t.diagnostic(`deliveries through the doomed node, then the survivor: ${deliveries}`);
      assert.ok(deliveries[0] > 0 && deliveries[1] > 0,
        `deliveries per node: ${deliveries} (the stream did not move)`);
    } finally {
      const closing = clients;
      clients = [];
      await Promise.all(closing.map((c) => c.close()));
      await proxy.close();
      if (!killed) await doomed.stop();
    }
  });
});
