// JSON-RPC over the dashboard's websocket: authenticate first, reconnect with backoff.
//
// Events (EventTarget): "state" (detail: {state, delay?}), "ready" (authenticated; fired again
// after every reconnect, so the app resubscribes), "notification" (detail: {method, params}),
// "token" (detail: the token a single-use code was exchanged for, to keep for reconnects).
// States: connecting, open, waiting (to reconnect), unauthorized (no retry: the token is bad).

export const UNAUTHORIZED = -32004;

export class RpcError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

const MIN_DELAY_MS = 500;
const MAX_DELAY_MS = 10000;
const CALL_TIMEOUT_MS = 30000;

export class Rpc extends EventTarget {
  /** `credentials`: {token} or {code} (single use: exchanged for the token at once). */
  constructor(url, { token = null, code = null }) {
    super();
    this.url = url;
    this.token = token;
    this.code = code;
    this.ws = null;
    this.state = "idle";
    this.nextId = 1;
    this.pending = new Map(); // id -> {resolve, reject, timer}
    this.attempt = 0;
    this.retryTimer = null;
  }

  start() {
    this.connect();
  }

  setState(state, extra = {}) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, ...extra } }));
  }

  connect() {
    clearTimeout(this.retryTimer);
    this.setState("connecting");
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => {
      // The token goes in the first message, never in the URL.
      const params = this.token ? { token: this.token } : { code: this.code };
      this.send({ jsonrpc: "2.0", id: 0, method: "auth", params });
    };
    ws.onmessage = (msg) => this.receive(msg.data);
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.failPending("disconnected");
      if (this.state === "unauthorized") return;
      // Exponential backoff with jitter, so many tabs do not knock in step.
      const base = Math.min(MAX_DELAY_MS, MIN_DELAY_MS * 2 ** this.attempt);
      const delay = Math.round(base * (0.5 + Math.random() / 2));
      this.attempt += 1;
      this.setState("waiting", { delay });
      this.retryTimer = setTimeout(() => this.connect(), delay);
    };
  }

  /** Try again now (e.g. the user clicked "reconnect"). */
  reconnectNow() {
    if (this.state === "waiting") this.connect();
  }

  send(obj) {
    this.ws.send(JSON.stringify(obj));
  }

  receive(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (msg.id === 0 && this.state === "connecting") {
      if (msg.error) {
        this.setState("unauthorized", { message: msg.error.message });
        this.ws.close();
      } else {
        if (msg.result?.token) {
          this.token = msg.result.token; // the code is used up; reconnects use the token
          this.code = null;
          this.dispatchEvent(new CustomEvent("token", { detail: this.token }));
        }
        this.attempt = 0;
        this.setState("open");
        this.dispatchEvent(new Event("ready"));
      }
      return;
    }
    if (msg.method !== undefined && msg.id === undefined) {
      const detail = { method: msg.method, params: msg.params };
      this.dispatchEvent(new CustomEvent("notification", { detail }));
      return;
    }
    const waiter = this.pending.get(msg.id);
    if (waiter === undefined) return;
    this.pending.delete(msg.id);
    clearTimeout(waiter.timer);
    if (msg.error) waiter.reject(new RpcError(msg.error.code, msg.error.message));
    else waiter.resolve(msg.result);
  }

  /** Call `method`; resolves with its result, rejects with an RpcError. */
  call(method, params = {}) {
    if (this.state !== "open") {
      return Promise.reject(new RpcError(0, "not connected"));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new RpcError(0, `${method}: no answer`));
      }, CALL_TIMEOUT_MS);
      this.pending.set(id, { resolve, reject, timer });
      this.send({ jsonrpc: "2.0", id, method, params });
    });
  }

  failPending(why) {
    for (const waiter of this.pending.values()) {
      clearTimeout(waiter.timer);
      waiter.reject(new RpcError(0, why));
    }
    this.pending.clear();
  }
}
