// A small HTTP proxy on 127.0.0.1 in front of a Faye server, for the browser
// tests of faye-rs's client: it serves the tests' pages itself (so that they are
// same-origin with the endpoint), forwards everything else (long polls,
// EventSource streams, WebSocket upgrades), and can refuse WebSocket upgrades
// or cut the sockets it carries, as a proxy or firewall that breaks WebSocket
// would.
import http from 'node:http';
import net from 'node:net';

// Starts a proxy to 127.0.0.1:`targetPort`; `pages` maps a path to
// { type, body }. Resolves { origin, upgrades, blockWebSockets(), breakWebSockets(), close() }.
export function startProxy(targetPort, pages = {}) {
  const sockets = new Set();
  const state = { allowUpgrades: true, upgrades: 0, refused: 0, down: false };
  const server = http.createServer((req, res) => {
    if (state.down) return req.socket.destroy();
    const page = pages[new URL(req.url, 'http://x').pathname];
    if (page) {
      res.writeHead(200, { 'Content-Type': page.type, 'Cache-Control': 'no-store' });
      return res.end(page.body);
    }
    const upstream = http.request({
      host: '127.0.0.1', port: targetPort, method: req.method, path: req.url, headers: req.headers,
    }, (up) => {
      res.writeHead(up.statusCode, up.headers);
      up.pipe(res);
      up.on('error', () => res.destroy());
    });
    // The server is down: the browser sees the connection fail.
    upstream.on('error', () => res.destroy());
    res.on('close', () => upstream.destroy());
    req.pipe(upstream);
  });
  server.on('upgrade', (req, socket, head) => {
    if (!state.allowUpgrades || state.down) {
      state.refused++;
      return socket.destroy();
    }
    state.upgrades++;
    const up = net.connect(targetPort, '127.0.0.1', () => {
      let raw = `${req.method} ${req.url} HTTP/1.1\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2) raw += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      up.write(`${raw}\r\n`);
      if (head.length) up.write(head);
      socket.pipe(up);
      up.pipe(socket);
    });
    const pair = { socket, up };
    sockets.add(pair);
    const end = () => {
      sockets.delete(pair);
      socket.destroy();
      up.destroy();
    };
    socket.on('error', end);
    socket.on('close', end);
    up.on('error', end);
    up.on('close', end);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve({
      origin: `http://127.0.0.1:${server.address().port}`,
      state,
      // Later upgrades are refused (the socket is closed before any answer).
      blockWebSockets() { state.allowUpgrades = false; },
      allowWebSockets() { state.allowUpgrades = true; },
      // Down: every connection is cut and every request refused, as if the
      // server were unreachable; up again: as before.
      setDown(down) {
        state.down = down;
        if (!down) return;
        for (const { socket, up } of [...sockets]) {
          socket.destroy();
          up.destroy();
        }
        server.closeAllConnections();
      },
      // Cuts every WebSocket carried now, and refuses later ones.
      breakWebSockets() {
        state.allowUpgrades = false;
        for (const { socket, up } of [...sockets]) {
          socket.destroy();
          up.destroy();
        }
      },
      close: () => new Promise((done) => {
        for (const { socket, up } of [...sockets]) {
          socket.destroy();
          up.destroy();
        }
        server.closeAllConnections();
        server.close(() => done());
      }),
    }));
  });
}
