// Publish throughput and round-trip latency of Node Faye 1.4.3's client, the
// same measurements as crates/faye-client/examples/client_bench.rs.
//   node bench/client-node.mjs URL websocket|long-polling [MESSAGES] [ROUND_TRIPS]
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const faye = require('faye');

const [url, transport, messagesArg, roundTripsArg] = process.argv.slice(2);
const messages = Number(messagesArg || 20000);
const roundTrips = Number(roundTripsArg || 1000);
const WINDOW = 1000;

// Faye's client handshakes over long-polling, then moves to a WebSocket if one
// opens: for "websocket" nothing is disabled.
function client() {
  const c = new faye.Client(url);
  if (transport === 'long-polling') c.disable('websocket');
  return c;
}

// A Faye Client is a thenable: keep it out of promises.
function subscribed(c, channel, onMessage) {
  return new Promise((resolve, reject) => {
    c.subscribe(channel, onMessage).then(() => resolve(), reject);
  });
}

const timeout = setTimeout(() => { console.error('timed out'); process.exit(3); }, 120000);

// Throughput.
const publisher = client();
const subscriber = client();
let received = 0;
let resolveDone;
const done = new Promise((r) => { resolveDone = r; });
await subscribed(subscriber, '/bench/throughput', (n) => {
  if (n !== received) { console.error(`message ${received} out of order (got ${n})`); process.exit(1); }
  received += 1;
  if (received === messages) resolveDone(process.hrtime.bigint());
});
await new Promise((resolve, reject) => publisher.publish('/bench/warmup', 0).then(() => resolve(), reject));
const start = process.hrtime.bigint();
const pending = [];
for (let n = 0; n < messages; n++) {
  pending.push(new Promise((resolve, reject) => publisher.publish('/bench/throughput', n).then(() => resolve(), reject)));
  if (pending.length >= WINDOW) await pending.shift();
}
await Promise.all(pending);
const end = await done;
const throughput = messages / (Number(end - start) / 1e9);

// Latency.
const echo = client();
let waiting = null;
await subscribed(echo, '/bench/rtt', (n) => { if (waiting) waiting(n); });
const rtts = [];
for (let n = 0; n < roundTrips; n++) {
  const sent = process.hrtime.bigint();
  const got = new Promise((resolve) => { waiting = resolve; });
  echo.publish('/bench/rtt', n);
  const m = await got;
  if (m !== n) { console.error('round trips out of order'); process.exit(1); }
  rtts.push(Number(process.hrtime.bigint() - sent) / 1e6);
}
rtts.sort((a, b) => a - b);
const ms = (x) => Math.round(x * 100) / 100;
console.log(JSON.stringify({
  client: 'faye (Node)', transport, messages, throughput: Math.round(throughput),
  round_trips: roundTrips, rtt_p50_ms: ms(rtts[Math.floor(rtts.length / 2)]),
  rtt_p99_ms: ms(rtts[Math.floor(rtts.length * 99 / 100)]),
}));
clearTimeout(timeout);
for (const c of [publisher, subscriber, echo]) c.disconnect();
setTimeout(() => process.exit(0), 100);
