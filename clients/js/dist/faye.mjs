/* faye-rs browser client 0.1.0 (MIT OR Apache-2.0) */

// src/index.js
var VERSION = "0.1.0";
var TYPES = ["websocket", "eventsource", "long-polling", "cross-origin-long-polling", "callback-polling"];
var HANDSHAKE_TYPES = ["long-polling", "cross-origin-long-polling", "callback-polling"];
var OPTIONS = ["interval", "timeout", "retry", "endpoints", "proxy", "tls", "ca", "scheduler", "websocketExtensions"];
var MAX_REQUEST = 2048;
var later = setTimeout;
var noop = () => {
};
var stop = clearTimeout;
var origin = (url) => new URL(url, location.href).origin;
var parseError = (text) => {
  const m = /^(\d{3}):([^:]*):([\s\S]*)$/.exec(text || "");
  const error = new Error(m ? m[3] : text || "Unknown error");
  if (m) {
    error.code = +m[1];
    error.params = m[2] ? m[2].split(",") : [];
  }
  return error;
};
var covers = (pattern, channel) => {
  if (pattern === channel) return true;
  const p = pattern.split("/");
  const c = channel.split("/");
  const last = p.pop();
  if (last !== "*" && last !== "**") return false;
  if (last === "*" ? c.length !== p.length + 1 : c.length <= p.length) return false;
  return p.every((s, i) => s === c[i]);
};
var Deferred = class {
  constructor() {
    this._p = new Promise((resolve, reject) => {
      this._ok = resolve;
      this._fail = reject;
    });
    this._p.catch(() => {
    });
  }
  then(onFulfilled, onRejected) {
    return this._p.then(onFulfilled, onRejected);
  }
  catch(onRejected) {
    return this._p.catch(onRejected);
  }
  callback(fn, context) {
    this._p.then((value) => fn.call(context, value), () => {
    });
    return this;
  }
  errback(fn, context) {
    this._p.catch((error) => fn.call(context, error));
    return this;
  }
};
var Publication = class extends Deferred {
};
var Subscription = class extends Deferred {
  constructor(client, channel, fn, context) {
    super();
    this._client = client;
    this.channel = channel;
    this._fn = fn;
    this._context = context;
    this._with = null;
  }
  withChannel(fn, context) {
    this._with = [fn, context];
    return this;
  }
  _call(channel, data) {
    if (this._fn) this._fn.call(this._context, data);
    if (this._with) this._with[0].call(this._with[1], channel, data);
  }
  cancel() {
    this._client.unsubscribe(this.channel, this);
  }
  unsubscribe() {
    this.cancel();
  }
};
var Http = class _Http {
  constructor(client, type) {
    this.c = client;
    this.type = type;
    this.out = [];
    this.busy = false;
    this.timer = null;
  }
  send(env) {
    if (env.message.channel === "/meta/connect") return this.request([env]);
    this.out.push(env);
    this.schedule();
  }
  schedule() {
    if (!this.timer && !this.busy && this.out.length) {
      this.timer = later(() => {
        this.timer = null;
        this.flush();
      }, 0);
    }
  }
  flush() {
    const batch = [];
    let size = 0;
    while (this.out.length) {
      const length = this.size(JSON.stringify(this.out[0].message));
      if (batch.length && size + length > MAX_REQUEST) break;
      batch.push(this.out.shift());
      size += length + 1;
    }
    if (!batch.length) return;
    this.busy = true;
    this.request(batch, () => {
      this.busy = false;
      this.schedule();
    });
  }
  size(json) {
    return this.type === "long-polling" ? json.length : encodeURIComponent(json).length;
  }
  request(envs, done) {
    const c = this.c;
    const tickets = envs.map((env) => [env, env.ticket]);
    const json = JSON.stringify(envs.map((env) => env.message));
    const url = c._url(this.type);
    let finished = false;
    let abort = () => {
    };
    let cleanup = () => {
    };
    const finish = (replies) => {
      if (finished) return;
      finished = true;
      stop(timer);
      cleanup();
      if (replies) c._received(replies, this);
      else c._failed(tickets);
      if (done) done();
    };
    const timer = later(() => {
      abort();
      finish();
    }, c._timeoutMs());
    if (this.type === "callback-polling") {
      const name = `__jsonp${++_Http.jsonp}__`;
      const script = document.createElement("script");
      let answered = false;
      script.onload = script.onerror = () => finish();
      cleanup = () => {
        script.remove();
        if (!answered) window[name] = () => delete window[name];
      };
      window[name] = (replies) => {
        answered = true;
        delete window[name];
        finish([].concat(replies));
      };
      script.src = `${url}${url.includes("?") ? "&" : "?"}message=${encodeURIComponent(json)}&jsonp=${name}`;
      document.head.appendChild(script);
      return;
    }
    const xhr = new XMLHttpRequest();
    abort = () => xhr.abort();
    xhr.open("POST", url, true);
    let body = json;
    if (this.type === "long-polling") {
      xhr.setRequestHeader("Content-Type", "application/json");
      xhr.setRequestHeader("Pragma", "no-cache");
      xhr.setRequestHeader("X-Requested-With", "XMLHttpRequest");
    } else {
      xhr.withCredentials = true;
      xhr.setRequestHeader("Content-Type", "application/x-www-form-urlencoded");
      body = `message=${encodeURIComponent(json)}`;
    }
    for (const name in c._headers) xhr.setRequestHeader(name, c._headers[name]);
    xhr.onload = () => {
      let replies = null;
      try {
        replies = [].concat(JSON.parse(xhr.responseText));
      } catch {
      }
      finish(xhr.status >= 200 && xhr.status < 300 && replies);
    };
    xhr.onerror = xhr.onabort = () => finish();
    xhr.send(body);
  }
  close() {
  }
};
Http.jsonp = 0;
var Stream = class {
  constructor(client, type) {
    this.c = client;
    this.type = type;
    this.s = null;
    if (type === "eventsource") this.http = new Http(client, "long-polling");
  }
  // Resolves whether a new stream opened (within the retry interval).
  open(clientId) {
    return new Promise((resolve) => {
      let s;
      let opened = false;
      const url = this.c._url(this.type);
      try {
        s = this.http ? new EventSource(`${url}/${clientId}`) : new WebSocket(url.replace(/^http/, "ws"));
      } catch {
        return resolve(false);
      }
      const timer = later(() => fail(), this.c._retry * 1e3);
      const fail = () => {
        stop(timer);
        s.onclose = s.onerror = null;
        s.close();
        if (!opened) resolve(false);
        else if (this.s === s) {
          this.s = null;
          this.c._broke(this);
        }
      };
      s.onopen = () => {
        opened = true;
        stop(timer);
        this.close();
        this.s = s;
        resolve(true);
      };
      s.onclose = s.onerror = fail;
      s.onmessage = (event) => {
        let messages;
        try {
          messages = [].concat(JSON.parse(event.data));
        } catch {
          return;
        }
        this.c._received(messages, this);
      };
    });
  }
  isOpen() {
    return !!this.s && this.s.readyState === 1;
  }
  send(env) {
    if (this.http) return this.http.send(env);
    const ticket = env.ticket;
    try {
      this.s.send(JSON.stringify([env.message]));
    } catch {
      this.c._failed([[env, ticket]]);
    }
  }
  close() {
    const s = this.s;
    this.s = null;
    if (s) {
      s.onclose = s.onerror = s.onmessage = null;
      s.close();
    }
  }
};
var Client = class {
  constructor(endpoint, options = {}) {
    for (const key in options) {
      if (!OPTIONS.includes(key)) throw new Error(`Unrecognized option: ${key}`);
    }
    this._endpoint = new URL(endpoint || "/bayeux", location.href).href;
    this._endpoints = options.endpoints || {};
    this._retry = options.retry ?? 5;
    this._advice = {
      reconnect: "retry",
      interval: 1e3 * (options.interval ?? 0),
      timeout: 1e3 * (options.timeout ?? 60)
    };
    this._state = "unconnected";
    this._clientId = null;
    this._ready = false;
    this._id = 0;
    this._pending = /* @__PURE__ */ new Map();
    this._channels = /* @__PURE__ */ new Map();
    this._exts = [];
    this._headers = {};
    this._disabled = /* @__PURE__ */ new Set();
    this._broken = /* @__PURE__ */ new Set();
    this._events = {};
    this._waiting = [];
    this._held = null;
    this._serverTypes = TYPES;
    this._outQ = Promise.resolve();
    this._inQ = Promise.resolve();
    this._ws = new Stream(this, "websocket");
    this._transport = null;
    if (typeof addEventListener === "function") {
      addEventListener("beforeunload", () => {
        if (!this._disabled.has("autodisconnect")) this.disconnect();
      });
    }
  }
  // ---- Public API ----------------------------------------------------------
  getState() {
    return this._state;
  }
  getClientId() {
    return this._clientId;
  }
  getTransport() {
    return this._transport ? this._transport.type : null;
  }
  on(event, fn, context) {
    (this._events[event] = this._events[event] || []).push([fn, context]);
    return this;
  }
  off(event, fn) {
    this._events[event] = fn ? (this._events[event] || []).filter((l) => l[0] !== fn) : [];
    return this;
  }
  bind(event, fn, context) {
    return this.on(event, fn, context);
  }
  unbind(event, fn) {
    return this.off(event, fn);
  }
  disable(feature) {
    this._disabled.add(feature);
  }
  setHeader(name, value) {
    this._headers[name] = value;
    return this;
  }
  addExtension(extension) {
    this._exts.push(extension);
    if (extension.added) extension.added(this);
  }
  removeExtension(extension) {
    this._exts = this._exts.filter((e) => e !== extension);
    if (extension.removed) extension.removed(this);
  }
  handshake(callback, context) {
    this.connect(callback, context);
  }
  connect(callback, context) {
    this._whenReady((error) => !error && callback && callback.call(context));
  }
  subscribe(channel, fn, context) {
    if (Array.isArray(channel)) return channel.map((c) => this.subscribe(c, fn, context));
    const sub = new Subscription(this, channel, fn, context);
    let entry = this._channels.get(channel);
    if (!entry) {
      entry = { subs: /* @__PURE__ */ new Set(), sent: false };
      entry.promise = new Promise((resolve, reject) => {
        entry.ok = resolve;
        entry.fail = reject;
      });
      entry.promise.catch(() => {
      });
      this._channels.set(channel, entry);
      if (this._state === "disconnected") entry.fail(new Error("Client disconnected"));
      else this._whenReady(() => this._subscribe(channel, entry));
    }
    entry.subs.add(sub);
    entry.promise.then(() => sub._ok(), (error) => sub._fail(error));
    return sub;
  }
  unsubscribe(channel, subscription) {
    if (Array.isArray(channel)) return channel.map((c) => this.unsubscribe(c, subscription));
    const entry = this._channels.get(channel);
    if (!entry) return;
    for (const sub of entry.subs) {
      if (!subscription || sub === subscription || sub._fn === subscription) entry.subs.delete(sub);
    }
    if (entry.subs.size) return;
    this._channels.delete(channel);
    if (entry.sent && this._ready) {
      this._request({ channel: "/meta/unsubscribe", clientId: this._clientId, subscription: channel }).catch(noop);
    }
  }
  publish(channel, data, options = {}) {
    const publication = new Publication();
    if (this._state === "disconnected") publication._fail(new Error("Client disconnected"));
    else this._whenReady((error) => {
      if (error) return publication._fail(error);
      this._request({ channel, data, clientId: this._clientId }, options).then(
        (reply) => reply.successful ? publication._ok() : publication._fail(parseError(reply.error)),
        (error2) => publication._fail(error2)
      );
    });
    return publication;
  }
  disconnect() {
    const clientId = this._clientId;
    if (this._state === "disconnected") return Promise.resolve();
    this._setState("disconnected");
    this._ready = false;
    stop(this._cycleTimer);
    const dropped = new Error("Client disconnected");
    for (const env of this._pending.values()) {
      stop(env.timer);
      stop(env.retryTimer);
      if (env.message.data !== void 0) env.reject(dropped);
    }
    this._pending.clear();
    for (const entry of this._channels.values()) entry.fail(dropped);
    this._channels.clear();
    const waiting = this._waiting;
    this._waiting = [];
    for (const fn of waiting) fn(dropped);
    const close = () => {
      this._ws.close();
      if (this._transport) this._transport.close();
    };
    if (!clientId) {
      close();
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => {
        close();
        resolve();
      };
      this._request({ channel: "/meta/disconnect", clientId }, { attempts: 1 }).then(done, done);
      later(done, this._timeoutMs());
    });
  }
  // Retries now whatever waits for the retry interval; after disconnect() or
  // advice to stop, starts a new session.
  reconnect() {
    if (this._state === "disconnected" || this._advice.reconnect === "none") {
      this._advice.reconnect = "retry";
      this._setState("unconnected");
    }
    stop(this._cycleTimer);
    for (const env of this._pending.values()) {
      if (env.retryTimer) {
        stop(env.retryTimer);
        env.retryTimer = null;
        this._dispatch(env);
      }
    }
    if (!this._clientId) this._handshake();
    else this._connect();
  }
  // ---- Session ----------------------------------------------------------------
  _emit(event, ...args) {
    for (const [fn, context] of (this._events[event] || []).slice()) {
      try {
        fn.apply(context, args);
      } catch (error) {
        later(() => {
          throw error;
        });
      }
    }
  }
  _setState(state) {
    const previous = this._state;
    if (state === previous) return;
    this._state = state;
    this._emit("state", state, previous);
  }
  _url(type) {
    return new URL(this._endpoints[type] || this._endpoint, location.href).href;
  }
  _timeoutMs() {
    return 1.2 * (this._advice.timeout || this._retry * 1e3);
  }
  _whenReady(fn) {
    if (this._ready) return fn();
    this._waiting.push(fn);
    if (this._state === "unconnected") this._handshake();
  }
  _handshake() {
    if (this._handshaking || this._advice.reconnect === "none" || this._state === "disconnected") return;
    const sameOrigin = origin(this._endpoint) === location.origin;
    const type = HANDSHAKE_TYPES.find((t) => !this._disabled.has(t) && this._usable(t, sameOrigin));
    if (!type) throw new Error(`Could not find a usable connection type for ${this._endpoint}`);
    this._handshaking = true;
    this._ready = false;
    this._clientId = null;
    this._broken.clear();
    this._setState("connecting");
    this._wsProbe = this._disabled.has("websocket") || typeof WebSocket !== "function" ? Promise.resolve(false) : this._ws.isOpen() ? Promise.resolve(true) : this._ws.open();
    this._handshakeBy = new Http(this, type);
    this._request({ channel: "/meta/handshake", version: "1.0", supportedConnectionTypes: TYPES }).then(async (reply) => {
      if (!reply.successful) {
        this._handshaking = false;
        this._cycleTimer = later(() => this._handshake(), this._retry * 1e3);
        return;
      }
      const clientId = reply.clientId;
      this._serverTypes = reply.supportedConnectionTypes || TYPES;
      await this._select(clientId);
      this._handshaking = false;
      if (this._state === "disconnected") return;
      this._clientId = clientId;
      this._ready = true;
      this._setState("connected");
      this._connect();
      for (const [channel, entry] of this._channels) {
        if (entry.sent) this._subscribe(channel, entry);
      }
      const waiting = this._waiting;
      this._waiting = [];
      for (const fn of waiting) fn();
    }, noop);
  }
  _usable(type, sameOrigin) {
    if (type === "long-polling" || type === "eventsource") return sameOrigin;
    if (type === "cross-origin-long-polling") return !sameOrigin;
    return type === "callback-polling";
  }
  // Chooses the first usable type the server supports and this client may use.
  async _select(clientId) {
    for (const type of TYPES) {
      if (!this._serverTypes.includes(type) || this._disabled.has(type) || this._broken.has(type)) continue;
      const sameOrigin = origin(this._url(type)) === location.origin;
      let transport = null;
      if (type === "websocket") {
        if (await this._wsProbe) transport = this._ws;
      } else if (type === "eventsource") {
        if (sameOrigin && typeof EventSource === "function") {
          const stream = new Stream(this, type);
          if (await stream.open(clientId)) transport = stream;
        }
      } else if (this._usable(type, sameOrigin)) {
        transport = new Http(this, type);
      }
      if (transport) {
        if (this._transport && this._transport !== transport) this._transport.close();
        if (transport !== this._ws) this._ws.close();
        this._transport = transport;
        return;
      }
    }
    this._transport = this._handshakeBy;
  }
  _connect() {
    if (!this._ready || this._connecting || this._advice.reconnect === "none") return;
    this._connecting = true;
    stop(this._cycleTimer);
    const message = { channel: "/meta/connect", clientId: this._clientId, connectionType: this._transport.type };
    this._connectMessage = message;
    this._request(message).then(() => {
      if (this._connectMessage !== message) return;
      this._connecting = false;
      if (this._ready) this._cycleTimer = later(() => this._connect(), this._advice.interval);
    }, noop);
  }
  _subscribe(channel, entry) {
    if (this._channels.get(channel) !== entry) return;
    entry.sent = true;
    this._request({ channel: "/meta/subscribe", clientId: this._clientId, subscription: channel }).then((reply) => {
      if (reply.successful) return entry.ok();
      if (this._channels.get(channel) === entry) this._channels.delete(channel);
      entry.fail(parseError(reply.error));
    }, (error) => entry.fail(error));
  }
  _advise(advice) {
    Object.assign(this._advice, advice);
    if (advice.reconnect === "handshake" && this._state !== "disconnected") {
      this._clientId = null;
      this._ready = false;
      this._connecting = false;
      this._connectMessage = null;
      stop(this._cycleTimer);
      this._cycleTimer = later(() => this._handshake(), this._advice.interval);
    } else if (advice.reconnect === "none") {
      this._ready = false;
      this._setState("disconnected");
      this._ws.close();
    }
  }
  // ---- Messages -----------------------------------------------------------------
  // Sends `message` (retrying after failures); resolves with the reply, or
  // rejects once `attempts` or `deadline` (seconds) run out.
  _request(message, { attempts, deadline } = {}) {
    message.id = (this._id = (this._id + 1) % 4294967296).toString(36);
    const expires = deadline && Date.now() + deadline * 1e3;
    return new Promise((resolve, reject) => {
      this._outQ = this._outQ.then(() => this._pipe("outgoing", message)).then((sent) => {
        if (!sent) return reject(new Error("Message dropped by an extension"));
        const env = { message: sent, resolve, reject, attempts, expires, tries: 0 };
        this._pending.set(sent.id, env);
        this._dispatch(env);
      });
    });
  }
  _dispatch(env) {
    if (this._pending.get(env.message.id) !== env) return;
    if (env.attempts && env.tries >= env.attempts || env.expires && Date.now() > env.expires) {
      this._pending.delete(env.message.id);
      return env.reject(new Error(`Message not delivered after ${env.tries} attempt(s)`));
    }
    const handshake = env.message.channel === "/meta/handshake";
    if (this._held && !handshake) return this._held.push(env);
    const transport = handshake ? this._handshakeBy : this._transport;
    if (env.message.channel === "/meta/connect") env.message.connectionType = transport.type;
    env.tries++;
    env.via = transport;
    const ticket = env.ticket = {};
    stop(env.timer);
    env.timer = later(() => this._failed([[env, ticket]]), this._timeoutMs() + 100);
    transport.send(env);
  }
  // Sends that failed (network, HTTP status, timeout): each is sent again after
  // the retry interval.
  _failed(items) {
    let any = false;
    for (const [env, ticket] of items) {
      if (env.ticket !== ticket || this._pending.get(env.message.id) !== env) continue;
      env.ticket = null;
      stop(env.timer);
      any = true;
      env.retryTimer = later(() => {
        env.retryTimer = null;
        this._dispatch(env);
      }, this._retry * 1e3);
    }
    if (any) this._down();
  }
  _up() {
    if (this._isUp !== true) {
      this._isUp = true;
      this._emit("transport:up");
    }
    if (this._ready) this._setState("connected");
  }
  _down() {
    if (this._isUp !== false) {
      this._isUp = false;
      this._emit("transport:down");
    }
    if (this._state === "connected") this._setState("reconnecting");
  }
  // The stream `transport` closed after it had worked. It is opened again;
  // if that fails, the client falls back to the next usable type (until the
  // next handshake tries them all again). What was in flight on it is resent.
  async _broke(transport) {
    if (this._transport !== transport || this._held) return;
    this._down();
    const held = this._held = [];
    for (const env of this._pending.values()) {
      if (env.via === transport && env.ticket) {
        env.ticket = null;
        stop(env.timer);
        held.push(env);
      }
    }
    const clientId = this._clientId;
    if (!(clientId && await transport.open(clientId))) {
      this._broken.add(transport.type);
      transport.close();
      await this._select(clientId);
    }
    this._held = null;
    this._connecting = false;
    this._connectMessage = null;
    for (const env of held) {
      if (env.message.channel === "/meta/connect") this._pending.delete(env.message.id);
      else this._dispatch(env);
    }
    this._connect();
  }
  _received(messages, via) {
    if (this._state === "disconnected" && !messages.some((m) => m.channel === "/meta/disconnect")) return;
    this._up(via);
    for (const raw of messages) {
      let env = null;
      if (raw.successful !== void 0 && this._pending.get(raw.id)) {
        env = this._pending.get(raw.id);
        this._pending.delete(raw.id);
        env.ticket = null;
        stop(env.timer);
        stop(env.retryTimer);
      }
      this._inQ = this._inQ.then(() => this._pipe("incoming", raw)).then((message) => {
        if (!message) return;
        if (message.advice) this._advise(message.advice);
        if (message.channel && message.data !== void 0 && !message.channel.startsWith("/meta/")) {
          this._deliver(message);
        }
        if (env) env.resolve(message);
      });
    }
  }
  _deliver(message) {
    for (const [pattern, entry] of this._channels) {
      if (!covers(pattern, message.channel)) continue;
      for (const sub of entry.subs) {
        try {
          sub._call(message.channel, message.data);
        } catch (error) {
          later(() => {
            throw error;
          });
        }
      }
    }
  }
  // Runs `message` through the extensions' `stage` hook; resolves with what
  // comes out (null when dropped).
  _pipe(stage, message) {
    const exts = this._exts.slice();
    return new Promise((resolve) => {
      const step = (i, m) => {
        if (!m || i >= exts.length) return resolve(m);
        const fn = exts[i][stage];
        if (typeof fn !== "function") return step(i + 1, m);
        const next = (out) => step(i + 1, out);
        if (fn.length >= 3) fn.call(exts[i], m, null, next);
        else fn.call(exts[i], m, next);
      };
      step(0, message);
    });
  }
};
var index_default = { VERSION, Client };
export {
  Client,
  Publication,
  Subscription,
  VERSION,
  index_default as default
};
