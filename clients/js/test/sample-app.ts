// A sample app typed against index.d.ts: `tsc --noEmit -p test` must accept it
// (scripts/test runs it).
import Faye, { Client, type Message, type State, type Subscription } from '../index.js';

interface Chat {
  user: string;
  text: string;
}

const client = new Client('https://chat.example.com/bayeux', { retry: 2, timeout: 30 });
client.disable('websocket');
client.setHeader('Authorization', 'Bearer t0k3n');

const sub: Subscription<Chat> = client.subscribe<Chat>('/chat/*', (data) => {
  const line: string = `${data.user}: ${data.text}`;
  console.log(line);
});
sub.withChannel((channel, data) => console.log(channel.toUpperCase(), data.text)).then(() => console.log('subscribed'));
const subs = client.subscribe(['/a', '/b']);
subs.forEach((s) => s.cancel());

client
  .publish('/chat/lobby', { user: 'ann', text: 'hi' }, { attempts: 3, deadline: 10 })
  .callback(() => console.log('sent'))
  .errback((error) => console.log(error.code, error.params, error.message));
await client.publish('/chat/lobby', { user: 'bob', text: 'hello' });

client.addExtension({
  outgoing(message: Message, callback) {
    message.ext = { ...message.ext, token: 't0k3n' };
    callback(message);
  },
  incoming(message, callback) {
    callback(message.error ? null : message);
  },
});

client.on('transport:down', () => console.log('offline'));
client.on('transport:up', () => console.log('online'));
client.on('state', (state: State, previous: State) => console.log(previous, '->', state));
const id: string | null = client.getClientId();
const transport = client.getTransport();
if (transport === 'long-polling' || transport === null) console.log(id);
client.reconnect();
client.unsubscribe('/chat/*', sub);
await client.disconnect();

const viaGlobal = new Faye.Client('/bayeux');
console.log(Faye.VERSION, viaGlobal.getState());

// Misuses the declarations must reject (tsc fails if any of these compiles).
// @ts-expect-error: not a connection type
client.disable('flash');
// @ts-expect-error: no such event
client.on('message', () => {});
// @ts-expect-error: a subscription's data is typed
client.subscribe<Chat>('/chat', (data) => data.txt);
// @ts-expect-error: publish options are attempts and deadline
client.publish('/x', 1, { retries: 3 });
