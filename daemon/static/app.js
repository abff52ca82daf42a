// The dashboard: token bootstrap, the views, the new-conversation form, the composer, keys.
// The list is list.js's, the open conversation conversation.js's.
//
// On a narrow screen (a phone) the list and the conversation are two views: choosing a
// conversation shows it (a history entry, so the phone's back gesture returns to the list), and
// its Back button returns. On a wide one both show side by side and the view is ignored.
//
// The token arrives in the URL fragment (`#token=...`, never sent to any server), moves to
// sessionStorage (this tab only) and leaves the address bar at once.

import { Completer } from "./complete.js";
import { ConversationView } from "./conversation.js";
import { el } from "./dom.js";
import { ConversationList } from "./list.js";
import { Watcher } from "./notify.js";
import { Rpc } from "./rpc.js";

const TOKEN_KEY = "acpd.token";
const LIST_REFRESH_MS = 2000; // the first page, while the tab is visible
const HIDDEN_EVERY = 5; // ticks between polls while hidden (the title's count, notifications)
const NARROW = window.matchMedia("(max-width: 720px)");

const $ = (id) => document.getElementById(id);

// --- the token -------------------------------------------------------------------------------

/** {token} or {code} from the fragment (then gone from the address bar), else the token this
 *  tab kept, else null. A code (from `acpd dashboard --open`) is single use: the daemon trades
 *  it for the token on connecting. */
function takeCredentials({ kept = true } = {}) {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  const code = params.get("code");
  if (token || code) {
    params.delete("token");
    params.delete("code");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
  }
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    return { token };
  }
  if (code) return { code };
  const stored = kept ? sessionStorage.getItem(TOKEN_KEY) : null;
  return stored ? { token: stored } : null;
}

function routeId() {
  return new URLSearchParams(location.hash.slice(1)).get("c");
}

// --- the app ---------------------------------------------------------------------------------

class App {
  constructor() {
    this.rpc = null;
    this.listTimer = null;
    this.ticks = 0;
    this.conv = new ConversationView(
      null,
      {
        root: $("conv"),
        title: $("conv-title"),
        meta: $("conv-meta"),
        status: $("conv-status"),
        session: $("session"),
        interrupt: $("interrupt"),
        resume: $("resume"),
        steer: $("steer"),
        timeline: $("timeline"),
        earlier: $("earlier"),
        events: $("events"),
        live: $("live"),
        queue: $("queue"),
        queueList: $("queue-list"),
        queueTitle: $("queue-title"),
        error: $("conv-error"),
        input: $("input"),
      },
      {
        onInfo: (info) => this.list.learn(info),
        onEvent: (id, event, info) => {
          if (info) this.watcher.event(info, event);
        },
        onSession: () => this.completer?.update(),
      },
    );
    this.completer = new Completer({
      input: $("input"),
      box: $("completion"),
      list: $("commands"),
      hint: $("command-hint"),
      form: $("composer"),
      commands: () => this.conv.session.value.commands,
    });
    this.watcher = new Watcher({
      rpc: () => this.rpc,
      onScreen: (id) => this.onScreen(id),
      open: (id) => this.open(id, { push: true }),
      changed: () => this.list.render(),
    });
    this.list = new ConversationList(
      { list: $("list"), summary: $("list-summary"), more: $("more") },
      {
        rpc: () => this.rpc,
        watcher: this.watcher,
        current: () => this.conv.id,
        open: (id) => this.open(id, { push: true }),
      },
    );
    this.watcher.bind($("notify"));
    this.bind();
  }

  /** Whether conversation `id` is what the user is looking at now. */
  onScreen(id) {
    return (
      id === this.conv.id &&
      document.visibilityState === "visible" &&
      (!NARROW.matches || $("app").dataset.view === "conv")
    );
  }

  setView(view) {
    $("app").dataset.view = view;
    if (view === "conv" && this.conv.id !== null) this.watcher.looked(this.conv.id);
  }

  /** Back to the list (narrow screens): the history entry `open` pushed, if it did. */
  back() {
    if (history.state?.acpd === "conv") {
      history.back(); // popstate shows the list
    } else {
      history.replaceState(null, "", location.pathname + location.search);
      this.setView("list");
    }
    this.list.focus(this.conv.id);
  }

  start(credentials) {
    $("auth").hidden = true;
    this.setView(routeId() ? "conv" : "list");
    $("empty").hidden = this.conv.id !== null;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    this.rpc = new Rpc(`${scheme}://${location.host}/ws`, credentials);
    this.conv.rpc = this.rpc;
    this.rpc.addEventListener("token", (e) => sessionStorage.setItem(TOKEN_KEY, e.detail));
    this.rpc.addEventListener("state", (e) => this.showState(e.detail));
    this.rpc.addEventListener("notification", (e) => {
      const { method, params } = e.detail;
      if (this.conv.notify(method, params)) this.list.refreshSoon();
    });
    this.rpc.addEventListener("ready", () => this.ready());
    this.rpc.start();
  }

  async ready() {
    this.list.refresh();
    this.loadAgents();
    const wanted = routeId();
    if (this.conv.id !== null) await this.conv.resume();
    else if (wanted) this.open(wanted);
    clearInterval(this.listTimer);
    this.listTimer = setInterval(() => {
      if (this.rpc.state !== "open") return;
      ++this.ticks;
      // Hidden, less often: the tab's title still counts what waits, and notifications come.
      if (document.visibilityState !== "visible") {
        if (this.ticks % HIDDEN_EVERY === 0) this.list.refresh();
        return;
      }
      this.list.refresh();
      // The open conversation follows its events; this catches what has none (e.g. another
      // client removing a queued message).
      if (this.ticks % 2 === 0) this.conv.refreshSoon(0);
    }, LIST_REFRESH_MS);
  }

  showState({ state, delay, message }) {
    clearInterval(this.countdown);
    const conn = $("conn");
    conn.dataset.state = state;
    conn.textContent = {
      connecting: "connecting…",
      open: "connected",
      waiting: "offline",
      unauthorized: "not connected",
    }[state];
    $("new-toggle").disabled = state !== "open";
    const retry = $("retry");
    retry.hidden = state !== "waiting";
    if (state === "waiting") {
      // The countdown is on the button, not in the live status: no announcement every second.
      const at = Date.now() + (delay ?? 0);
      const tick = () => {
        retry.textContent = `Retry now (${Math.max(0, Math.ceil((at - Date.now()) / 1000))} s)`;
      };
      tick();
      this.countdown = setInterval(tick, 1000);
    }
    if (state === "unauthorized") {
      clearInterval(this.listTimer);
      sessionStorage.removeItem(TOKEN_KEY);
      showAuth(`The daemon refused this page: ${message.replace(/^unauthorized: /, "").replaceAll("`", "")}.`);
    }
  }

  // --- opening a conversation ----------------------------------------------------------------

  /** Show conversation `id`. `push`: a new history entry (chosen from the list), so that
   *  going back returns to the list on a phone. */
  open(id, { push = false } = {}) {
    const url = `${location.pathname}${location.search}#c=${encodeURIComponent(id)}`;
    if (push && routeId() !== id) history.pushState({ acpd: "conv" }, "", url);
    else history.replaceState(history.state, "", url);
    $("empty").hidden = true;
    $("conv").hidden = false;
    this.conv.open(id); // the one already open: nothing happens
    this.setView("conv");
    this.list.render(); // marks the current one
  }

  /** The address changed (back, forward, a new link): show what it names. */
  route() {
    const id = routeId();
    if (id && this.rpc?.state === "open") this.open(id);
    else if (!id) this.setView("list");
  }

  // --- new conversation ----------------------------------------------------------------------

  async loadAgents() {
    try {
      const { agents } = await this.rpc.call("agents/list");
      const select = $("new-agent");
      const chosen = select.value;
      // First and preselected: no `agent` param, i.e. the daemon's configured default.
      const fallback = el("option", "", "default agent");
      fallback.value = "";
      select.replaceChildren(fallback, ...agents.map((a) => el("option", "", a.name)));
      select.value = chosen;
    } catch {
      // Offline: loaded again on reconnect.
    }
  }

  toggleNew(show) {
    $("new-form").hidden = !show;
    $("new-toggle").setAttribute("aria-expanded", String(show));
    if (show) $("new-agent").focus();
    else $("new-toggle").focus();
  }

  async create(event) {
    event.preventDefault();
    const params = { agent: $("new-agent").value || undefined };
    const cwd = $("new-cwd").value.trim();
    const title = $("new-title").value.trim();
    if (cwd) params.cwd = cwd;
    if (title) params.title = title;
    const error = $("new-error");
    error.hidden = true;
    try {
      const { conversation } = await this.rpc.call("conversations/create", params);
      $("new-title").value = "";
      this.toggleNew(false);
      this.list.add(conversation);
      this.open(conversation.id, { push: true });
      $("input").focus();
      this.list.refresh();
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    }
  }

  // --- composer and keys ---------------------------------------------------------------------

  async send(event, { steer = false } = {}) {
    event?.preventDefault();
    const input = $("input");
    const text = input.value;
    if (!text.trim() || this.conv.id === null) return;
    // Cleared now, not on the ack: the next message may be typed while this one is in flight,
    // and clearing the box then would throw it away.
    input.value = "";
    try {
      this.conv.showError("");
      await this.conv.send(text, { steer });
      this.conv.scrollToEnd();
    } catch (err) {
      // Not sent: the text goes back in the box, unless something new is being typed there.
      if (input.value === "") {
        input.value = text;
        this.conv.showError(err.message);
      } else {
        const gist = text.length > 80 ? `${text.slice(0, 80)}…` : text;
        this.conv.showError(`${err.message} (not sent: "${gist}")`);
      }
    }
  }

  bind() {
    $("new-toggle").addEventListener("click", () => this.toggleNew($("new-form").hidden));
    $("new-cancel").addEventListener("click", () => this.toggleNew(false));
    $("new-form").addEventListener("submit", (e) => this.create(e));
    $("earlier").addEventListener("click", () => this.conv.loadEarlier());
    $("composer").addEventListener("submit", (e) => this.send(e));
    $("steer").addEventListener("click", () => this.send(null, { steer: true }));
    $("interrupt").addEventListener("click", () => this.conv.interrupt());
    $("resume").addEventListener("click", () => this.conv.resumeQueue());
    $("retry").addEventListener("click", () => this.rpc?.reconnectNow());
    $("back").addEventListener("click", () => this.back());
    window.addEventListener("popstate", () => this.route());
    // A notification clicked on a phone (through the service worker): open its conversation.
    navigator.serviceWorker?.addEventListener("message", (e) => {
      if (typeof e.data?.open === "string") this.open(e.data.open, { push: true });
    });
    // A new link opened in this tab (only the fragment changed, so no reload).
    window.addEventListener("hashchange", () => {
      const fresh = takeCredentials({ kept: false });
      if (fresh && (this.rpc === null || this.rpc.state === "unauthorized")) this.start(fresh);
      else this.route();
    });
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState !== "visible") return;
      if (this.onScreen(this.conv.id)) this.watcher.looked(this.conv.id);
      if (this.rpc?.state !== "open") return;
      this.list.refresh(); // back to the tab: no waiting for the next tick
      this.conv.refreshSoon(0);
    });
    $("input").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && !e.isComposing) {
        e.preventDefault(); // Ctrl+Enter steers while a turn runs, else it sends
        if ($("steer").disabled) $("composer").requestSubmit();
        else this.send(null, { steer: true });
      } else if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        $("composer").requestSubmit();
      }
    });
    document.addEventListener("keydown", (e) => {
      if (e.key !== "Escape") return;
      if (!$("new-form").hidden && $("new-form").contains(document.activeElement)) {
        this.toggleNew(false);
      } else if (this.conv.info?.status === "running") {
        e.preventDefault();
        this.conv.interrupt();
      }
    });
    $("auth-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const token = $("auth-token").value.trim();
      if (!token) return;
      sessionStorage.setItem(TOKEN_KEY, token);
      $("auth-token").value = "";
      this.start({ token });
    });
  }
}

function showAuth(message) {
  $("app").dataset.view = "conv"; // on a phone: the pane that holds the form
  $("auth").hidden = false;
  $("empty").hidden = true;
  $("new-toggle").disabled = true;
  const conn = $("conn");
  conn.dataset.state = "unauthorized";
  conn.textContent = "not connected";
  const error = $("auth-error");
  error.textContent = message ?? "";
  error.hidden = !message;
  $("auth-token").focus();
}

const app = new App();
app.setView(routeId() ? "conv" : "list");
const credentials = takeCredentials();
if (credentials) app.start(credentials);
else showAuth();
