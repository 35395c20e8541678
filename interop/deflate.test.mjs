// WebSocket permessage-deflate against `faye serve --websocket-deflate`:
//  - the official faye@1.4.3 Node client with the official permessage-deflate
//    extension (`client.addWebsocketExtension(deflate)`), and against a server
//    without the flag;
//  - the browser client in headless Chromium, which always offers
//    `permessage-deflate; client_max_window_bits` and compresses with context
//    takeover.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, afterEach, before, describe, it } from 'node:test';
import deflate from 'permessage-deflate';
import { chromium } from 'playwright-core';
import {
  FAYE_BROWSER_JS, bounded, makeClient, startPageServer, startServer, waitFor,
} from './helpers.mjs';

const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const LAUNCH_ARGS = ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic',
  '--no-first-run', '--disable-background-networking', '--disable-component-update',
  '--disable-sync'];

const TEST_TIMEOUT = 30_000;
// What `faye serve --websocket-deflate` answers the client's offer
// (`permessage-deflate; client_max_window_bits`).
const AGREED = 'permessage-deflate; server_no_context_takeover';

// `ext` (the package, or a configured copy) with its client sessions recorded:
// the real sessions do the work; the wrapper counts the messages that came in
// with RSV1 set (compressed by the server) and went out with it.
// Long enough (and repetitive enough) that the server compresses its delivery.
const bigData = () => ({
  text: 'deflate me '.repeat(100),
  list: Array.from({ length: 20 }, (_, n) => ({ n, word: 'héllo ✓' })),
});

function recorded(ext) {
  const sessions = [];
  const wrapped = Object.create(ext, {
    createClientSession: {
      value() {
        const session = ext.createClientSession();
        const record = { session, compressedIn: 0, plainIn: 0, compressedOut: 0 };
        const incoming = session.processIncomingMessage.bind(session);
        session.processIncomingMessage = (message, callback) => {
          if (message.rsv1) record.compressedIn += 1;
          else record.plainIn += 1;
          incoming(message, callback);
        };
        const outgoing = session.processOutgoingMessage.bind(session);
        session.processOutgoingMessage = (message, callback) => outgoing(message, (error, out) => {
          if (out?.rsv1) record.compressedOut += 1;
          callback(error, out);
        });
        sessions.push(record);
        return session;
      },
    },
  });
  return { ext: wrapped, sessions };
}

// The client's websocket-driver once its WebSocket is open.
const driverOf = (c) => waitFor(() => {
  const transport = c.client._dispatcher._transport;
  return transport?.connectionType === 'websocket' && transport._socket?._driver;
}, 5000, 'an open WebSocket');

describe('faye@1.4.3 client with permessage-deflate', () => {
  let server;
  let plainServer;
  let clients = [];

  // An instrumented WebSocket-only client with `ext` added.
  const newClient = (url, ext) => {
    const c = makeClient(url, 'websocket');
    c.client.addWebsocketExtension(ext);
    clients.push(c);
    return c;
  };

  const subscribe = (c, channel, onData) =>
    bounded(c.client.subscribe(channel, onData), 5000, `subscribe to ${channel}`);
  const publish = (c, channel, data) =>
    bounded(c.client.publish(channel, data), 5000, `publish to ${channel}`);


  before(async () => {
    server = await startServer({ extraArgs: ['--websocket-deflate'] });
    plainServer = await startServer();
  });

  afterEach(async () => {
    const closing = clients;
    clients = [];
    await Promise.all(closing.map((c) => c.close()));
  });

  after(async () => {
    if (server) await server.stop();
    if (plainServer) await plainServer.stop();
  });

  it('negotiates it; subscribe, publish and receive, compressed both ways',
    { timeout: TEST_TIMEOUT }, async () => {
      const sub = recorded(deflate);
      const pub = recorded(deflate);
      const subscriber = newClient(server.url, sub.ext);
      const publisher = newClient(server.url, pub.ext);
      const received = [];
      await subscribe(subscriber, '/deflate/news', (data) => received.push(data));

      const data = bigData();
      await publish(publisher, '/deflate/news', data);
      await publish(publisher, '/deflate/news', { small: 1 });
      await waitFor(() => received.length >= 2, 5000, 'both messages');
      assert.deepEqual(received, [data, { small: 1 }]);

      for (const [c, rec] of [[subscriber, sub], [publisher, pub]]) {
        assert.equal(c.connectionType(), 'websocket');
        assert.ok(c.outgoing.some((m) => m.channel === '/meta/connect' &&
          m.connectionType === 'websocket'), 'a /meta/connect sent over the WebSocket');
        // The server's 101 named the extension and the driver activated it.
        const driver = await driverOf(c);
        assert.equal(driver.headers['sec-websocket-extensions'], AGREED);
        assert.deepEqual(driver._extensions._sessions.map(([ext]) => ext.name),
          ['permessage-deflate']);
        assert.equal(rec.sessions.length, 1, 'one WebSocket, one session');
        const [{ session, compressedOut }] = rec.sessions;
        assert.equal(session._peerContextTakeover, false, 'server_no_context_takeover');
        assert.equal(session._ownContextTakeover, true);
        // The Node extension compresses everything it sends.
        assert.ok(compressedOut >= 2, `compressed messages sent: ${compressedOut}`);
      }
      // The big delivery came compressed; the small one did not need to be.
      const [{ compressedIn, plainIn }] = sub.sessions;
      assert.ok(compressedIn >= 1, `compressed messages received: ${compressedIn}`);
      assert.ok(plainIn >= 1, `uncompressed messages received: ${plainIn}`);
      const wire = subscriber.deliveries('/deflate/news').map(({ message, transport }) => {
        assert.equal(transport, 'websocket');
        return message.data;
      });
      assert.deepEqual(wire, [data, { small: 1 }]);
    });

  it('agrees client_no_context_takeover when the client offers it',
    { timeout: TEST_TIMEOUT }, async () => {
      const rec = recorded(deflate.configure({ noContextTakeover: true }));
      const c = newClient(server.url, rec.ext);
      const received = [];
      await subscribe(c, '/deflate/self', (data) => received.push(data));
      const messages = [bigData(), bigData(), { n: 3 }];
      for (const data of messages) await publish(c, '/deflate/self', data);
      await waitFor(() => received.length >= 3, 5000, 'three messages');
      assert.deepEqual(received, messages);

      const driver = await driverOf(c);
      assert.equal(driver.headers['sec-websocket-extensions'],
        `${AGREED}; client_no_context_takeover`);
      const [{ session, compressedIn, compressedOut }] = rec.sessions;
      assert.equal(session._ownContextTakeover, false);
      assert.ok(compressedIn >= 2, `compressed messages received: ${compressedIn}`);
      assert.ok(compressedOut >= 4, `compressed messages sent: ${compressedOut}`);
    });

  it('runs uncompressed against a server without --websocket-deflate',
    { timeout: TEST_TIMEOUT }, async () => {
      const rec = recorded(deflate);
      const c = newClient(plainServer.url, rec.ext);
      const received = [];
      await subscribe(c, '/plain/x', (data) => received.push(data));
      const data = bigData();
      await publish(c, '/plain/x', data);
      await waitFor(() => received.length >= 1, 5000, 'the message');
      assert.deepEqual(received, [data]);

      const driver = await driverOf(c);
      assert.equal(driver.headers['sec-websocket-extensions'], undefined);
      assert.deepEqual(driver._extensions._sessions, []);
      for (const { compressedIn, compressedOut } of rec.sessions) {
        assert.equal(compressedIn + compressedOut, 0);
      }
    });
});

describe('faye@1.4.3 browser client in Chromium with permessage-deflate', () => {
  let server;
  let pageServer;
  let browser;
  let context;

  before(async () => {
    if (!fs.existsSync(CHROMIUM)) {
      throw new Error(`${CHROMIUM} not found: the browser tests need Debian's Chromium ` +
        '(`apt-get install chromium`); playwright-core never downloads a browser.');
    }
    server = await startServer({
      extraArgs: ['--websocket-deflate', '--client-js', FAYE_BROWSER_JS],
    });
    // `faye serve` serves no page: the page comes from another origin (the
    // handshake then goes by JSON-P, the rest by WebSocket).
    pageServer = await startPageServer('<!doctype html><meta charset="utf-8">' +
      `<title>deflate</title><script src="${server.url}/client.js"></script>`);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: LAUNCH_ARGS, timeout: 15_000 });
  });

  after(async () => {
    if (context) await context.close().catch(() => {});
    if (browser) await browser.close().catch(() => {});
    if (pageServer) await pageServer.close();
    if (server) await server.stop();
  });

  it('negotiates it; subscribe, publish and receive over WebSocket',
    { timeout: TEST_TIMEOUT }, async () => {
      context = await browser.newContext();
      const page = await context.newPage();
      page.setDefaultTimeout(10_000);
      // The opening handshake as Chromium saw it.
      const cdp = await context.newCDPSession(page);
      await cdp.send('Network.enable');
      const offers = [];
      const answers = [];
      const header = (headers, name) => Object.entries(headers)
        .find(([key]) => key.toLowerCase() === name)?.[1];
      cdp.on('Network.webSocketWillSendHandshakeRequest', ({ request }) =>
        offers.push(header(request.headers, 'sec-websocket-extensions')));
      cdp.on('Network.webSocketHandshakeResponseReceived', ({ response }) =>
        answers.push({ status: response.status,
          extensions: header(response.headers, 'sec-websocket-extensions') }));
      const frames = { sent: 0, received: 0 };
      page.on('websocket', (socket) => {
        socket.on('framesent', () => { frames.sent += 1; });
        socket.on('framereceived', () => { frames.received += 1; });
      });

      await page.goto(`${pageServer.origin}/`);
      await page.waitForFunction(() => typeof window.Faye?.Client === 'function');
      const data = bigData();
      // Two big publishes: Chromium's second one refers back to its first.
      const result = await page.evaluate(async ({ endpoint, data }) => {
        const client = new window.Faye.Client(endpoint, { retry: 1, timeout: 5 });
        for (const type of ['eventsource', 'long-polling', 'cross-origin-long-polling']) {
          client.disable(type);
        }
        const got = [];
        const within = (thenable, what) => Promise.race([
          new Promise((resolve, reject) => thenable.then(resolve, reject)),
          new Promise((_, reject) => setTimeout(() => reject(new Error(what)), 8000)),
        ]);
        await within(client.subscribe('/browser/deflate', (d) => got.push(d)), 'subscribe');
        // Faye goes on by JSON-P until its WebSocket is up.
        for (let n = 0; client._dispatcher.connectionType !== 'websocket' && n < 250; n++) {
          await new Promise((r) => setTimeout(r, 20));
        }
        await within(client.publish('/browser/deflate', data), 'publish 1');
        await within(client.publish('/browser/deflate', data), 'publish 2');
        const deadline = Date.now() + 5000;
        while (got.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
        const type = client._dispatcher.connectionType;
        client.disconnect();
        return { got, type };
      }, { endpoint: server.url, data });

      assert.equal(result.type, 'websocket');
      assert.deepEqual(result.got, [data, data]);
      assert.ok(offers.length >= 1 && offers.every((o) => /permessage-deflate/.test(o)),
        `offers: ${JSON.stringify(offers)}`);
      assert.deepEqual(answers[0], { status: 101, extensions: AGREED });
      // At least the two publishes went out and the two deliveries came in by it.
      assert.ok(frames.sent >= 2 && frames.received >= 2, JSON.stringify(frames));
    });
});
