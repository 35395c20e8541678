// A rolling migration from Node Faye to faye-rs: Node Faye 1.4.3 servers on
// faye-redis 0.2.0 and `faye serve --redis-layout faye-redis` nodes share one
// throwaway redis-server and serve the same sessions and channels, driven by
// the official faye@1.4.3 Node client.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { after, afterEach, before, describe, it } from 'node:test';
import {
  SERVER_TIMEOUT, bounded, makeClient, postBayeux, sleep, startNodeFaye, startProxy, startRedis,
  startServer, waitFor,
} from './helpers.mjs';

const require = createRequire(import.meta.url);
const redisClient = require('redis'); // 3.x, the client faye-redis runs on

// How long we keep listening to be sure nothing more arrives.
const QUIET_MS = 500;

function startRustNode(redis, extraArgs = []) {
  return startServer({
    extraArgs: ['--engine', 'redis', '--redis-url', redis.url, '--redis-layout', 'faye-redis',
      ...extraArgs],
  });
}

// One command on the test's Redis, with the redis 3.x client's callbacks.
function redisCommand(connection, command, args) {
  return new Promise((resolve, reject) => {
    connection.send_command(command, args, (error, reply) => (error ? reject(error) : resolve(reply)));
  });
}

describe('Node Faye (faye-redis 0.2.0) and faye serve --redis-layout faye-redis on one Redis', () => {
  let redis;
  let redisConn;
  let servers = [];
  let clients = [];

  const newClient = (url, transport) => {
    const c = makeClient(url, transport);
    clients.push(c);
    return c;
  };
  const started = async (server) => {
    servers.push(await server);
    return servers[servers.length - 1];
  };

  before(async () => {
    redis = await startRedis();
    redisConn = redisClient.createClient(redis.port, '127.0.0.1');
  });

  afterEach(async () => {
    const closing = clients;
    clients = [];
    await Promise.all(closing.map((c) => c.close()));
    await Promise.all(servers.map((s) => s.stop()));
    servers = [];
    await redisCommand(redisConn, 'FLUSHALL', []);
  });

  after(async () => {
    redisConn?.quit();
    await redis?.stop();
  });

  for (const transport of ['websocket', 'long-polling']) {
    it(`clients of either kind receive what is published on both, wildcards included, over ${transport}`,
      { timeout: 30_000 }, async () => {
        const node = await started(startNodeFaye({ redisPort: redis.port }));
        const rust = await started(startRustNode(redis));
        const base = `/mix/${transport}`;
        const onNode = newClient(node.url, transport);
        const onRust = newClient(rust.url, transport);
        const publishers = { node: newClient(node.url, transport), rust: newClient(rust.url, transport) };
        const got = { node: [], rust: [] };
        await bounded(onNode.client.subscribe(`${base}/*`, (data) => got.node.push(data)),
          5000, 'subscribe on Node Faye');
        await bounded(onRust.client.subscribe(`${base}/**`, (data) => got.rust.push(data)),
          5000, 'subscribe on faye-rs');
        // Each publisher's first publish also opens its session.
        const sent = [
          ['node', `${base}/a`, { from: 'node', n: 1 }],
          ['rust', `${base}/b`, { from: 'rust', n: 2 }],
          ['node', `${base}/deep/c`, { from: 'node', n: 3 }], // only /** matches
          ['rust', `${base}/deep/d`, { from: 'rust', n: 4 }],
        ];
        for (const [kind, channel, data] of sent) {
          await bounded(publishers[kind].client.publish(channel, data), 5000, `publish on ${kind}`);
        }
        await waitFor(() => got.node.length >= 2 && got.rust.length >= 4, 10_000,
          `deliveries (node ${got.node.length}/2, faye-rs ${got.rust.length}/4)`);
        await sleep(QUIET_MS);
        const byN = (a, b) => a.n - b.n;
        assert.deepEqual(got.node.sort(byN), [sent[0][2], sent[1][2]]);
        assert.deepEqual(got.rust.sort(byN), sent.map(([, , data]) => data));
        for (const [who, c, channels] of [['Node', onNode, [`${base}/a`, `${base}/b`]],
          ['faye-rs', onRust, sent.map(([, channel]) => channel)]]) {
          const raw = channels.flatMap((channel) => c.deliveries(channel));
          assert.equal(raw.length, channels.length, `${who}'s subscriber got ${raw.length} deliveries`);
          for (const { message, transport: via } of raw) {
            assert.equal(via, transport, `a delivery from ${who} arrived over ${via}`);
            assert.ok(!('clientId' in message), `a delivery carries a clientId: ${JSON.stringify(message)}`);
          }
        }
        for (const c of [onNode, onRust, ...Object.values(publishers)]) {
          assert.equal(c.connectionType(), transport);
        }
      });
  }

  it('a session moves between the kinds with its clientId, subscriptions and queue',
    { timeout: 30_000 }, async () => {
      const node = await started(startNodeFaye({ redisPort: redis.port }));
      const rust = await started(startRustNode(redis));
      const targets = [node.url];
      const proxy = await startProxy(targets, { route: () => 0 });
      try {
        const mover = newClient(proxy.url, 'long-polling');
        const publisher = newClient(node.url, 'long-polling');
        const got = [];
        await bounded(mover.client.subscribe('/move', (data) => got.push(data)), 5000, 'subscribe');
        const handshakes = () => mover.outgoing.filter((m) => m.channel === '/meta/handshake').length;
        const firstId = mover.clientId();
        let n = 0;
        // Node → faye-rs → Node → faye-rs, one message on each stop.
        for (const url of [node.url, rust.url, node.url, rust.url]) {
          targets[0] = url;
          n += 1;
          // The poll held on the previous node returns empty within the
          // timeout; the next one reaches `url`.
          await sleep(SERVER_TIMEOUT * 1000 + 500);
          await bounded(publisher.client.publish('/move', { n }), 5000, `publish ${n}`);
          await waitFor(() => got.length >= n, 10_000, `message ${n} (have ${got.length})`);
        }
        await sleep(QUIET_MS);
        assert.deepEqual(got, [{ n: 1 }, { n: 2 }, { n: 3 }, { n: 4 }]);
        assert.equal(mover.clientId(), firstId, 'the session changed');
        assert.equal(handshakes(), 1, 'the client had to handshake again');
      } finally {
        await proxy.close();
      }
    });

  it('a rolling migration behind a load balancer: Node, mixed, then faye-rs only', {
    timeout: 120_000,
  }, async (t) => {
    const PHASE_MS = 3000;
    const nodes = [await started(startNodeFaye({ redisPort: redis.port, gc: 1 })),
      await started(startNodeFaye({ redisPort: redis.port, gc: 1 }))];
    const targets = nodes.map((n) => n.url);
    // Every request goes to the next backend: sessions move between nodes all
    // the time, as behind a balancer without affinity.
    let turn = 0;
    const balancer = await startProxy(targets, { route: () => turn++ % targets.length });
    try {
      const channel = '/migrate/feed';
      const subscribers = [];
      for (const transport of ['long-polling', 'long-polling', 'long-polling', 'websocket', 'websocket']) {
        const c = newClient(balancer.url, transport);
        const entry = { c, transport, got: new Map(), side: 'balancer' };
        await bounded(c.client.subscribe(channel, (data) => {
          entry.got.set(data.n, (entry.got.get(data.n) ?? 0) + 1);
        }), 10_000, `subscribe (${transport}) through the balancer`);
        subscribers.push(entry);
      }
      const publisher = newClient(balancer.url, 'long-polling');
      await bounded(publisher.client.publish('/migrate/warm-up', {}), 10_000, 'warm-up publish');

      // Steady publishing: every message acknowledged is recorded with the
      // phase it was published in.
      let phase = 'node';
      const published = []; // { n, phase, at }
      let n = 0;
      let publishing = true;
      const publishLoop = (async () => {
        while (publishing) {
          n += 1;
          const message = { n, phase };
          const at = Date.now();
          try {
            await bounded(publisher.client.publish(channel, message), 15_000, `publish ${message.n}`);
            published.push({ ...message, at });
          } catch { /* not acknowledged: not counted as published */ }
          await sleep(20);
        }
      })();

      const replace = async (slot) => {
        const rust = await started(startRustNode(redis));
        targets[slot] = rust.url;
        await nodes[slot].stop();
        return rust;
      };
      await sleep(PHASE_MS);
      phase = 'mixed';
      const first = await replace(0);
      // Subscribers held on faye-rs from here on, beside the moving ones.
      for (const transport of ['long-polling', 'websocket']) {
        const c = newClient(first.url, transport);
        const entry = { c, transport, got: new Map(), side: 'faye-rs', since: 0 };
        await bounded(c.client.subscribe(channel, (data) => {
          entry.got.set(data.n, (entry.got.get(data.n) ?? 0) + 1);
        }), 10_000, `subscribe (${transport}) on faye-rs`);
        entry.since = Date.now();
        subscribers.push(entry);
      }
      await sleep(PHASE_MS);
      phase = 'faye-rs';
      await replace(1);
      await sleep(PHASE_MS);
      publishing = false;
      await publishLoop;
      const last = published[published.length - 1].n;
      await waitFor(() => subscribers.every((s) => s.got.has(last)), 20_000,
        'every subscriber to get the last message');
      await sleep(QUIET_MS * 2);

      const phases = ['node', 'mixed', 'faye-rs'];
      const report = [];
      for (const s of subscribers) {
        const expected = published.filter((p) => s.side === 'balancer' || p.at > s.since);
        const missing = expected.filter((p) => !s.got.has(p.n));
        const lost = Object.fromEntries(phases.map((ph) => [ph,
          `${missing.filter((p) => p.phase === ph).length}/${expected.filter((p) => p.phase === ph).length}`]));
        report.push(`${s.side} ${s.transport}: lost ${JSON.stringify(lost)}`);
        s.missing = missing;
      }
      t.diagnostic(`published ${published.length}; per subscriber, lost/published by phase:`);
      for (const line of report) t.diagnostic(line);
      for (const s of subscribers) {
        // faye-rs's side loses nothing: a subscriber held on faye-rs gets all
        // published after its acknowledgement, wherever it was published; and
        // once only faye-rs serves, nothing is lost by anyone.
        const mustHave = s.side === 'faye-rs' ? s.missing : s.missing.filter((p) => p.phase === 'faye-rs');
        assert.deepEqual(mustHave.map((p) => p.n), [],
          `${s.side} ${s.transport} subscriber lost messages faye-rs was responsible for`);
      }
      // The WebSocket subscribers were really on WebSocket, through the balancer.
      assert.ok(balancer.log.upgrades.reduce((a, b) => a + b) >= 2, 'no WebSocket went through the balancer');
      for (const s of subscribers) assert.equal(s.c.connectionType(), s.transport);
    } finally {
      await balancer.close();
    }
  });

  for (const [abandonedOn, collectedBy] of [['Node Faye', 'faye-rs'], ['faye-rs', 'Node Faye']]) {
    it(`a client abandoned on ${abandonedOn} is collected by ${collectedBy}`, { timeout: 30_000 }, async () => {
      // The node that collects runs; the other one is gone (or never collects).
      const node = await started(startNodeFaye({
        redisPort: redis.port, gc: collectedBy === 'Node Faye' ? 1 : 3600,
      }));
      const rust = await started(startRustNode(redis));
      const [first, other] = abandonedOn === 'Node Faye' ? [node, rust] : [rust, node];
      const { body: [shake] } = await postBayeux(first.url, [{
        channel: '/meta/handshake', version: '1.0', supportedConnectionTypes: ['long-polling'],
      }]);
      assert.equal(shake.successful, true);
      const id = shake.clientId;
      const { body: [sub] } = await postBayeux(first.url, [{
        channel: '/meta/subscribe', clientId: id, subscription: '/gc/abandoned',
      }]);
      assert.equal(sub.successful, true);
      if (first === rust) await rust.stop(); // it cannot collect its own client
      assert.notEqual(await redisCommand(redisConn, 'ZSCORE', ['/clients', id]), null);
      assert.deepEqual(await redisCommand(redisConn, 'SMEMBERS', ['/channels/gc/abandoned']), [id]);

      // Collected 2 × the timeout after its last ping, within a collector's period.
      await waitFor(async () => (await redisCommand(redisConn, 'ZSCORE', ['/clients', id])) === null,
        SERVER_TIMEOUT * 2000 + 10_000, `${collectedBy} to collect the client`);
      assert.deepEqual(await redisCommand(redisConn, 'SMEMBERS', ['/channels/gc/abandoned']), []);
      assert.equal(await redisCommand(redisConn, 'EXISTS', [`/clients/${id}/channels`]), 0);
      const { body: [connect] } = await postBayeux(other.url, [{
        channel: '/meta/connect', clientId: id, connectionType: 'long-polling',
      }]);
      assert.equal(connect.successful, false);
      assert.match(connect.error, /^401:/);
    });
  }
});
