// The official faye@1.4.3 Node client over TLS against
// `faye serve --tls-cert --tls-key`, trusting the test's own CA (made with the
// openssl command), over WebSocket (wss://) and long-polling (https://); then a
// certificate replaced on disk is served to new connections, and the client
// still works.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { FAYE_BIN, SERVER_TIMEOUT, bounded, makeClient, spawnUntilLine, waitFor } from './helpers.mjs';

const TEST_TIMEOUT = 30_000;
const LISTENING = /^faye-rs listening on (https:\/\/127\.0\.0\.1:(\d+)\/bayeux)$/;

const openssl = (args, cwd) => execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });

// A CA in `dir`: ca.pem, ca.key.
function makeCa(dir) {
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=faye-rs test CA'], dir);
}

// A server certificate for localhost signed by the CA, as `name`.pem and
// `name`.key; returns its SHA-256 fingerprint (as node's tls reports it).
function makeLeaf(dir, name) {
  fs.writeFileSync(path.join(dir, 'ext.cnf'),
    'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n');
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', '/CN=localhost'], dir);
  openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key',
    '-set_serial', String(Date.now()), '-days', '1', '-extfile', 'ext.cnf',
    '-out', `${name}.pem`], dir);
  return new crypto.X509Certificate(fs.readFileSync(path.join(dir, `${name}.pem`))).fingerprint256;
}

// The fingerprint of the certificate a new TLS connection to `port` is shown.
function servedFingerprint(port, ca) {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca }, () => {
      const fp = socket.getPeerCertificate().fingerprint256;
      socket.end();
      resolve(fp);
    });
    socket.setTimeout(5000, () => { socket.destroy(); reject(new Error('TLS connect timed out')); });
    socket.on('error', reject);
  });
}

describe('faye@1.4.3 client over TLS', () => {
  let dir;
  let server;
  let ca;
  let url;
  let firstFp;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'faye-tls-interop-'));
    makeCa(dir);
    firstFp = makeLeaf(dir, 'first');
    fs.copyFileSync(path.join(dir, 'first.pem'), path.join(dir, 'cert.pem'));
    fs.copyFileSync(path.join(dir, 'first.key'), path.join(dir, 'key.pem'));
    ca = fs.readFileSync(path.join(dir, 'ca.pem'));
    server = await spawnUntilLine({
      bin: FAYE_BIN,
      args: ['serve', '--host', '127.0.0.1', '--port', '0', '--timeout', String(SERVER_TIMEOUT),
        '--tls-cert', path.join(dir, 'cert.pem'), '--tls-key', path.join(dir, 'key.pem')],
      pattern: LISTENING,
    });
    url = `https://localhost:${server.match[2]}/bayeux`;
  });

  after(async () => {
    if (server) {
      const exit = await server.stop();
      assert.deepEqual(exit, { code: 0, signal: null }, 'exits cleanly on SIGTERM');
    }
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  // A message published by one client reaches another, both over `transport`.
  async function roundTrip(transport, channel) {
    const subscriber = makeClient(url, transport, { ca });
    const publisher = makeClient(url, transport, { ca });
    try {
      const received = [];
      await bounded(subscriber.client.subscribe(channel, (data) => received.push(data)), 5000,
        `subscribe to ${channel}`);
      await bounded(publisher.client.publish(channel, { over: transport }), 5000, 'publish');
      await waitFor(() => received.length === 1, 5000, 'the delivery');
      assert.deepEqual(received, [{ over: transport }]);
      assert.equal(subscriber.connectionType(), transport);
    } finally {
      await Promise.all([subscriber.close(), publisher.close()]);
    }
  }

  for (const transport of ['websocket', 'long-polling']) {
    it(`round-trips over ${transport}`, { timeout: TEST_TIMEOUT }, async () => {
      assert.equal(await servedFingerprint(Number(server.match[2]), ca), firstFp);
      await roundTrip(transport, `/tls/${transport}`);
    });
  }

  it('refuses a client that does not trust the CA', { timeout: TEST_TIMEOUT }, async () => {
    await assert.rejects(servedFingerprint(Number(server.match[2]), undefined),
      /self-signed|unable to (get|verify)|certificate/i);
  });

  it('serves a replaced certificate to new connections', { timeout: TEST_TIMEOUT }, async () => {
    const secondFp = makeLeaf(dir, 'second');
    assert.notEqual(secondFp, firstFp);
    // Key first, then certificate, each renamed into place.
    fs.copyFileSync(path.join(dir, 'second.key'), path.join(dir, 'key.tmp'));
    fs.renameSync(path.join(dir, 'key.tmp'), path.join(dir, 'key.pem'));
    fs.copyFileSync(path.join(dir, 'second.pem'), path.join(dir, 'cert.tmp'));
    fs.renameSync(path.join(dir, 'cert.tmp'), path.join(dir, 'cert.pem'));
    const port = Number(server.match[2]);
    await waitFor(async () => (await servedFingerprint(port, ca)) === secondFp, 10_000,
      'the new certificate');
    await roundTrip('websocket', '/tls/reloaded');
  });
});
