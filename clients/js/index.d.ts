// Types of faye-rs's browser client (the global `Faye` of client.js, and the
// ES module faye.mjs).

/** A Bayeux message, as extensions see it. */
export interface Message {
  channel: string;
  id?: string;
  clientId?: string;
  data?: unknown;
  successful?: boolean;
  error?: string;
  subscription?: string | string[];
  connectionType?: string;
  supportedConnectionTypes?: string[];
  advice?: Advice;
  ext?: Record<string, unknown>;
  [field: string]: unknown;
}

/** The server's advice (milliseconds). */
export interface Advice {
  reconnect?: 'retry' | 'handshake' | 'none';
  interval?: number;
  timeout?: number;
}

/** A Faye error: `code:params:message` parsed. */
export interface FayeError extends Error {
  code?: number;
  params?: string[];
}

export type ConnectionType =
  | 'websocket'
  | 'eventsource'
  | 'long-polling'
  | 'cross-origin-long-polling'
  | 'callback-polling';

/** What `disable()` accepts: a connection type, or Faye's `autodisconnect`. */
export type Feature = ConnectionType | 'autodisconnect';

/**
 * The client's connection: `unconnected` until first used, `connecting` while it
 * handshakes, `connected`, `reconnecting` after a request failed (it retries),
 * `disconnected` after `disconnect()` or the server's advice to stop.
 */
export type State = 'unconnected' | 'connecting' | 'connected' | 'reconnecting' | 'disconnected';

export interface ClientOptions {
  /** Seconds to wait between connects (default 0; the server's advice wins). */
  interval?: number;
  /** Seconds the server may hold a connect (default 60; the server's advice wins). */
  timeout?: number;
  /** Seconds to wait before sending a failed message again (default 5). */
  retry?: number;
  /** Another URL for some connection types, e.g. `{ websocket: 'https://ws.example.com/bayeux' }`. */
  endpoints?: Partial<Record<ConnectionType, string>>;
  /** Node options of Faye's client, accepted and ignored in a browser. */
  proxy?: unknown;
  tls?: unknown;
  ca?: unknown;
  scheduler?: unknown;
  websocketExtensions?: unknown;
}

export interface PublishOptions {
  /** Tries at most this many times (the first included); then the publication is rejected. */
  attempts?: number;
  /** Gives up this many seconds after publish(); then the publication is rejected. */
  deadline?: number;
}

export type Callback = (message: Message | null) => void;

/** Faye's extension: either hook may change, replace or drop (pass null) a message. */
export interface Extension {
  incoming?(message: Message, callback: Callback): void;
  outgoing?(message: Message, callback: Callback): void;
  added?(client: Client): void;
  removed?(client: Client): void;
}

/** A thenable with Faye's callback/errback. */
export interface Deferred<T> extends PromiseLike<T> {
  catch<R = never>(onRejected?: ((error: FayeError) => R | PromiseLike<R>) | null): Promise<T | R>;
  callback(fn: (value: T) => void, context?: unknown): this;
  errback(fn: (error: FayeError) => void, context?: unknown): this;
}

/** Settles when the server acknowledges the publish (rejected on a Bayeux error, or when dropped). */
export interface Publication extends Deferred<void> {}

/** Settles when the server acknowledges the subscription. */
export interface Subscription<T = any> extends Deferred<void> {
  readonly channel: string;
  /** Also calls `fn` with the channel each message came from (for wildcard subscriptions). */
  withChannel(fn: (channel: string, data: T) => void, context?: unknown): this;
  /** Removes this listener; the last one of a channel unsubscribes. */
  cancel(): void;
  unsubscribe(): void;
}

export interface ClientEvents {
  'transport:up': () => void;
  'transport:down': () => void;
  state: (state: State, previous: State) => void;
}

export class Client {
  constructor(endpoint?: string, options?: ClientOptions);

  subscribe<T = any>(channel: string, callback?: (data: T) => void, context?: unknown): Subscription<T>;
  subscribe<T = any>(channels: string[], callback?: (data: T) => void, context?: unknown): Subscription<T>[];
  unsubscribe(channel: string | string[], subscription?: Subscription | ((data: any) => void)): void;
  publish(channel: string, data: unknown, options?: PublishOptions): Publication;

  addExtension(extension: Extension): void;
  removeExtension(extension: Extension): void;
  setHeader(name: string, value: string): this;
  disable(feature: Feature): void;

  on<E extends keyof ClientEvents>(event: E, listener: ClientEvents[E], context?: unknown): this;
  off<E extends keyof ClientEvents>(event: E, listener?: ClientEvents[E]): this;
  bind<E extends keyof ClientEvents>(event: E, listener: ClientEvents[E], context?: unknown): this;
  unbind<E extends keyof ClientEvents>(event: E, listener?: ClientEvents[E]): this;

  /** Handshakes and connects now, rather than at the first subscribe or publish. */
  connect(callback?: () => void, context?: unknown): void;
  handshake(callback?: () => void, context?: unknown): void;
  /** Ends the session; resolves once the server answered (or the send failed). */
  disconnect(): Promise<void>;
  /** Sends now what waits for the retry interval; after disconnect(), starts a new session. */
  reconnect(): void;

  getState(): State;
  /** The session's id, or null before the handshake. */
  getClientId(): string | null;
  /** The connection type in use, or null before the handshake. */
  getTransport(): ConnectionType | null;
}

export const VERSION: string;

declare const Faye: { VERSION: string; Client: typeof Client };
export default Faye;
