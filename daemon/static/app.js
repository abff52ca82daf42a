// The dashboard: token bootstrap, the conversation list, the new-conversation form, keys.
//
// The token arrives in the URL fragment (`#token=...`, never sent to any server), moves to
// sessionStorage (this tab only) and leaves the address bar at once.

import { ConversationView, el } from "./conversation.js";
import { Rpc } from "./rpc.js";

const TOKEN_KEY = "acpd.token";
const LIST_PAGE = 50;
const LIST_MAX = 1000; // conversations/list's largest page
const LIST_REFRESH_MS = 4000;

const $ = (id) => document.getElementById(id);

// --- the token -------------------------------------------------------------------------------

function takeTokenFromHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

function routeId() {
  return new URLSearchParams(location.hash.slice(1)).get("c");
}

// --- the app ---------------------------------------------------------------------------------

class App {
  constructor() {
    this.rpc = null;
    this.pages = []; // conversation pages as fetched; [0] is refreshed on a timer
    this.next = null; // cursor for the page after the last one fetched
    this.total = 0;
    this.items = new Map(); // id -> <li>
    this.listTimer = null;
    this.conv = new ConversationView(
      null,
      {
        root: $("conv"),
        title: $("conv-title"),
        meta: $("conv-meta"),
        status: $("conv-status"),
        interrupt: $("interrupt"),
        resume: $("resume"),
        timeline: $("timeline"),
        earlier: $("earlier"),
        events: $("events"),
        live: $("live"),
        queue: $("queue"),
        queueList: $("queue-list"),
        error: $("conv-error"),
      },
      { onInfo: (info) => this.updateItem(info) },
    );
    this.bind();
  }

  start(token) {
    $("auth").hidden = true;
    this.rpc = new Rpc(`ws://${location.host}/ws`, token);
    this.conv.rpc = this.rpc;
    this.rpc.addEventListener("state", (e) => this.showState(e.detail));
    this.rpc.addEventListener("notification", (e) => {
      const { method, params } = e.detail;
      if (this.conv.notify(method, params)) this.refreshListSoon();
    });
    this.rpc.addEventListener("ready", () => this.ready());
    this.rpc.start();
  }

  async ready() {
    this.refreshList();
    this.loadAgents();
    const wanted = routeId();
    if (this.conv.id !== null) await this.conv.resume();
    else if (wanted) this.open(wanted);
    clearInterval(this.listTimer);
    this.listTimer = setInterval(() => {
      if (document.visibilityState === "visible" && this.rpc.state === "open") {
        this.refreshList();
        this.conv.refreshSoon(0);
      }
    }, LIST_REFRESH_MS);
  }

  showState({ state, delay, message }) {
    const conn = $("conn");
    conn.dataset.state = state;
    conn.textContent = {
      connecting: "connecting…",
      open: "connected",
      waiting: `offline · retrying in ${Math.ceil((delay ?? 0) / 1000)} s`,
      unauthorized: "token refused",
    }[state];
    if (state === "unauthorized") {
      clearInterval(this.listTimer);
      sessionStorage.removeItem(TOKEN_KEY);
      showAuth(`The daemon refused the token (${message}). Get a fresh link with acpd dashboard.`);
    }
  }

  // --- the list ------------------------------------------------------------------------------

  async refreshList() {
    // Re-read everything shown, in one call (up to the API's cap), so that a conversation
    // pushed down by newer activity cannot fall between the first page and a later one.
    const shown = this.pages.reduce((n, page) => n + (page?.length ?? 0), 0);
    const limit = Math.min(LIST_MAX, Math.max(LIST_PAGE, shown));
    try {
      const r = await this.rpc.call("conversations/list", { limit });
      if (shown <= LIST_MAX) {
        this.pages = [r.conversations];
        this.next = r.next;
      } else {
        this.pages[0] = r.conversations; // past the cap: later pages may be a little stale
      }
      this.total = r.total;
      this.renderList();
    } catch {
      // Offline: the reconnect refreshes the list.
    }
  }

  refreshListSoon() {
    clearTimeout(this.listSoon);
    this.listSoon = setTimeout(() => this.refreshList(), 500);
  }

  async more() {
    if (!this.next) return;
    $("more").disabled = true;
    try {
      const r = await this.rpc.call("conversations/list", { limit: LIST_PAGE, before: this.next });
      this.pages.push(r.conversations);
      this.next = r.next;
      this.total = r.total;
      this.renderList();
    } catch (err) {
      $("list-summary").textContent = err.message;
    } finally {
      $("more").disabled = false;
    }
  }

  renderList() {
    const seen = new Set();
    const order = [];
    for (const page of this.pages) {
      for (const info of page ?? []) {
        if (seen.has(info.id)) continue; // moved up into a fresher page
        seen.add(info.id);
        order.push(info);
      }
    }
    const list = $("list");
    const focused = document.activeElement?.closest?.("#list li")?.dataset.id;
    const sameOrder =
      list.children.length === order.length &&
      order.every((info, i) => list.children[i].dataset.id === info.id);
    for (const info of order) this.updateItem(info, true);
    if (!sameOrder) {
      list.replaceChildren(...order.map((info) => this.items.get(info.id)));
      for (const id of this.items.keys()) if (!seen.has(id)) this.items.delete(id);
      if (focused && this.items.has(focused)) this.items.get(focused).querySelector("button").focus();
    }
    const shown = order.length;
    $("list-summary").textContent =
      this.total === 0 ? "No conversations yet." : `${shown} of ${this.total} conversations`;
    $("more").hidden = !this.next;
  }

  updateItem(info, create = false) {
    let li = this.items.get(info.id);
    if (!li) {
      if (!create) return;
      li = el("li");
      li.dataset.id = info.id;
      const button = el("button", "item");
      button.type = "button";
      button.addEventListener("click", () => this.open(info.id));
      li.append(button);
      this.items.set(info.id, li);
    }
    const button = li.querySelector("button");
    const title = el("span", "item-title", info.title || "Untitled");
    const status = el("span", "badge", info.status);
    status.dataset.status = info.status;
    const meta = el("span", "item-meta muted small");
    const parts = [info.agent, ago(info.updated_at)];
    if (info.queued > 0) parts.push(`${info.queued} queued`);
    meta.textContent = parts.join(" · ");
    const top = el("span", "item-top");
    top.append(title, status);
    button.replaceChildren(top, meta);
    button.setAttribute(
      "aria-label",
      `${info.title || "Untitled"}, ${info.status}${info.queued ? `, ${info.queued} queued` : ""}`,
    );
    const current = info.id === this.conv.id;
    li.classList.toggle("current", current);
    if (current) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }

  // --- opening a conversation ----------------------------------------------------------------

  open(id) {
    history.replaceState(null, "", `${location.pathname}${location.search}#c=${encodeURIComponent(id)}`);
    $("empty").hidden = true;
    $("conv").hidden = false;
    const previous = this.conv.id;
    this.conv.open(id);
    for (const key of [previous, id]) {
      const li = key && this.items.get(key);
      if (li) {
        li.classList.toggle("current", key === id);
        li.querySelector("button").toggleAttribute("aria-current", key === id);
      }
    }
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
      this.pages[0] = [conversation, ...(this.pages[0] ?? [])];
      this.renderList();
      this.open(conversation.id);
      $("input").focus();
      this.refreshList();
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    }
  }

  // --- composer and keys ---------------------------------------------------------------------

  async send(event) {
    event.preventDefault();
    const input = $("input");
    const text = input.value;
    if (!text.trim() || this.conv.id === null) return;
    try {
      await this.conv.send(text);
      input.value = "";
      this.conv.showError("");
      this.conv.scrollToEnd();
    } catch (err) {
      this.conv.showError(err.message); // the text stays in the box
    }
  }

  bind() {
    $("new-toggle").addEventListener("click", () => this.toggleNew($("new-form").hidden));
    $("new-cancel").addEventListener("click", () => this.toggleNew(false));
    $("new-form").addEventListener("submit", (e) => this.create(e));
    $("more").addEventListener("click", () => this.more());
    $("earlier").addEventListener("click", () => this.conv.loadEarlier());
    $("composer").addEventListener("submit", (e) => this.send(e));
    $("interrupt").addEventListener("click", () => this.conv.interrupt());
    $("resume").addEventListener("click", () => this.conv.resumeQueue());
    $("conn").addEventListener("click", () => this.rpc?.reconnectNow());
    $("input").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
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
      this.start(token);
    });
  }
}

function ago(ts) {
  const s = Math.max(0, (Date.now() - new Date(ts).getTime()) / 1000);
  if (!Number.isFinite(s)) return "";
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(ts).toLocaleDateString();
}

function showAuth(message) {
  $("auth").hidden = false;
  const error = $("auth-error");
  error.textContent = message ?? "";
  error.hidden = !message;
  $("auth-token").focus();
}

const app = new App();
const token = takeTokenFromHash();
if (token) app.start(token);
else showAuth();
