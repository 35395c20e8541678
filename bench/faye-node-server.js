#!/usr/bin/env node
// The reference server for bench/compare: Node Faye 1.4.3 (npm, pinned in
// package-lock.json) with the memory engine, or with faye-redis 0.2.0 (on the
// redis 3.x client, pinned by the override in package.json), mounted at /bayeux.
//
//   node bench/faye-node-server.js [--host 127.0.0.1] [--port 0] [--timeout 60]
//                                  [--engine memory|redis] [--redis-port 6379]
//                                  [--redis-namespace faye]
//
// Prints one line on stdout, as `faye serve` does:
//   faye-node listening on http://127.0.0.1:PORT/bayeux
'use strict';

const http = require('http');
const faye = require('faye');

function option(name, fallback) {
  const i = process.argv.indexOf('--' + name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const host = option('host', '127.0.0.1');
const port = Number(option('port', '0'));
const timeout = Number(option('timeout', '60'));
const engineName = option('engine', 'memory');

const options = { mount: '/bayeux', timeout: timeout };
if (engineName === 'redis') {
  options.engine = {
    type: require('faye-redis'),
    host: '127.0.0.1',
    port: Number(option('redis-port', '6379')),
    namespace: option('redis-namespace', 'faye'),
  };
} else if (engineName !== 'memory') {
  process.stderr.write(`unknown --engine ${engineName} (memory or redis)\n`);
  process.exit(2);
}
const bayeux = new faye.NodeAdapter(options);
const server = http.createServer((req, res) => {
  res.writeHead(404, { 'Content-Type': 'text/plain' });
  res.end('Not found');
});
bayeux.attach(server);

server.listen(port, host, () => {
  const addr = server.address();
  process.stdout.write(`faye-node listening on http://${addr.address}:${addr.port}/bayeux\n`);
});

const stop = () => {
  bayeux.close();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
