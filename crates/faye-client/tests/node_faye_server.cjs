// Node Faye 1.4.3 for faye-client's tests.
//   node node_faye_server.cjs <interop/node_modules> <port, 0 for any> <deflate|plain>
// Prints {"port": N} once listening on 127.0.0.1, then one JSON line per message
// it receives: id, channel, clientId, connectionType, ext, and the X-Test header of
// the request it came in (the upgrade request for a WebSocket).
const path = require('path');
const http = require('http');
const [modules, port, mode] = process.argv.slice(2);
const faye = require(path.join(modules, 'faye'));

const bayeux = new faye.NodeAdapter({ mount: '/bayeux', timeout: 10 });
if (mode === 'deflate') bayeux.addWebsocketExtension(require(path.join(modules, 'permessage-deflate')));
bayeux.addExtension({
  incoming(message, request, callback) {
    const headers = (request && request.headers) || {};
    console.log(JSON.stringify({
      id: message.id,
      channel: message.channel,
      clientId: message.clientId,
      connectionType: message.connectionType,
      ext: message.ext,
      header: headers['x-test'],
      extensions: headers['sec-websocket-extensions'],
    }));
    callback(message);
  },
});
const server = http.createServer();
bayeux.attach(server);
server.listen(Number(port), '127.0.0.1', () => {
  console.log(JSON.stringify({ port: server.address().port }));
});
process.on('SIGTERM', () => process.exit(0));
