#!/usr/bin/env node
// Node Faye 1.4.3 (interop/package-lock.json), memory engine, mounted at
// /bayeux, for client.test.mjs: faye-rs's browser client against the server it
// copies. Listens on 127.0.0.1 only.
//   node node-faye-server.cjs [--port 0] [--timeout 2]
// Prints one line: `faye-node listening on http://127.0.0.1:PORT/bayeux`.
'use strict';
const http = require('http');
const faye = require('faye');

const option = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
};
const bayeux = new faye.NodeAdapter({ mount: '/bayeux', timeout: Number(option('timeout', '2')) });
const server = http.createServer((request, response) => {
  response.writeHead(404, { 'Content-Type': 'text/plain' });
  response.end('Not found');
});
bayeux.attach(server);
server.listen(Number(option('port', '0')), '127.0.0.1', () => {
  console.log(`faye-node listening on http://127.0.0.1:${server.address().port}/bayeux`);
});
process.on('SIGTERM', () => process.exit(0));
