// Helpers for the interop tests: run `faye serve`, bounded waits, and an
// instrumented official faye@1.4.3 Node client.
import { spawn } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import faye from 'faye';

const here = path.dirname(fileURLToPath(import.meta.url));

// The server binary: $FAYE_BIN, else <repo>/target/debug/faye.
export const FAYE_BIN = process.env.FAYE_BIN
  ? path.resolve(process.env.FAYE_BIN)
  : path.resolve(here, '..', 'target', 'debug', 'faye');

// The embedding example (crates/faye-http/examples/axum_app.rs):
// $FAYE_EXAMPLE_BIN, else <repo>/target/debug/examples/axum_app
// (build it with `cargo build -p faye-http --examples`).
export const FAYE_EXAMPLE_BIN = process.env.FAYE_EXAMPLE_BIN
  ? path.resolve(process.env.FAYE_EXAMPLE_BIN)
  : path.resolve(here, '..', 'target', 'debug', 'examples', 'axum_app');

// The official browser client, as installed by `npm ci`.
export const FAYE_BROWSER_JS = path.resolve(here, 'node_modules', 'faye', 'client', 'faye-browser-min.js');

// The Faye client honours http_proxy/https_proxy (and ignores no_proxy), which
// would send our 127.0.0.1 traffic to a proxy. The tests only talk to localhost.
for (const name of ['http_proxy', 'HTTP_PROXY', 'https_proxy', 'HTTPS_PROXY']) {
  delete process.env[name];
}

export const SERVER_TIMEOUT = 2; // seconds a /meta/connect is held (`--timeout`)
const LISTENING = /^faye-rs listening on (http:\/\/127\.0\.0\.1:(\d+)\/bayeux)$/;

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Polls `predicate` (which may be async) until it returns something truthy
// (which is returned); rejects after `ms` milliseconds.
export async function waitFor(predicate, ms = 5000, what = 'condition') {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() >= deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

// Awaits a thenable (Faye Subscription / Publication, or a promise) for at most
// `ms` milliseconds. Never pass a faye.Client here: it is a thenable that may
// never settle.
export function bounded(thenable, ms = 5000, what = 'promise') {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  const settled = new Promise((resolve, reject) => thenable.then(resolve, reject));
  return Promise.race([settled, timeout]).finally(() => clearTimeout(timer));
}

// Starts `faye serve` (with `extraArgs` added, e.g. ['--websocket-deflate']) and
// resolves once it printed its listening line.
// Returns { url, port, proc, stderr(), stop() }.
export async function startServer({ port = 0, timeout = SERVER_TIMEOUT, extraArgs = [] } = {}) {
  // Restarting on the same port: retry briefly if the port is not free yet.
  for (let attempt = 1; ; attempt++) {
    try {
      return await spawnServer(port, timeout, extraArgs);
    } catch (error) {
      if (port === 0 || attempt >= 5) throw error;
      await sleep(300);
    }
  }
}

// Servers still running when this process exits are killed.
const live = new Set();
process.on('exit', () => { for (const proc of live) proc.kill('SIGKILL'); });

function spawnServer(port, timeout, extraArgs) {
  const args = ['serve', '--host', '127.0.0.1', '--port', String(port),
    '--mount', '/bayeux', '--timeout', String(timeout), ...extraArgs];
  return spawnUntilLine({ bin: FAYE_BIN, args, pattern: LISTENING }).then((server) => {
    const [, url, port] = server.match;
    return { ...server, url, port: Number(port) };
  });
}

// Spawns `bin args` and resolves once its first stdout line matches `pattern`
// (within 10 s), with { match, proc, stop(), stderr() }. `stop()` sends
// `stopSignal`, then SIGKILL after 5 s, and resolves { code, signal }.
// Rejects (and kills the process) on any other first line, or if it exits
// early or cannot be started.
export function spawnUntilLine({ bin, args = [], env, pattern, stopSignal = 'SIGTERM' }) {
  const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
  let stderr = '';
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (chunk) => { stderr = (stderr + chunk).slice(-20000); });
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve([code, signal])));
  live.add(proc);
  exited.then(() => live.delete(proc));

  const stop = async () => {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      return { code: proc.exitCode, signal: proc.signalCode };
    }
    proc.kill(stopSignal);
    const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
    const [code, signal] = await exited;
    clearTimeout(timer);
    return { code, signal };
  };

  return new Promise((resolve, reject) => {
    let stdout = '';
    let settled = false;
    const fail = (why) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      proc.kill('SIGKILL');
      reject(new Error(`${bin} ${args.join(' ')}: ${why}\nstdout: ${stdout}\nstderr: ${stderr}`));
    };
    const onExit = (code, signal) => fail(`exited early (code ${code}, signal ${signal})`);
    const timer = setTimeout(() => fail('no start-up line within 10 s'), 10000);
    proc.on('error', (error) => fail(`could not start: ${error.message}`));
    proc.on('exit', onExit);
    proc.stdout.setEncoding('utf8');
    proc.stdout.on('data', (chunk) => {
      if (settled) return;
      stdout += chunk;
      if (!stdout.includes('\n')) return;
      const line = stdout.split('\n')[0];
      const match = pattern.exec(line);
      if (!match) return fail(`unexpected first line ${JSON.stringify(line)}`);
      settled = true;
      clearTimeout(timer);
      proc.removeListener('exit', onExit);
      resolve({ match, proc, stop, stderr: () => stderr });
    });
  });
}

// A port that was free a moment ago (bound to 0, then released): another
// process may take it first, so callers retry.
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

// Resolves true once something on 127.0.0.1:`port` answers PING with +PONG.
function redisAnswers(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let reply = '';
    const done = (ok) => { socket.destroy(); resolve(ok); };
    socket.setTimeout(1000, () => done(false));
    socket.on('error', () => done(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      reply += chunk;
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG'));
    });
  });
}

// Starts a throwaway `redis-server` on a free port (never 6379), without
// persistence, and resolves once it answers PING: { port, url, proc, stop() }.
// `url` is redis://127.0.0.1:<port>/0. Killed when this process exits.
export async function startRedis() {
  let lastError;
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const proc = spawn('redis-server', ['--port', String(port), '--save', '', '--appendonly', 'no',
      '--bind', '127.0.0.1'], { stdio: ['ignore', 'ignore', 'ignore'] });
    live.add(proc);
    const exited = new Promise((resolve) => proc.on('exit', (code, signal) => {
      live.delete(proc);
      resolve({ code, signal });
    }));
    let spawnError;
    proc.on('error', (error) => { spawnError = error; live.delete(proc); });
    const stop = async () => {
      if (spawnError) return { code: null, signal: null };
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      return exited;
    };
    try {
      await waitFor(async () => {
        if (spawnError) throw spawnError;
        if (proc.exitCode !== null) throw new Error(`redis-server exited (code ${proc.exitCode})`);
        return redisAnswers(port);
      }, 10_000, `redis-server on port ${port} to answer PING`);
      return { port, url: `redis://127.0.0.1:${port}/0`, proc, stop };
    } catch (error) {
      await stop();
      if (spawnError) {
        throw new Error(`cannot run redis-server (${spawnError.message}); ` +
          'install it (Debian: apt-get install redis-server)');
      }
      lastError = error; // most likely the port was taken meanwhile: try another
    }
  }
  throw lastError;
}

const APP_LINE = /^app on (http:\/\/127\.0\.0\.1:(\d+))\/ with Faye at (\/\S+)$/;

// Starts the axum example app on a free port, serving the official browser
// client at <mount>/client.js. Resolves { origin, port, endpoint, proc,
// stderr(), stop() }; `endpoint` is the absolute Faye URL. The app shuts down
// gracefully on SIGINT (Ctrl-C), so that is what stop() sends.
export async function startExampleApp() {
  const env = { ...process.env, PORT: '0', FAYE_CLIENT_JS: FAYE_BROWSER_JS };
  const app = await spawnUntilLine({
    bin: FAYE_EXAMPLE_BIN, env, pattern: APP_LINE, stopSignal: 'SIGINT',
  });
  const [, origin, port, mount] = app.match;
  return { ...app, origin, port: Number(port), endpoint: origin + mount };
}

// A plain HTTP server on 127.0.0.1 (random port) that answers every GET with
// `html`. Resolves { origin, close() }.
export function startPageServer(html) {
  const server = http.createServer((request, response) => {
    response.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
    response.end(html);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve({
      origin: `http://127.0.0.1:${server.address().port}`,
      close: () => new Promise((done) => {
        server.closeAllConnections();
        server.close(() => done());
      }),
    }));
  });
}

// An official Faye client for `url`, restricted to `transport`
// ('websocket' or 'long-polling'), instrumented with extensions that record
// every message it sends and receives. Returns a plain (non-thenable) object:
//   client    the faye.Client
//   incoming  [{ message, transport }]: every message received, deep-copied as it
//             came off the wire, with the connection type in use at that moment
//   outgoing  every message sent (deep copies)
//   events    ['transport:up:<type>' | 'transport:down:<type>', ...]
//   deliveries(channel)  raw incoming deliveries (messages with `data`) on `channel`
//   close()   disconnect (bounded) and drop the transport
export function makeClient(url, transport, options = {}) {
  const client = new faye.Client(url, { retry: 1, timeout: 5, ...options });
  if (transport === 'long-polling') client.disable('websocket');
  else if (transport !== 'websocket') throw new Error(`unknown transport ${transport}`);

  const connectionType = () => client._dispatcher.connectionType;
  const incoming = [];
  const outgoing = [];
  const events = [];
  const copy = (message) => JSON.parse(JSON.stringify(message));

  client.addExtension({
    incoming(message, callback) {
      incoming.push({ message: copy(message), transport: connectionType() });
      callback(message);
    },
    outgoing(message, callback) {
      outgoing.push(copy(message));
      callback(message);
    },
  });
  client.on('transport:up', () => events.push(`transport:up:${connectionType()}`));
  client.on('transport:down', () => events.push(`transport:down:${connectionType()}`));

  return {
    client,
    incoming,
    outgoing,
    events,
    clientId: () => client._dispatcher.clientId,
    connectionType,
    deliveries: (channel) => incoming.filter(
      ({ message }) => message.channel === channel && message.data !== undefined),
    async close() {
      const disconnecting = client.disconnect(); // undefined unless connected
      if (disconnecting) await bounded(disconnecting, 2000, 'disconnect').catch(() => {});
      client._state = client.DISCONNECTED; // stop any reconnect loop
      client._dispatcher.close();
    },
  };
}

// An HTTP proxy in front of `targets` (Bayeux endpoint URLs), so that a Faye
// client, which always talks to one URL, really moves between nodes.
// `route(isConnect)` picks the target of each request (by index); a request
// whose target fails is answered 502, as a load balancer would, after
// `failed(index)` is called. No keep-alive on either side, so no connection
// ties a client to a node. It records, per target, the /meta/connect requests
// it forwarded and the deliveries (messages with `data`) their responses
// carried. WebSocket upgrades are routed too (`route(false)`), and piped to the
// target as they are; `log.upgrades` counts them per target. `targets` is read
// at each request: a test may replace one (a node swapped behind the balancer).
export function startProxy(targets, { route, failed = () => {} }) {
  const log = {
    connects: [], // target index of each /meta/connect request, in order
    deliveries: targets.map(() => 0),
    upgrades: targets.map(() => 0),
  };
  const tunnels = new Set();
  const server = http.createServer((request, response) => {
    const chunks = [];
    request.on('data', (chunk) => chunks.push(chunk));
    request.on('end', () => {
      const body = Buffer.concat(chunks);
      let isConnect = false;
      try {
        isConnect = [].concat(JSON.parse(body)).some((m) => m?.channel === '/meta/connect');
      } catch { /* not JSON: forwarded as is, as an `other` request */ }
      const index = route(isConnect);
      if (isConnect) log.connects.push(index);
      const target = new URL(targets[index]);
      let answered = false;
      const fail = (error) => {
        if (answered) return;
        answered = true;
        failed(index);
        response.writeHead(502, { connection: 'close' });
        response.end(`proxy: ${error.message}`);
      };
      const upstream = http.request({
        host: target.hostname,
        port: target.port,
        method: request.method,
        path: request.url,
        headers: { ...request.headers, host: target.host, connection: 'close' },
        agent: false,
      }, (reply) => {
        const replyChunks = [];
        reply.on('data', (chunk) => replyChunks.push(chunk));
        reply.on('error', fail); // the node died half-way through its answer
        reply.on('end', () => {
          if (answered || !reply.complete) return fail(new Error('truncated answer'));
          answered = true;
          const replyBody = Buffer.concat(replyChunks);
          try {
            log.deliveries[index] += [].concat(JSON.parse(replyBody))
              .filter((m) => m && m.data !== undefined && !m.channel.startsWith('/meta/')).length;
          } catch { /* not JSON: nothing delivered */ }
          const headers = { ...reply.headers, connection: 'close' };
          delete headers['transfer-encoding'];
          headers['content-length'] = String(replyBody.length);
          response.writeHead(reply.statusCode, headers);
          response.end(replyBody);
        });
      });
      upstream.on('error', fail);
      upstream.end(body);
    });
  });
  server.on('upgrade', (request, socket, head) => {
    const index = route(false);
    log.upgrades[index] += 1;
    const target = new URL(targets[index]);
    const upstream = net.connect(Number(target.port), target.hostname);
    const close = () => {
      socket.destroy();
      upstream.destroy();
      tunnels.delete(close);
    };
    tunnels.add(close);
    upstream.on('connect', () => {
      const lines = [`${request.method} ${request.url} HTTP/1.1`];
      for (let i = 0; i < request.rawHeaders.length; i += 2) {
        const name = request.rawHeaders[i];
        lines.push(`${name}: ${name.toLowerCase() === 'host' ? target.host : request.rawHeaders[i + 1]}`);
      }
      upstream.write(`${lines.join('\r\n')}\r\n\r\n`);
      if (head.length) upstream.write(head);
      upstream.pipe(socket);
      socket.pipe(upstream);
    });
    upstream.on('error', () => { failed(index); close(); });
    socket.on('error', close);
    upstream.on('close', close);
    socket.on('close', close);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve({
      url: `http://127.0.0.1:${server.address().port}${new URL(targets[0]).pathname}`,
      log,
      close: () => new Promise((done) => {
        for (const closeTunnel of [...tunnels]) closeTunnel();
        server.closeAllConnections();
        server.close(() => done());
      }),
    }));
  });
}

// POSTs a raw Bayeux message batch as JSON; resolves { status, body }.
export async function postBayeux(url, messages) {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(messages),
    signal: AbortSignal.timeout(5000),
  });
  return { status: response.status, body: await response.json() };
}

const NODE_LISTENING = /^faye-node listening on (http:\/\/127\.0\.0\.1:(\d+)\/\S*)$/;

// Starts Node Faye 1.4.3 (node-faye-server.mjs) with the server timeout
// `timeout`; with `redisPort`, on faye-redis 0.2.0 with faye-redis's default
// (empty) namespace, collecting every `gc` seconds. Resolves { url, port,
// proc, stderr(), stop() }, as startServer does.
export async function startNodeFaye({ timeout = SERVER_TIMEOUT, redisPort, gc = 60 } = {}) {
  const args = [path.resolve(here, 'node-faye-server.mjs'), '--timeout', String(timeout)];
  if (redisPort) args.push('--redis-port', String(redisPort), '--gc', String(gc));
  const server = await spawnUntilLine({ bin: process.execPath, args, pattern: NODE_LISTENING });
  const [, url, port] = server.match;
  return { ...server, url, port: Number(port) };
}

// Records the client's traffic as Chromium saw it: every request to the Faye
// endpoint (classified into a wire kind, with the Bayeux messages it carried
// and, once finished, the messages in its response), WebSocket frames, and
// EventSource messages (through the DevTools protocol, which Playwright does
// not expose otherwise).
export async function recordWire(context, page, endpoint) {
  const wire = {
    requests: [],   // { kind, method, url, headers, body, sent: [messages], response? }
    sockets: [],    // { url, sent: [[messages]], received: [[messages]] }
    events: [],     // EventSource messages: [[messages]]
    failures: [],   // requests that failed: 'METHOD url: error'
    pending: new Set(),
  };
  const entries = new Map(); // Playwright Request -> entry

  page.on('request', (request) => {
    const url = new URL(request.url());
    const base = new URL(endpoint);
    if (url.origin !== base.origin || !url.pathname.startsWith(base.pathname)) return;
    if (url.pathname.endsWith('.js')) return; // client.js
    const entry = classify(request, url);
    entry.headers = request.headers(); // provisional; replaced by allHeaders() once finished
    wire.requests.push(entry);
    entries.set(request, entry);
  });
  // Responses are read once complete (a held /meta/connect may never be).
  page.on('requestfinished', (request) => {
    const entry = entries.get(request);
    if (!entry) return;
    const done = (async () => {
      entry.headers = await request.allHeaders();
      const response = await request.response();
      const text = await response.text();
      entry.response = {
        status: response.status(),
        headers: await response.allHeaders(),
        text,
        messages: parseReply(entry.kind, text),
      };
    })().catch((error) => { entry.error = String(error?.message ?? error); });
    wire.pending.add(done);
    done.finally(() => wire.pending.delete(done));
  });
  page.on('requestfailed', (request) => {
    wire.failures.push(`${request.method()} ${request.url()}: ${request.failure()?.errorText}`);
  });

  page.on('websocket', (socket) => {
    const entry = { url: socket.url(), sent: [], received: [] };
    wire.sockets.push(entry);
    socket.on('framesent', ({ payload }) => entry.sent.push([].concat(JSON.parse(payload))));
    socket.on('framereceived', ({ payload }) => entry.received.push([].concat(JSON.parse(payload))));
  });

  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  cdp.on('Network.eventSourceMessageReceived', ({ data }) => {
    wire.events.push([].concat(JSON.parse(data)));
  });

  // Messages sent (`out`) or received (`in`) by wire `kind`.
  wire.messages = (kind, direction) => {
    if (kind === 'ws') {
      return wire.sockets.flatMap((s) => (direction === 'out' ? s.sent : s.received).flat());
    }
    if (kind === 'es') return direction === 'out' ? [] : wire.events.flat();
    return wire.requests.filter((r) => r.kind === kind)
      .flatMap((r) => (direction === 'out' ? r.sent : r.response?.messages ?? []));
  };
  wire.used = (kind) => (kind === 'ws' ? wire.sockets.length > 0
    : kind === 'es' ? wire.requests.some((r) => r.kind === 'es')
      : wire.requests.some((r) => r.kind === kind));
  wire.settle = () => Promise.all([...wire.pending]);
  wire.describe = () => JSON.stringify({
    requests: wire.requests.map(({ kind, method, url, sent, response }) =>
      ({ kind, method, url: url.slice(0, 200), sent, status: response?.status, received: response?.messages })),
    sockets: wire.sockets, events: wire.events, failures: wire.failures,
  }).slice(0, 20000);
  return wire;
}

// The wire kind of a request to the endpoint, and the messages it sends.
function classify(request, url) {
  const method = request.method();
  const headers = request.headers();
  const entry = { method, url: request.url(), sent: [] };
  const body = request.postData() ?? '';
  if (method === 'GET' && (headers.accept ?? '').includes('text/event-stream')) {
    entry.kind = 'es';
  } else if (method === 'GET' && url.searchParams.has('jsonp')) {
    entry.kind = 'jsonp';
    entry.sent = [].concat(JSON.parse(url.searchParams.get('message')));
  } else if (method === 'POST' && (headers['content-type'] ?? '').startsWith('application/json')) {
    entry.kind = 'xhr';
    entry.sent = [].concat(JSON.parse(body));
  } else if (method === 'POST' && body.startsWith('message=')) {
    entry.kind = 'cors';
    entry.sent = [].concat(JSON.parse(new URLSearchParams(body).get('message')));
  } else {
    entry.kind = 'other';
  }
  return entry;
}

// Bayeux messages in a response body: JSON for POST, `/**/cb([...]);` for JSON-P.
function parseReply(kind, text) {
  if (kind === 'jsonp') {
    const match = /^\/\*\*\/[\w$.]+\(([\s\S]*)\);$/.exec(text);
    return match ? [].concat(JSON.parse(match[1])) : [];
  }
  try { return [].concat(JSON.parse(text)); } catch { return []; }
}
