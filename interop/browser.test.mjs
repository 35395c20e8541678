// The official faye@1.4.3 BROWSER client (faye-browser-min.js from npm) in
// headless Chromium, driven by playwright-core, against the axum embedding
// example (Faye mounted at /node/myapp/faye). One run per browser transport,
// with every other transport switched off by client.disable(...) where Faye
// allows it. Each run checks both what the client says it used and what
// Chromium saw on the wire, since Faye silently falls back to another
// transport when one fails.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, afterEach, before, describe, it } from 'node:test';
import { chromium } from 'playwright-core';
import {
  FAYE_BROWSER_JS, FAYE_EXAMPLE_BIN, recordWire, sleep, startExampleApp, startPageServer, waitFor,
} from './helpers.mjs';

const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const LAUNCH_ARGS = ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic',
  '--no-first-run', '--disable-background-networking', '--disable-component-update',
  '--disable-sync'];
const TEST_TIMEOUT = 30_000;
const WAIT_MS = 10_000; // every wait on the browser is bounded by this
const QUIET_MS = 300;   // listen this long to be sure nothing else arrives

// How the client's traffic can look on the wire (see classify() in helpers.mjs):
//   xhr    same-origin XHR POST, JSON body            (long-polling, and eventsource's sends)
//   cors   cross-origin XHR POST, `message=` form body (cross-origin-long-polling)
//   jsonp  <script> GET with ?message=...&jsonp=...   (callback-polling)
//   ws     WebSocket frames                            (websocket)
//   es     EventSource stream                          (eventsource)
const KINDS = ['xhr', 'cors', 'jsonp', 'ws', 'es'];

// Faye 1.4.3's browser transports, in its preference order
// (src/transport/browser_transports.js). Transport selection
// (src/transport/transport.js, Transport.get) runs twice:
//  - for the handshake, among MANDATORY_CONNECTION_TYPES only
//    (long-polling, callback-polling): so the handshake is always sent by XHR
//    (same origin) or JSON-P (cross-origin). That is expected.
//  - after the handshake, among the server's supportedConnectionTypes: the
//    first enabled type that is usable wins.
//
//   crossOrigin  the page is served from another origin than the endpoint
//   disable      what client.disable() switches off
//   handshake    wire kind carrying /meta/handshake
//   connects     wire kind carrying every /meta/connect
//   delivery     wire kind the published message must arrive by (and no other)
//   absent       wire kinds that must not be used at all
const TRANSPORTS = [
  {
    name: 'websocket',
    crossOrigin: false,
    // long-polling stays enabled: the handshake needs it.
    disable: ['eventsource', 'cross-origin-long-polling', 'callback-polling'],
    handshake: 'xhr', connects: 'ws', delivery: 'ws', absent: ['cors', 'jsonp', 'es'],
  },
  {
    name: 'eventsource',
    crossOrigin: false,
    // long-polling stays enabled: the handshake needs it, and the eventsource
    // transport sends all its messages (including /meta/connect) by XHR POST;
    // only deliveries come down the EventSource stream.
    disable: ['websocket', 'cross-origin-long-polling', 'callback-polling'],
    handshake: 'xhr', connects: 'xhr', delivery: 'es', absent: ['ws', 'cors', 'jsonp'],
  },
  {
    name: 'long-polling',
    crossOrigin: false,
    disable: ['websocket', 'eventsource', 'cross-origin-long-polling', 'callback-polling'],
    handshake: 'xhr', connects: 'xhr', delivery: 'xhr', absent: ['ws', 'es', 'cors', 'jsonp'],
  },
  {
    name: 'cross-origin-long-polling',
    crossOrigin: true,
    // callback-polling cannot be disabled here: cross-origin, the only usable
    // handshake type (long-polling needs the same origin, and
    // cross-origin-long-polling is not in MANDATORY_CONNECTION_TYPES) is
    // callback-polling; with it disabled the client throws "Could not find a
    // usable connection type". So the handshake goes by JSON-P, and everything
    // after it must go by CORS POST (it precedes callback-polling in the order).
    // eventsource and long-polling are same-origin only, but are disabled too.
    disable: ['websocket', 'eventsource', 'long-polling'],
    handshake: 'jsonp', connects: 'cors', delivery: 'cors', absent: ['ws', 'es', 'xhr'],
  },
  {
    name: 'callback-polling',
    crossOrigin: true,
    disable: ['websocket', 'eventsource', 'long-polling', 'cross-origin-long-polling'],
    handshake: 'jsonp', connects: 'jsonp', delivery: 'jsonp', absent: ['ws', 'es', 'xhr', 'cors'],
  },
];

// In the page: creates a Faye client for `endpoint` with `disable`d
// transports, records raw incoming/outgoing messages with an extension, and
// subscribes to `channel`; with `want`, only once the client has chosen that
// transport (until then, Faye sends what it is asked to by long-polling, so a
// subscribe made at once may go before the WebSocket is up). Resolves once
// subscribed (all bounded by `ms`).
function setUpClient({ endpoint, disable, channel, want, ms }) {
  const client = new Faye.Client(endpoint, { retry: 1 });
  for (const type of disable) client.disable(type);
  const type = () => client._dispatcher.connectionType;
  const copy = (message) => JSON.parse(JSON.stringify(message));
  const rec = { incoming: [], outgoing: [], received: [], events: [] };
  window.__faye = { client, rec };
  client.addExtension({
    incoming(message, callback) { rec.incoming.push({ message: copy(message), via: type() }); callback(message); },
    outgoing(message, callback) { rec.outgoing.push({ message: copy(message), via: type() }); callback(message); },
  });
  client.on('transport:up', () => rec.events.push(`up:${type()}`));
  client.on('transport:down', () => rec.events.push(`down:${type()}`));
  if (want) client.connect();
  return new Promise((resolve, reject) => {
    setTimeout(() => reject(new Error(`subscribe to ${channel} over ${want}: not within ${ms} ms ` +
      `(transport: ${type()})`)), ms);
    const ready = () => {
      if (want && type() !== want) return setTimeout(ready, 10);
      const subscription = client.subscribe(channel, (data) => rec.received.push(data));
      subscription.then(() => resolve(true), (error) => reject(new Error(`subscribe: ${error?.message}`)));
    };
    ready();
  });
}

// In the page: publishes `data` to `channel`; resolves once acknowledged.
function publish({ channel, data, ms }) {
  const publication = window.__faye.client.publish(channel, data);
  return new Promise((resolve, reject) => {
    setTimeout(() => reject(new Error(`publish to ${channel}: no reply within ${ms} ms`)), ms);
    publication.then(() => resolve(true), (error) => reject(new Error(`publish: ${error?.message}`)));
  });
}

// In the page: subscribes to `channel`, then publishes `count` messages to it
// in one tick (as an app's "for each item, publish" loop does) and resolves
// with the `n` of every message received on it, in the order received, once
// `count` have arrived (bounded by `ms`).
function burstInOrder({ channel, count, ms }) {
  const { client } = window.__faye;
  const received = [];
  const deadline = (what) => new Promise((_, reject) =>
    setTimeout(() => reject(new Error(`${what}: not within ${ms} ms (${received.length} received)`)), ms));
  const settle = (thenable) => new Promise((resolve, reject) => thenable.then(resolve, reject));
  const subscribed = settle(client.subscribe(channel, (data) => received.push(data.n)));
  return Promise.race([subscribed, deadline('subscribe')]).then(() => {
    const publications = [];
    for (let n = 0; n < count; n++) publications.push(settle(client.publish(channel, { n })));
    return Promise.race([Promise.all(publications), deadline('the burst')]);
  }).then(() => Promise.race([
    new Promise((resolve) => {
      const check = () => (received.length >= count ? resolve(received) : setTimeout(check, 10));
      check();
    }),
    deadline(`${count} deliveries`),
  ]));
}

// In the page: what the client recorded, and the transport it is on.
function clientState() {
  const { client, rec } = window.__faye;
  return {
    ...rec,
    clientId: client._dispatcher.clientId,
    connectionType: client._dispatcher.connectionType,
    transportType: client._dispatcher._transport?.connectionType,
  };
}

// In the page: disconnects (bounded) and drops the transport.
function tearDownClient(ms) {
  const faye = window.__faye;
  if (!faye) return Promise.resolve();
  const disconnecting = faye.client.disconnect();
  const bounded = new Promise((resolve) => {
    setTimeout(resolve, ms);
    if (disconnecting) disconnecting.then(resolve, resolve);
  });
  return bounded.then(() => { faye.client._dispatcher.close(); });
}

describe('faye@1.4.3 browser client in headless Chromium', () => {
  let browser;
  let app;
  let pageServer;
  let context;

  before(async () => {
    if (!fs.existsSync(CHROMIUM)) {
      throw new Error(`${CHROMIUM} not found: the browser tests need Debian's Chromium ` +
        '(`apt-get install chromium`); playwright-core never downloads a browser.');
    }
    if (!fs.existsSync(FAYE_EXAMPLE_BIN)) {
      throw new Error(`${FAYE_EXAMPLE_BIN} not found: build it with ` +
        '`cargo build -p faye-http --examples`, or set FAYE_EXAMPLE_BIN.');
    }
    if (!fs.existsSync(FAYE_BROWSER_JS)) {
      throw new Error(`${FAYE_BROWSER_JS} not found: run \`npm ci\` in interop/.`);
    }
    app = await startExampleApp();
    // Another origin (same host, another port) for the cross-origin runs. It
    // loads the client script from the app, as a third-party page would.
    pageServer = await startPageServer('<!doctype html><meta charset="utf-8">' +
      `<title>cross-origin page</title><script src="${app.endpoint}/client.js"></script>`);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: LAUNCH_ARGS, timeout: 15_000 });
  });

  afterEach(async () => {
    const closing = context;
    context = undefined;
    if (!closing) return;
    for (const page of closing.pages()) {
      await page.evaluate(tearDownClient, 2000).catch(() => {});
    }
    await closing.close().catch(() => {});
  });

  after(async () => {
    if (browser) await browser.close().catch(() => {});
    if (pageServer) await pageServer.close();
    if (app) await app.stop();
  });

  for (const t of TRANSPORTS) {
    it(`subscribes, publishes and receives over ${t.name}`, { timeout: TEST_TIMEOUT }, async () => {
      context = await browser.newContext();
      const page = await context.newPage();
      page.setDefaultTimeout(WAIT_MS);
      const wire = await recordWire(context, page, app.endpoint);
      const pageErrors = [];
      page.on('pageerror', (error) => pageErrors.push(String(error)));

      // Same origin: a page of the app itself (/health, so that no other Faye
      // client runs in it; the app's chat page has its own), with the client
      // script from the app. Cross-origin: the page server's page.
      if (t.crossOrigin) {
        await page.goto(`${pageServer.origin}/`);
      } else {
        await page.goto(`${app.origin}/health`);
        await page.addScriptTag({ url: `${app.endpoint}/client.js` });
      }
      await page.waitForFunction(() => typeof window.Faye?.Client === 'function');
      const pageOrigin = await page.evaluate(() => location.origin);
      assert.equal(pageOrigin === app.origin, !t.crossOrigin, `page origin ${pageOrigin}`);

      const channel = `/browser/${t.name}`;
      const elsewhere = `/browser/${t.name}/elsewhere`;
      const data = { text: `hello over ${t.name}`, n: 7, list: [1, 'two', null, true], nested: { ok: 'héllo ✓' } };

      // EventSource: the subscribe is sent at once, in the same request as the
      // client's first (long-polling) connect, which Faye then sends with
      // `timeout: 0`, so the client goes on to connect by EventSource. (A
      // long-polling connect that reaches the server after the stream is
      // answered at once too: compatibility row 28.)
      const want = t.name === 'eventsource' ? undefined : t.name;
      await page.evaluate(setUpClient,
        { endpoint: app.endpoint, disable: t.disable, channel, want, ms: WAIT_MS });
      // A publish to a channel nobody subscribed to: the server must not
      // send it to this client (the client would filter it out silently).
      await page.evaluate(publish, { channel: elsewhere, data: { not: 'for me' }, ms: WAIT_MS });
      await page.evaluate(publish, { channel, data, ms: WAIT_MS });
      const state = await waitFor(async () => {
        const s = await page.evaluate(clientState);
        return s.received.length >= 1 && s;
      }, WAIT_MS, `the message over ${t.name}`).catch(async (error) => {
        await wire.settle();
        const s = await page.evaluate(clientState).catch((e) => String(e));
        throw new Error(`${error.message}\nclient: ${JSON.stringify(s)}\nwire: ${wire.describe()}`);
      });
      await sleep(QUIET_MS);
      await wire.settle();
      const final = await page.evaluate(clientState);
      const details = `client: ${JSON.stringify({ ...final, incoming: undefined, outgoing: undefined })}\n` +
        `wire: ${wire.describe()}`;

      // 1. The client says it is on the intended transport.
      assert.equal(state.connectionType, t.name, details);
      assert.equal(final.connectionType, t.name, details);
      assert.equal(final.transportType, t.name, details);
      assert.ok(!final.events.some((e) => e.startsWith('down')), `transport went down: ${details}`);
      assert.deepEqual(pageErrors, []);

      // 2. What it received: once, intact. The raw delivery (as it came off
      //    the wire, before the client's channel filter) has the channel and
      //    data, no clientId, and arrived while on the intended transport.
      assert.deepEqual(final.received, [data], details);
      const deliveries = final.incoming.filter(({ message }) => message.data !== undefined);
      assert.equal(deliveries.length, 1, `raw deliveries: ${JSON.stringify(deliveries)}`);
      const [{ message: delivered, via }] = deliveries;
      assert.equal(delivered.channel, channel);
      assert.deepEqual(delivered.data, data);
      assert.ok(!('clientId' in delivered), `delivery carries a clientId: ${JSON.stringify(delivered)}`);
      assert.equal(via, t.name);

      // 3. What the client sent: the handshake offers every browser type; the
      //    connects name the transport.
      const sent = final.outgoing.map(({ message }) => message);
      const handshake = sent.find((m) => m.channel === '/meta/handshake');
      assert.deepEqual(handshake.supportedConnectionTypes,
        ['websocket', 'eventsource', 'long-polling', 'cross-origin-long-polling', 'callback-polling']);
      const connects = sent.filter((m) => m.channel === '/meta/connect');
      assert.ok(connects.some((m) => m.connectionType === t.name),
        `no /meta/connect with connectionType ${t.name}: ${JSON.stringify(connects)}`);
      // The WebSocket and the EventSource are opened asynchronously after the
      // handshake, while the client already sends its first /meta/connect by
      // long-polling: that one (and only long-polling ones) may precede them.
      const early = (kind, m) => ['websocket', 'eventsource'].includes(t.name)
        && kind === 'xhr' && m.channel === '/meta/connect' && m.connectionType === 'long-polling';
      if (t.name === 'eventsource' || t.name === 'websocket') {
        assert.ok(connects.every((m) => ['long-polling', t.name].includes(m.connectionType)),
          JSON.stringify(connects));
      } else {
        assert.ok(connects.every((m) => m.connectionType === t.name), JSON.stringify(connects));
      }

      // 4. The wire, as Chromium saw it.
      assert.deepEqual(wire.requests.filter((r) => r.kind === 'other'), [], 'unexpected requests');
      assert.deepEqual(wire.failures.filter((f) => !/ERR_ABORTED/.test(f)), [], 'failed requests');
      for (const kind of t.absent) {
        assert.ok(!wire.used(kind), `${kind} was used in the ${t.name} run: ${wire.describe()}`);
      }
      const sentBy = (kind, ch) => wire.messages(kind, 'out').filter((m) => m.channel === ch);
      assert.equal(sentBy(t.handshake, '/meta/handshake').length, 1,
        `one /meta/handshake by ${t.handshake}: ${wire.describe()}`);
      // Every /meta/connect on the wire went by the intended kind (e.g. no
      // long-poll connect in the websocket run, no JSON-P connect in the
      // cross-origin-long-polling run).
      const wireConnects = KINDS.flatMap((kind) => sentBy(kind, '/meta/connect').map((m) => ({ kind, m })))
        .filter(({ kind, m }) => !early(kind, m));
      assert.ok(wireConnects.length >= 1, `no /meta/connect on the wire: ${wire.describe()}`);
      assert.deepEqual([...new Set(wireConnects.map(({ kind }) => kind))], [t.connects], wire.describe());
      assert.ok(wireConnects.some(({ m }) => m.connectionType === t.name), wire.describe());
      // The subscribe and both publishes went by the transport too.
      const sendKind = t.name === 'eventsource' ? 'xhr' : t.delivery;
      assert.equal(sentBy(sendKind, '/meta/subscribe').length, 1, wire.describe());
      assert.deepEqual(sentBy(sendKind, channel).map((m) => m.data), [data], wire.describe());
      assert.equal(sentBy(sendKind, elsewhere).length, 1, wire.describe());
      // Apart from the handshake, nothing was sent by any other kind.
      for (const kind of KINDS.filter((k) => k !== sendKind)) {
        const extra = wire.messages(kind, 'out')
          .filter((m) => m.channel !== '/meta/handshake' && !early(kind, m));
        assert.deepEqual(extra, [], `sent by ${kind} in the ${t.name} run`);
      }
      // The delivery came by the intended kind, and by no other.
      for (const kind of KINDS) {
        const got = wire.messages(kind, 'in').filter((m) => m.data !== undefined);
        if (kind === t.delivery) {
          assert.equal(got.length, 1, `deliveries by ${kind}: ${JSON.stringify(got)}`);
          assert.equal(got[0].channel, channel);
          assert.deepEqual(got[0].data, data);
          assert.ok(!('clientId' in got[0]), JSON.stringify(got[0]));
        } else {
          assert.deepEqual(got, [], `deliveries by ${kind} in the ${t.name} run`);
        }
      }

      // 5. Per-transport details of the wire format.
      const clientId = final.clientId;
      assert.match(clientId, /^[0-9a-z]+$/);
      const endpoint = new URL(app.endpoint);
      if (t.name === 'websocket') {
        assert.deepEqual(wire.sockets.map((s) => s.url), [`ws://${endpoint.host}${endpoint.pathname}`]);
      }
      if (t.name === 'eventsource') {
        const streams = wire.requests.filter((r) => r.kind === 'es');
        assert.deepEqual(streams.map((r) => r.url), [`${app.endpoint}/${clientId}`]);
        assert.match(streams[0].headers.accept, /text\/event-stream/);
      }
      for (const request of wire.requests.filter((r) => r.kind === 'xhr')) {
        assert.equal(request.url, app.endpoint);
        assert.equal(request.headers['x-requested-with'], 'XMLHttpRequest');
      }
      for (const request of wire.requests.filter((r) => r.kind === 'cors' && r.response)) {
        assert.equal(request.url, app.endpoint);
        assert.equal(request.headers.origin, pageOrigin);
        assert.ok(!request.headers['content-type']?.startsWith('application/json'));
        assert.equal(request.response.status, 200);
        assert.equal(request.response.headers['access-control-allow-origin'], pageOrigin);
        assert.equal(request.response.headers['access-control-allow-credentials'], 'true');
      }
      for (const request of wire.requests.filter((r) => r.kind === 'jsonp' && r.response)) {
        const url = new URL(request.url);
        assert.equal(`${url.origin}${url.pathname}`, app.endpoint);
        const callback = url.searchParams.get('jsonp');
        assert.match(callback, /^__jsonp\d+__$/);
        assert.equal(request.response.status, 200);
        assert.match(request.response.headers['content-type'], /^text\/javascript/);
        assert.ok(request.response.text.startsWith(`/**/${callback}(`), request.response.text);
      }
    });
  }

  // Per-publisher order: Faye's HTTP transports send a burst of publishes as
  // several requests at once (Chromium keeps up to six in flight per host),
  // which must still reach subscribers in the order they were published.
  for (const t of TRANSPORTS.filter((x) => ['cross-origin-long-polling', 'callback-polling'].includes(x.name))) {
    it(`a burst of 200 publishes over ${t.name} arrives in order, 10 times`, { timeout: 120_000 }, async () => {
      context = await browser.newContext();
      const page = await context.newPage();
      page.setDefaultTimeout(WAIT_MS);
      const wire = await recordWire(context, page, app.endpoint);
      await page.goto(`${pageServer.origin}/`);
      await page.waitForFunction(() => typeof window.Faye?.Client === 'function');
      await page.evaluate(setUpClient,
        { endpoint: app.endpoint, disable: t.disable, channel: `/order/${t.name}/ready`, want: t.name, ms: WAIT_MS });
      for (let rep = 0; rep < 10; rep++) {
        const channel = `/order/${t.name}/${rep}`;
        const received = await page.evaluate(burstInOrder, { channel, count: 200, ms: 30_000 });
        const firstOutOfOrder = received.findIndex((n, k) => n !== k);
        assert.equal(firstOutOfOrder, -1, `rep ${rep}: out of order from position ${firstOutOfOrder}: ` +
          JSON.stringify(received.slice(Math.max(0, firstOutOfOrder - 3), firstOutOfOrder + 5)));
        assert.equal(received.length, 200, `rep ${rep}: each message once`);
        // On the wire: by the intended kind, in several requests.
        await wire.settle();
        const carrying = wire.requests.filter((r) => r.sent.some((m) => m.channel === channel));
        assert.ok(carrying.length >= 2, `rep ${rep}: the burst went out as ${carrying.length} request(s)`);
        assert.deepEqual([...new Set(carrying.map((r) => r.kind))], [t.delivery], wire.describe());
      }
      const state = await page.evaluate(clientState);
      assert.equal(state.connectionType, t.name);
      assert.ok(!state.events.some((e) => e.startsWith('down')), JSON.stringify(state.events));
    });
  }
});
