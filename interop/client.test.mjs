// faye-rs's own browser client (clients/js, served by `faye serve` at
// /bayeux/client.js) in headless Chromium (Debian's, driven by playwright-core),
// against faye-rs and against Node Faye 1.4.3:
//  - each transport forced in turn, asserting what the client says it used and
//    what Chromium saw on the wire (same-origin pages behind a small proxy, the
//    CORS and JSON-P ones on another port);
//  - fallback when WebSocket is refused, and when it breaks after working;
//  - recovery after a server restart;
//  - a page written for Faye's own bundle, unchanged, with ours swapped in;
//  - a burst of 500 publishes over long-polling, in order;
//  - the status page (`faye serve --status-page`) showing a publish.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, afterEach, before, describe, it } from 'node:test';
import faye from 'faye';
import { chromium } from 'playwright-core';
import {
  FAYE_BIN, FAYE_BROWSER_JS, SERVER_TIMEOUT, bounded, freePort, sleep, startNodeFaye,
  recordWire, startPageServer, startServer, waitFor,
} from './helpers.mjs';
import { startProxy } from './proxy.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
// The committed build of clients/js (scripts/test checks it is what src/ builds to).
const OUR_JS = path.resolve(here, '..', 'clients', 'js', 'dist', 'client.js');
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const LAUNCH_ARGS = ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic',
  '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const WAIT_MS = 10_000; // every wait on the browser is bounded by this
const QUIET_MS = 300;
const KINDS = ['xhr', 'cors', 'jsonp', 'ws', 'es'];
const PAGE = '/__test/page.html';

// Each transport forced by disabling the others. Our client handshakes by the
// first usable HTTP type (Faye's uses long-polling or JSON-P only), so a CORS
// page handshakes by CORS.
//   kind   the wire kind deliveries and connects must use
//   sends  the wire kind everything else the client sends must use
const TRANSPORTS = [
  { name: 'websocket', cross: false, disable: ['eventsource', 'cross-origin-long-polling', 'callback-polling'],
    handshake: 'xhr', kind: 'ws', sends: 'ws', connects: 'ws' },
  { name: 'eventsource', cross: false, disable: ['websocket', 'cross-origin-long-polling', 'callback-polling'],
    handshake: 'xhr', kind: 'es', sends: 'xhr', connects: 'xhr' },
  { name: 'long-polling', cross: false,
    disable: ['websocket', 'eventsource', 'cross-origin-long-polling', 'callback-polling'],
    handshake: 'xhr', kind: 'xhr', sends: 'xhr', connects: 'xhr' },
  { name: 'cross-origin-long-polling', cross: true, disable: ['websocket', 'eventsource', 'long-polling', 'callback-polling'],
    handshake: 'cors', kind: 'cors', sends: 'cors', connects: 'cors' },
  { name: 'callback-polling', cross: true,
    disable: ['websocket', 'eventsource', 'long-polling', 'cross-origin-long-polling'],
    handshake: 'jsonp', kind: 'jsonp', sends: 'jsonp', connects: 'jsonp' },
];

// An official Node Faye client (no WebSocket) that `cleanups` closes for good.
function nodeClient(url, cleanups) {
  const client = new faye.Client(url, { retry: 1, timeout: 5 });
  client.disable('websocket');
  cleanups.push(async () => {
    const disconnecting = client.disconnect();
    if (disconnecting) await bounded(disconnecting, 2000, 'disconnect').catch(() => {});
    client._state = client.DISCONNECTED;
    client._dispatcher.close();
  });
  return client;
}

const html = (script, body = '') => '<!doctype html><meta charset="utf-8"><title>test</title>' +
  `<script src="${script}"></script>${body}`;

// In the page: a client of `endpoint` with `disable`d types, recording what it
// sends and receives, subscribed to `channel` (resolves once subscribed).
function setUp({ endpoint, disable, channel, ms, options = { retry: 1 } }) {
  const client = new Faye.Client(endpoint, options);
  for (const type of disable) client.disable(type);
  const copy = (m) => JSON.parse(JSON.stringify(m));
  const rec = { received: [], incoming: [], outgoing: [], events: [], states: [] };
  window.__t = { client, rec };
  client.addExtension({
    incoming(m, cb) { rec.incoming.push({ message: copy(m), via: client.getTransport() }); cb(m); },
    outgoing(m, cb) { rec.outgoing.push({ message: copy(m), via: client.getTransport() }); cb(m); },
  });
  client.on('transport:up', () => rec.events.push(`up:${client.getTransport()}`));
  client.on('transport:down', () => rec.events.push(`down:${client.getTransport()}`));
  client.on('state', (state) => rec.states.push(state));
  return Promise.race([
    new Promise((_, reject) => setTimeout(() => reject(new Error(`subscribe: not within ${ms} ms`)), ms)),
    client.subscribe(channel, (data) => rec.received.push(data)).then(() => true),
  ]);
}

function publish({ channel, data, ms }) {
  return Promise.race([
    new Promise((_, reject) => setTimeout(() => reject(new Error(`publish: not within ${ms} ms`)), ms)),
    window.__t.client.publish(channel, data).then(() => true),
  ]);
}

function clientState() {
  const { client, rec } = window.__t;
  return { ...rec, transport: client.getTransport(), clientId: client.getClientId(), state: client.getState() };
}

// In the page: `count` publishes in one tick; resolves with the `n` of each
// message received, in order, once `count` have arrived.
function burst({ channel, count, ms }) {
  const { client } = window.__t;
  const received = [];
  const deadline = new Promise((_, reject) =>
    setTimeout(() => reject(new Error(`burst: ${received.length} of ${count} within ${ms} ms`)), ms));
  const done = client.subscribe(channel, (data) => received.push(data.n)).then(() => {
    const all = [];
    for (let n = 0; n < count; n++) all.push(client.publish(channel, { n }));
    return Promise.all(all);
  }).then(() => new Promise((resolve) => {
    const check = () => (received.length >= count ? resolve(received) : setTimeout(check, 10));
    check();
  }));
  return Promise.race([done, deadline]);
}

// In a blank page: how many pixels of the PNG (base64) are within `tolerance` of
// `rgb`, above row `maxY`.
function countPixels({ png, rgb, tolerance, maxY }) {
  const image = new Image();
  image.src = `data:image/png;base64,${png}`;
  return image.decode().then(() => {
    const canvas = document.createElement('canvas');
    canvas.width = image.width;
    canvas.height = image.height;
    const g = canvas.getContext('2d');
    g.drawImage(image, 0, 0);
    const { data } = g.getImageData(0, 0, image.width, Math.min(maxY, image.height));
    let n = 0;
    for (let i = 0; i < data.length; i += 4) {
      if (Math.abs(data[i] - rgb[0]) <= tolerance && Math.abs(data[i + 1] - rgb[1]) <= tolerance
        && Math.abs(data[i + 2] - rgb[2]) <= tolerance) n++;
    }
    return n;
  });
}

describe('faye-rs browser client in headless Chromium', () => {
  let browser;
  let context;
  const cleanups = [];

  before(async () => {
    if (!fs.existsSync(CHROMIUM)) {
      throw new Error(`${CHROMIUM} not found: install Debian's chromium; playwright-core never downloads a browser.`);
    }
    if (!fs.existsSync(FAYE_BIN)) throw new Error(`${FAYE_BIN} not found: cargo build -p faye-cli, or set FAYE_BIN`);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: LAUNCH_ARGS, timeout: 15_000 });
  });

  afterEach(async () => {
    const closing = context;
    context = undefined;
    if (closing) {
      for (const page of closing.pages()) {
        await page.evaluate(() => window.__t && Promise.race([window.__t.client.disconnect(),
          new Promise((r) => setTimeout(r, 1000))])).catch(() => {});
      }
      await closing.close().catch(() => {});
    }
    while (cleanups.length) await cleanups.pop()().catch(() => {});
  });

  after(async () => {
    if (browser) await browser.close().catch(() => {});
  });

  // A server (faye-rs or Node Faye) behind a proxy serving the test page, and a
  // page on another origin; the client script is faye-rs's /bayeux/client.js,
  // or (Node Faye) the same file served by the proxy.
  async function setUpServer(which, { port = 0, extraArgs = [] } = {}) {
    const server = which === 'faye-rs' ? await startServer({ port, extraArgs }) : await startNodeFaye();
    const ours = fs.readFileSync(OUR_JS);
    const pages = { '/__test/client.js': { type: 'text/javascript', body: ours } };
    const proxy = await startProxy(server.port, pages);
    const script = which === 'faye-rs' ? `${proxy.origin}/bayeux/client.js` : `${proxy.origin}/__test/client.js`;
    pages[PAGE] = { type: 'text/html; charset=utf-8', body: html(script) };
    const crossPage = await startPageServer(html(script));
    cleanups.push(() => server.stop(), () => proxy.close(), () => crossPage.close());
    return { server, proxy, endpoint: `${proxy.origin}/bayeux`, crossOrigin: crossPage.origin, script };
  }

  async function openPage(url, endpoint) {
    context = await browser.newContext();
    const page = await context.newPage();
    page.setDefaultTimeout(WAIT_MS);
    const errors = [];
    page.on('pageerror', (error) => errors.push(String(error)));
    const wire = await recordWire(context, page, endpoint);
    await page.goto(url);
    await page.waitForFunction(() => typeof window.Faye?.Client === 'function');
    return { page, wire, errors };
  }

  it('faye serve serves the committed client at /bayeux/client.js and /bayeux.js', async () => {
    const server = await startServer();
    cleanups.push(() => server.stop());
    const built = fs.readFileSync(OUR_JS);
    for (const p of ['/bayeux/client.js', '/bayeux.js']) {
      const response = await fetch(new URL(p, server.url), { signal: AbortSignal.timeout(5000) });
      assert.equal(response.status, 200);
      assert.ok(Buffer.from(await response.arrayBuffer()).equals(built), `${p} is clients/js/dist/client.js`);
      assert.ok(response.headers.get('etag'));
    }
  });

  for (const which of ['faye-rs', 'node-faye']) {
    for (const t of TRANSPORTS) {
      it(`against ${which}: subscribes, publishes and receives over ${t.name}`, { timeout: 40_000 }, async () => {
        const { endpoint, proxy, crossOrigin } = await setUpServer(which);
        const url = t.cross ? `${crossOrigin}/` : `${proxy.origin}${PAGE}`;
        const { page, wire, errors } = await openPage(url, endpoint);
        const pageOrigin = await page.evaluate(() => location.origin);
        assert.equal(pageOrigin === proxy.origin, !t.cross);

        const channel = `/client/${t.name}`;
        const elsewhere = `${channel}/elsewhere`;
        const data = { text: `over ${t.name}`, n: 7, list: [1, 'two', null, true], nested: { ok: 'héllo ✓' } };
        await page.evaluate(setUp, { endpoint, disable: t.disable, channel, ms: WAIT_MS });
        await page.evaluate(publish, { channel: elsewhere, data: { not: 'for me' }, ms: WAIT_MS });
        await page.evaluate(publish, { channel, data, ms: WAIT_MS });
        await waitFor(async () => (await page.evaluate(clientState)).received.length >= 1, WAIT_MS,
          `the message over ${t.name}`).catch(async (error) => {
          await wire.settle();
          throw new Error(`${error.message}\n${JSON.stringify(await page.evaluate(clientState))}\n${wire.describe()}`);
        });
        await sleep(QUIET_MS);
        await wire.settle();
        const s = await page.evaluate(clientState);
        const details = `client: ${JSON.stringify({ ...s, incoming: undefined, outgoing: undefined })}\nwire: ${wire.describe()}`;

        // What the client says.
        assert.equal(s.transport, t.name, details);
        assert.equal(s.state, 'connected', details);
        assert.match(s.clientId, /^[0-9a-z]+$/);
        assert.deepEqual(s.received, [data], details);
        assert.ok(!s.events.some((e) => e.startsWith('down')), details);
        assert.deepEqual(s.states, ['connecting', 'connected'], details);
        assert.deepEqual(errors, []);
        const connects = s.outgoing.map(({ message }) => message).filter((m) => m.channel === '/meta/connect');
        assert.ok(connects.length >= 1 && connects.every((m) => m.connectionType === t.name), JSON.stringify(connects));

        // What Chromium saw.
        assert.deepEqual(wire.requests.filter((r) => r.kind === 'other').map((r) => r.url), []);
        const sentBy = (kind, ch) => wire.messages(kind, 'out').filter((m) => m.channel === ch);
        assert.equal(sentBy(t.handshake, '/meta/handshake').length, 1, details);
        for (const kind of KINDS) {
          const out = wire.messages(kind, 'out').filter((m) => m.channel !== '/meta/handshake');
          if (kind !== t.sends) assert.deepEqual(out, [], `sent by ${kind}: ${details}`);
          const delivered = wire.messages(kind, 'in').filter((m) => m.data !== undefined);
          if (kind === t.kind) {
            assert.equal(delivered.length, 1, `deliveries by ${kind}: ${details}`);
            assert.equal(delivered[0].channel, channel);
            assert.deepEqual(delivered[0].data, data);
          } else {
            assert.deepEqual(delivered, [], `deliveries by ${kind}: ${details}`);
          }
        }
        const wireConnects = KINDS.flatMap((kind) => sentBy(kind, '/meta/connect').map((m) => ({ kind, m })));
        assert.ok(wireConnects.length >= 1, details);
        assert.deepEqual([...new Set(wireConnects.map(({ kind }) => kind))], [t.connects], details);
        assert.deepEqual(sentBy(t.sends, channel).map((m) => m.data), [data], details);
        assert.equal(sentBy(t.sends, '/meta/subscribe').length, 1, details);
        assert.equal(wire.sockets.length, t.name === 'websocket' ? 1 : 0, details);
        if (t.name === 'websocket') {
          assert.equal(wire.sockets[0].url, endpoint.replace(/^http/, 'ws'));
        }
        if (t.name === 'eventsource') {
          assert.deepEqual(wire.requests.filter((r) => r.kind === 'es').map((r) => r.url), [`${endpoint}/${s.clientId}`]);
        }
        for (const r of wire.requests.filter((x) => x.kind === 'cors' && x.response)) {
          assert.equal(r.headers.origin, pageOrigin);
          assert.equal(r.response.headers['access-control-allow-origin'], pageOrigin);
        }
        for (const r of wire.requests.filter((x) => x.kind === 'jsonp')) {
          assert.match(new URL(r.url).searchParams.get('jsonp'), /^__jsonp\d+__$/);
        }
      });
    }

    it(`against ${which}: a burst of 500 publishes over long-polling arrives in order`, { timeout: 60_000 }, async () => {
      const { endpoint, proxy } = await setUpServer(which);
      const { page, wire } = await openPage(`${proxy.origin}${PAGE}`, endpoint);
      await page.evaluate(setUp, { endpoint, disable: TRANSPORTS[2].disable, channel: '/burst/ready', ms: WAIT_MS });
      const received = await page.evaluate(burst, { channel: '/burst/500', count: 500, ms: 40_000 });
      const first = received.findIndex((n, k) => n !== k);
      assert.equal(first, -1, `out of order from ${first}: ${JSON.stringify(received.slice(Math.max(0, first - 3), first + 5))}`);
      assert.equal(received.length, 500);
      await sleep(QUIET_MS);
      await wire.settle();
      assert.equal((await page.evaluate(clientState)).transport, 'long-polling');
      const carrying = wire.requests.filter((r) => r.sent.some((m) => m.channel === '/burst/500'));
      assert.ok(carrying.length >= 2, `the burst went out in ${carrying.length} request(s)`);
      assert.deepEqual([...new Set(carrying.map((r) => r.kind))], ['xhr']);
      // Every publish went once, in order, across the requests.
      const sent = carrying.flatMap((r) => r.sent).filter((m) => m.channel === '/burst/500').map((m) => m.data.n);
      assert.deepEqual(sent, [...Array(500).keys()]);
    });
  }

  it('falls back to EventSource when WebSocket is refused', { timeout: 40_000 }, async () => {
    const { endpoint, proxy } = await setUpServer('faye-rs');
    proxy.blockWebSockets();
    const { page, wire } = await openPage(`${proxy.origin}${PAGE}`, endpoint);
    await page.evaluate(setUp, { endpoint, disable: [], channel: '/fallback', ms: WAIT_MS });
    await page.evaluate(publish, { channel: '/fallback', data: { n: 1 }, ms: WAIT_MS });
    await waitFor(async () => (await page.evaluate(clientState)).received.length >= 1, WAIT_MS, 'the message');
    await wire.settle();
    const s = await page.evaluate(clientState);
    assert.ok(proxy.state.refused >= 1, 'the client tried a WebSocket');
    assert.equal(s.transport, 'eventsource', wire.describe());
    assert.deepEqual(wire.messages('es', 'in').filter((m) => m.data).map((m) => m.data), [{ n: 1 }]);
    assert.deepEqual(s.received, [{ n: 1 }]);
  });

  it('falls back when a WebSocket that worked breaks, and keeps receiving', { timeout: 40_000 }, async () => {
    const { endpoint, proxy } = await setUpServer('faye-rs');
    const { page, wire } = await openPage(`${proxy.origin}${PAGE}`, endpoint);
    await page.evaluate(setUp, { endpoint, disable: [], channel: '/break', ms: WAIT_MS });
    assert.equal((await page.evaluate(clientState)).transport, 'websocket');
    await page.evaluate(publish, { channel: '/break', data: { n: 1 }, ms: WAIT_MS });
    await waitFor(async () => (await page.evaluate(clientState)).received.length >= 1, WAIT_MS, 'message 1');

    proxy.breakWebSockets();
    await waitFor(async () => (await page.evaluate(clientState)).transport === 'eventsource', WAIT_MS,
      'the client to move to EventSource');
    // Published by another client, so that only the delivery path matters.
    const other = nodeClient(endpoint, cleanups);
    await bounded(other.publish('/break', { n: 2 }), WAIT_MS, 'the publish from Node');
    await waitFor(async () => (await page.evaluate(clientState)).received.length >= 2, WAIT_MS, 'message 2');
    await wire.settle();
    const s = await page.evaluate(clientState);
    assert.deepEqual(s.received, [{ n: 1 }, { n: 2 }]);
    assert.ok(s.events.includes('down:websocket'), JSON.stringify(s.events));
    assert.deepEqual(wire.messages('ws', 'in').filter((m) => m.data).map((m) => m.data), [{ n: 1 }]);
    assert.deepEqual(wire.messages('es', 'in').filter((m) => m.data).map((m) => m.data), [{ n: 2 }]);
    assert.ok(proxy.state.refused >= 1, 'the client tried the WebSocket again first');
  });

  it('recovers after a server restart: new session, same subscriptions, WebSocket again', { timeout: 60_000 }, async () => {
    const port = await freePort();
    const setup = await setUpServer('faye-rs', { port });
    const { endpoint, proxy } = setup;
    const { page } = await openPage(`${proxy.origin}${PAGE}`, endpoint);
    await page.evaluate(setUp, { endpoint, disable: [], channel: '/restart', ms: WAIT_MS });
    await page.evaluate(publish, { channel: '/restart', data: { n: 1 }, ms: WAIT_MS });
    await waitFor(async () => (await page.evaluate(clientState)).received.length >= 1, WAIT_MS, 'message 1');
    const before = await page.evaluate(clientState);
    assert.equal(before.transport, 'websocket');

    await setup.server.stop();
    await sleep(500);
    const again = await startServer({ port });
    cleanups.push(() => again.stop());
    const after = await waitFor(async () => {
      const s = await page.evaluate(clientState);
      return s.clientId && s.clientId !== before.clientId && s.state === 'connected' && s.transport === 'websocket' && s;
    }, 20_000, 'a new session on WebSocket');
    assert.ok(after.states.includes('reconnecting') || after.states.includes('connecting'), JSON.stringify(after.states));
    // The subscription was sent again by the client itself.
    const subscribes = after.outgoing.map(({ message }) => message)
      .filter((m) => m.channel === '/meta/subscribe' && m.subscription === '/restart');
    assert.ok(subscribes.some((m) => m.clientId === after.clientId), JSON.stringify(subscribes));
    const other = nodeClient(endpoint, cleanups);
    // The resubscription may still be on its way: publish until it arrives.
    await waitFor(async () => {
      await bounded(other.publish('/restart', { n: 2 }), WAIT_MS, 'the publish from Node');
      return (await page.evaluate(clientState)).received.some((d) => d.n === 2);
    }, WAIT_MS, 'message 2 after the restart');
  });

  it('reconnect() retries at once rather than after the retry interval', { timeout: 60_000 }, async () => {
    const { endpoint, proxy } = await setUpServer('faye-rs');
    const { page } = await openPage(`${proxy.origin}${PAGE}`, endpoint);
    // The client waits 60 s between attempts.
    await page.evaluate(setUp, { endpoint, disable: [], channel: '/again', ms: WAIT_MS, options: { retry: 60 } });
    proxy.setDown(true);
    await waitFor(async () => (await page.evaluate(clientState)).state === 'reconnecting', WAIT_MS, 'state reconnecting');
    await sleep(500);
    proxy.setDown(false);
    await sleep(1500);
    const waiting = await page.evaluate(clientState);
    assert.equal(waiting.state, 'reconnecting', `still waiting for the retry interval: ${JSON.stringify(waiting.states)}`);
    await page.evaluate(() => window.__t.client.reconnect());
    const s = await waitFor(async () => {
      const state = await page.evaluate(clientState);
      return state.state === 'connected' && state;
    }, WAIT_MS, 'connected again well before the 60 s retry');
    assert.equal(s.states.at(-1), 'connected', JSON.stringify(s.states));
    // And it works: a message published now arrives.
    const other = nodeClient(endpoint, cleanups);
    await waitFor(async () => {
      await bounded(other.publish('/again', { n: 1 }), WAIT_MS, 'the publish from Node');
      return (await page.evaluate(clientState)).received.length > 0;
    }, WAIT_MS, 'a message after reconnect()');
  });

  it("a Faye app's page works unchanged with faye-rs's client in place of Faye's bundle", { timeout: 60_000 }, async () => {
    const server = await startServer();
    cleanups.push(() => server.stop());
    const app = fs.readFileSync(path.join(here, 'fixtures', 'faye-app.html'), 'utf8');
    const pages = {
      '/faye.js': { type: 'text/javascript', body: fs.readFileSync(FAYE_BROWSER_JS) },
      '/ours.js': { type: 'text/javascript', body: fs.readFileSync(OUR_JS) },
      '/app-faye.html': { type: 'text/html; charset=utf-8', body: app.replace('{{CLIENT}}', '/faye.js') },
      '/app-ours.html': { type: 'text/html; charset=utf-8', body: app.replace('{{CLIENT}}', '/ours.js') },
    };
    const proxy = await startProxy(server.port, pages);
    cleanups.push(() => proxy.close());
    const publisher = nodeClient(`${proxy.origin}/bayeux`, cleanups);
    const run = async (name) => {
      const { page, errors } = await openPage(`${proxy.origin}/app-${name}.html`, `${proxy.origin}/bayeux`);
      await page.waitForFunction(() => window.appReady === true);
      // A message from elsewhere, as another user of the app would send.
      await bounded(publisher.publish('/chat/room2', { user: 'bob', text: 'hi' }), WAIT_MS, 'publish');
      await page.waitForFunction(() => window.appDone === true, null, { timeout: WAIT_MS });
      const log = await page.$$eval('#log li', (items) => items.map((li) => li.textContent));
      const version = await page.evaluate(() => Faye.VERSION);
      await context.close();
      context = undefined;
      return { log, errors, version };
    };
    const theirs = await run('faye');
    const ours = await run('ours');
    assert.equal(theirs.version, '1.4.3');
    assert.equal(ours.version, JSON.parse(fs.readFileSync(path.join(here, '..', 'clients', 'js', 'package.json'))).version);
    assert.deepEqual(theirs.errors, []);
    assert.deepEqual(ours.errors, []);
    assert.deepEqual(ours.log, theirs.log);
    assert.deepEqual(ours.log, [
      'subscribed',
      'message: ann: hello',
      'on /chat/lobby',
      'published',
      'error: 405 Invalid channel',
      'message: bob: hi',
      'on /chat/room2',
      'cancelled',
      'transport up',
      'done',
    ]);
  });

  it('the status page shows a publish within a second', { timeout: 60_000 }, async (t) => {
    const server = await startServer({ extraArgs: ['--status-page'] });
    cleanups.push(() => server.stop());
    const origin = new URL(server.url).origin;
    context = await browser.newContext({ viewport: { width: 900, height: 900 } });
    const page = await context.newPage();
    page.setDefaultTimeout(WAIT_MS);
    const errors = [];
    page.on('pageerror', (error) => errors.push(String(error)));
    await page.goto(`${origin}/`);
    await page.click('a[href="/status"]');
    await page.waitForFunction(() => document.getElementById('updated')?.textContent !== 'never');
    assert.match(await page.textContent('#connection'), /^connected to \/bayeux by websocket$/);

    // A publisher already connected (its subscribe is not a publish).
    const publisher = nodeClient(server.url, cleanups);
    await bounded(publisher.subscribe('/status-test/warm-up', () => {}), WAIT_MS, 'subscribe');
    await page.waitForFunction(() => [...document.querySelectorAll('#channels td')].some((td) => td.textContent === '/status-test/warm-up'));
    assert.equal(await page.textContent('#in-total'), '0');
    const chart = async () => (await page.locator('#chart').screenshot()).toString('base64');
    const blank = await context.newPage();
    const BLUE = [37, 99, 235];
    const spike = async (png) => blank.evaluate(countPixels, { png, rgb: BLUE, tolerance: 40, maxY: 140 });
    assert.equal(await spike(await chart()), 0, 'no traffic drawn before the publish');

    const started = Date.now();
    await bounded(publisher.publish('/status-test/news', { n: 1 }), WAIT_MS, 'publish');
    await page.waitForFunction(() => document.getElementById('in-total').textContent === '1', null, { polling: 'raf' });
    const shownAfter = Date.now() - started;
    t.diagnostic(`the publish was shown ${shownAfter} ms after it was sent`);
    assert.ok(shownAfter < 1000, `the publish was shown ${shownAfter} ms after it was sent`);
    const shot = path.join(os.tmpdir(), `faye-rs-status-${process.pid}.png`);
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok(fs.statSync(shot).size > 1000, shot);
    const pixels = await spike(await chart());
    assert.ok(pixels >= 20, `the chart shows the message in as a rise (${pixels} px)`);
    const clients = await page.$$eval('#clients tr', (rows) => rows.map((r) => r.textContent));
    assert.ok(clients.includes('websocket1'), `this page by websocket: ${clients}`);
    assert.ok(clients.includes('long-polling1'), `the publisher by long-polling: ${clients}`);
    assert.ok(clients.includes('in-process1'), `the server's own publisher of snapshots: ${clients}`);
    const channels = await page.$$eval('#channels tr', (rows) => rows.map((r) => [...r.cells].map((c) => c.textContent)));
    assert.deepEqual(channels.find(([c]) => c === '/faye-rs/status'), ['/faye-rs/status', '1']);
    assert.deepEqual(errors, []);
    fs.rmSync(shot, { force: true });
  });
});
