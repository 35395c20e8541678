// Node Faye 1.4.3 (npm) for the interop tests that need the real server: with
// its memory engine, or with faye-redis 0.2.0 (on the redis 3.x client, pinned
// by the override in package.json) to share a Redis with `faye serve` nodes.
//
//   node node-faye-server.mjs [--port 0] [--timeout 2] [--mount /bayeux]
//                             [--redis-port PORT] [--redis-namespace NS] [--gc SECONDS]
//
// Without --redis-port it runs the memory engine. Prints one line on stdout:
//   faye-node listening on http://127.0.0.1:PORT/bayeux
// Stops on SIGTERM or SIGINT (Faye's server closes, then the process exits).
import http from 'node:http';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const faye = require('faye');

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const options = { mount: option('mount', '/bayeux'), timeout: Number(option('timeout', '2')) };
const redisPort = option('redis-port');
if (redisPort) {
  options.engine = {
    type: require('faye-redis'),
    host: '127.0.0.1',
    port: Number(redisPort),
    namespace: option('redis-namespace', ''),
    gc: Number(option('gc', '60')),
  };
}
const bayeux = new faye.NodeAdapter(options);
const server = http.createServer((request, response) => {
  response.writeHead(404, { 'Content-Type': 'text/plain' });
  response.end('Not found');
});
bayeux.attach(server);
server.listen(Number(option('port', '0')), '127.0.0.1', () => {
  const { address, port } = server.address();
  process.stdout.write(`faye-node listening on http://${address}:${port}${options.mount}\n`);
});

const stop = () => {
  bayeux.close();
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 1000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
