// The official faye@1.4.3 Node client against `faye serve`, once over
// WebSocket and once over long-polling (HTTP POST).
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import {
  bounded, makeClient, postBayeux, sleep, startServer, waitFor,
} from './helpers.mjs';

const TEST_TIMEOUT = 30_000;
// How long we keep listening to be sure something does NOT arrive.
const QUIET_MS = 500;

for (const transport of ['websocket', 'long-polling']) {
  describe(`faye@1.4.3 client over ${transport}`, () => {
    let server;
    let clients = [];

    // A new instrumented client for `url` (default: the shared server).
    const newClient = (url = server.url) => {
      const c = makeClient(url, transport);
      clients.push(c);
      return c;
    };

    // Subscribes and waits (bounded) for the server to acknowledge.
    // Returns the Subscription wrapped in an object (it is a thenable).
    const subscribe = async (c, channel, onData = () => {}) => {
      const subscription = c.client.subscribe(channel, onData);
      await bounded(subscription, 5000, `subscribe to ${channel}`);
      return { subscription };
    };

    const publish = (c, channel, data) =>
      bounded(c.client.publish(channel, data), 5000, `publish to ${channel}`);

    // The client really talks `transport` (Faye silently falls back to
    // long-polling when a WebSocket cannot be opened).
    // Only /meta/connect messages sent from index `since` on are considered.
    const assertTransport = async (c, since = 0) => {
      await waitFor(() => c.connectionType() === transport, 5000,
        `connectionType ${transport} (is ${c.connectionType()})`);
      assert.equal(c.client._dispatcher._transport.connectionType, transport);
      await waitFor(
        () => c.outgoing.slice(since).some((m) =>
          m.channel === '/meta/connect' && m.connectionType === transport),
        5000, `a /meta/connect sent with connectionType ${transport}`);
      if (transport === 'long-polling') {
        assert.ok(!c.outgoing.some((m) => m.connectionType === 'websocket'));
        assert.equal(c.client._dispatcher.transports.websocket, undefined,
          'no WebSocket was opened');
      }
    };

    // Raw deliveries on `channel`: each came over `transport` with the
    // expected channel and no clientId. Returns their `data` values.
    const wireData = (c, channel) => c.deliveries(channel).map(({ message, transport: via }) => {
      assert.equal(message.channel, channel);
      assert.ok(!('clientId' in message), `delivery carries a clientId: ${JSON.stringify(message)}`);
      assert.equal(via, transport, `delivery arrived over ${via}`);
      return message.data;
    });

    before(async () => { server = await startServer(); });

    afterEach(async () => {
      const closing = clients;
      clients = [];
      await Promise.all(closing.map((c) => c.close()));
    });

    after(async () => { if (server) await server.stop(); });

    it('connects over the expected transport', { timeout: TEST_TIMEOUT }, async () => {
      const c = newClient();
      await subscribe(c, '/transport/check');
      await assertTransport(c);
      assert.ok(c.events.some((e) => e.startsWith('transport:up')), `events: ${c.events}`);
      assert.ok(!c.events.some((e) => e.startsWith('transport:down')), `events: ${c.events}`);
    });

    it('subscribe, publish and receive', { timeout: TEST_TIMEOUT }, async () => {
      const subscriber = newClient();
      const publisher = newClient();
      const received = [];
      await subscribe(subscriber, '/basic/news', (data) => received.push(data));
      await assertTransport(subscriber);

      const data = { text: 'hello', n: 42, list: [1, 'two', null, true], nested: { ok: 'héllo ✓' } };
      await publish(publisher, '/basic/news', data);
      await assertTransport(publisher);

      await waitFor(() => received.length >= 1, 5000, 'the message');
      assert.deepEqual(received, [data]);

      // What came over the wire: channel, data, and no clientId.
      assert.deepEqual(wireData(subscriber, '/basic/news'), [data]);
      const [{ message }] = subscriber.deliveries('/basic/news');
      assert.equal(message.channel, '/basic/news');
      assert.deepEqual(message.data, data);
      assert.equal(message.clientId, undefined);
    });

    it('routes * and ** wildcards', { timeout: TEST_TIMEOUT }, async () => {
      // Separate clients: one client with both subscriptions would get one
      // message per publish from the server and filter it locally.
      const star = newClient();
      const globstar = newClient();
      const publisher = newClient();
      const starSeen = [];
      const globSeen = [];
      const starSub = star.client.subscribe('/chat/*');
      starSub.withChannel((channel, data) => starSeen.push([channel, data]));
      const globSub = globstar.client.subscribe('/chat/**');
      globSub.withChannel((channel, data) => globSeen.push([channel, data]));
      await bounded(starSub, 5000, 'subscribe /chat/*');
      await bounded(globSub, 5000, 'subscribe /chat/**');
      await assertTransport(star);
      await assertTransport(globstar);

      await publish(publisher, '/chat/a/b', { n: 1 });
      await publish(publisher, '/chat/a', { n: 2 });

      await waitFor(() => globSeen.length >= 2, 5000, '/chat/** to get 2 messages');
      await waitFor(() => starSeen.length >= 1, 5000, '/chat/* to get /chat/a');
      await sleep(QUIET_MS);

      assert.deepEqual(starSeen, [['/chat/a', { n: 2 }]]);
      assert.deepEqual(globSeen.sort(), [['/chat/a', { n: 2 }], ['/chat/a/b', { n: 1 }]].sort());
      // The server, not the client's own filter, decided: /chat/a/b never
      // reached the /chat/* subscriber.
      assert.deepEqual(wireData(star, '/chat/a'), [{ n: 2 }]);
      assert.deepEqual(wireData(star, '/chat/a/b'), []);
      assert.deepEqual(wireData(globstar, '/chat/a'), [{ n: 2 }]);
      assert.deepEqual(wireData(globstar, '/chat/a/b'), [{ n: 1 }]);
    });

    it('delivers to several subscribers exactly once each', { timeout: TEST_TIMEOUT }, async () => {
      const subscribers = [newClient(), newClient(), newClient()];
      const publisher = newClient();
      const received = subscribers.map(() => []);
      await Promise.all(subscribers.map((c, i) =>
        subscribe(c, '/multi/room', (data) => received[i].push(data))));
      // The third client also matches through a wildcard: the server must
      // still send it the message once.
      await subscribe(subscribers[2], '/multi/*');
      for (const c of subscribers) await assertTransport(c);

      await publish(publisher, '/multi/room', { hello: 'all' });
      await waitFor(() => received.every((r) => r.length >= 1), 5000, 'all 3 subscribers');
      await sleep(QUIET_MS);

      for (const [i, c] of subscribers.entries()) {
        assert.deepEqual(received[i], [{ hello: 'all' }], `subscriber ${i}`);
        assert.deepEqual(wireData(c, '/multi/room'), [{ hello: 'all' }], `subscriber ${i} on the wire`);
      }
    });

    it('stops delivering after subscription.cancel()', { timeout: TEST_TIMEOUT }, async () => {
      const subscriber = newClient();
      const publisher = newClient();
      const gone = [];
      const kept = [];
      const { subscription } = await subscribe(subscriber, '/unsub/gone', (d) => gone.push(d));
      await subscribe(subscriber, '/unsub/kept', (d) => kept.push(d));
      await assertTransport(subscriber);

      await publish(publisher, '/unsub/gone', { n: 1 });
      await waitFor(() => gone.length === 1, 5000, 'the message before cancel()');

      subscription.cancel();
      await waitFor(() => subscriber.incoming.some(({ message }) =>
        message.channel === '/meta/unsubscribe' && message.successful === true &&
        [].concat(message.subscription).includes('/unsub/gone')),
      5000, 'the /meta/unsubscribe reply');

      await publish(publisher, '/unsub/gone', { n: 2 });
      await publish(publisher, '/unsub/kept', { n: 3 });
      await waitFor(() => kept.length === 1, 5000, 'the message on the channel still subscribed');
      await sleep(QUIET_MS);

      assert.deepEqual(gone, [{ n: 1 }]);
      assert.deepEqual(wireData(subscriber, '/unsub/gone'), [{ n: 1 }]);
      assert.deepEqual(wireData(subscriber, '/unsub/kept'), [{ n: 3 }]);
    });

    it('rejects a publish to an invalid channel with 405', { timeout: TEST_TIMEOUT }, async () => {
      const c = newClient();
      let errback;
      const publication = c.client.publish('/*', { x: 1 });
      publication.errback((error) => { errback = error; });
      await assert.rejects(bounded(publication, 5000, 'publish to /*'), (error) => {
        assert.equal(error.code, 405);
        assert.deepEqual(error.params, ['/*']);
        assert.equal(error.message, 'Invalid channel');
        return true;
      });
      await waitFor(() => errback, 1000, 'the errback');
      assert.equal(errback.code, 405);
      await assertTransport(c);

      const reply = c.incoming.map(({ message }) => message).find((m) => m.channel === '/*');
      assert.equal(reply.successful, false);
      assert.equal(reply.error, '405:/*:Invalid channel');
    });

    it('forgets a client after disconnect()', { timeout: TEST_TIMEOUT }, async () => {
      const c = newClient();
      await subscribe(c, '/bye/now');
      await assertTransport(c);
      const clientId = c.clientId();
      assert.match(clientId, /^[0-9a-z]+$/);

      await bounded(c.client.disconnect(), 5000, 'disconnect');
      const disconnectReply = c.incoming.map(({ message }) => message)
        .find((m) => m.channel === '/meta/disconnect');
      assert.equal(disconnectReply.successful, true);

      const { status, body } = await postBayeux(server.url, [
        { channel: '/meta/connect', clientId, connectionType: 'long-polling', id: 'raw1' },
      ]);
      assert.equal(status, 200);
      assert.equal(body.length, 1, JSON.stringify(body));
      const [reply] = body;
      assert.equal(reply.channel, '/meta/connect');
      assert.equal(reply.id, 'raw1');
      assert.equal(reply.successful, false);
      assert.equal(reply.error, `401:${clientId}:Unknown client`);
      assert.equal(reply.advice?.reconnect, 'handshake', JSON.stringify(reply));
      assert.ok(!('clientId' in reply), JSON.stringify(reply));
    });

    it('recovers after the server restarts', { timeout: TEST_TIMEOUT }, async () => {
      let first = await startServer();
      let second;
      try {
        const subscriber = newClient(first.url);
        const received = [];
        await subscribe(subscriber, '/restart/x', (data) => received.push(data));
        await assertTransport(subscriber);
        const oldId = subscriber.clientId();
        const before = subscriber.outgoing.length;

        const exit = await first.stop();
        const { port } = first;
        first = null;
        second = await startServer({ port });

        // The client re-handshakes (new clientId) and re-subscribes by itself.
        const newId = await waitFor(() => {
          const id = subscriber.clientId();
          return id && id !== oldId && id;
        }, 10000, 'a new clientId');
        await waitFor(() => subscriber.incoming.some(({ message }) =>
          message.channel === '/meta/subscribe' && message.successful === true &&
          message.clientId === newId && [].concat(message.subscription).includes('/restart/x')),
        10000, 'the re-subscription');
        const sent = subscriber.outgoing.slice(before);
        assert.ok(sent.some((m) => m.channel === '/meta/handshake'), 'sent a handshake');
        assert.ok(sent.some((m) => m.channel === '/meta/subscribe' && m.clientId === newId &&
          m.subscription === '/restart/x'), 'sent /meta/subscribe again');
        await assertTransport(subscriber, before);

        const publisher = newClient(second.url);
        await publish(publisher, '/restart/x', { after: 'restart' });
        await waitFor(() => received.length >= 1, 5000, 'the message after the restart');
        assert.deepEqual(received, [{ after: 'restart' }]);
        assert.deepEqual(wireData(subscriber, '/restart/x'), [{ after: 'restart' }]);
        assert.deepEqual(exit, { code: 0, signal: null }, 'the first server exits cleanly on SIGTERM');
      } finally {
        const closing = clients;
        clients = [];
        await Promise.all(closing.map((c) => c.close()));
        if (first) await first.stop();
        if (second) await second.stop();
      }
    });
  });
}
