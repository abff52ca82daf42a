// The conversation list: what it holds, how it is polled and paged, and its items.
//
// Only the first page is polled (one indexed read of 50 rows, however many are stored; the
// total is a counter). What it covers replaces what we had there; a conversation we had in
// that range that is no longer in it was deleted. Below it, pages read with "More" stay as
// read, except that a conversation moves up as soon as it shows up in the first page again.

import { statusText, statusWords } from "./conversation.js";
import { el } from "./dom.js";

const LIST_PAGE = 50;

export class ConversationList {
  /** `dom`: {list, summary, more}. `rpc()` the connection (or null), `watcher` what waits
   *  and what is new, `current()` the id of the conversation on screen (or null), `open(id)`
   *  when an item is chosen. */
  constructor(dom, { rpc, watcher, current, open }) {
    this.dom = dom;
    this.rpc = rpc;
    this.watcher = watcher;
    this.current = current;
    this.open = open;
    this.known = new Map(); // id -> conversation info, as last read
    this.next = null; // cursor for the page after the last one read
    this.morePages = false; // pages past the first were read ("More")
    this.total = 0;
    this.items = new Map(); // id -> <li>
    this.busy = false;
    this.soon = null;
    this.bind();
  }

  async refresh() {
    const rpc = this.rpc();
    if (this.busy || rpc?.state !== "open") return;
    this.busy = true;
    try {
      const r = await rpc.call("conversations/list", { limit: LIST_PAGE });
      this.total = r.total;
      const fresh = r.conversations;
      if (!this.morePages || r.next === null) {
        this.known = new Map(fresh.map((c) => [c.id, c]));
        this.next = r.next;
        this.morePages = false;
      } else {
        const ids = new Set(fresh.map((c) => c.id));
        const last = fresh[fresh.length - 1];
        for (const [id, info] of this.known) {
          if (!ids.has(id) && !newer(last, info)) this.known.delete(id);
        }
        for (const info of fresh) this.known.set(info.id, info);
      }
      this.watcher.observe(fresh, this.current());
      this.watcher.keepOnly(new Set(this.known.keys()));
      this.render();
    } catch {
      // Offline: the reconnect refreshes the list.
    } finally {
      this.busy = false;
    }
  }

  refreshSoon() {
    clearTimeout(this.soon);
    this.soon = setTimeout(() => this.refresh(), 300);
  }

  /** Take `info` (e.g. from conversations/get) unless what we have is newer. */
  learn(info) {
    this.watcher.setRequests(info.id, info.open_requests ?? 0);
    const had = this.known.get(info.id);
    if (had === undefined || newer(had, info)) return;
    this.known.set(info.id, info);
    this.render();
  }

  /** A conversation this page just created: listed at once, before the next poll. */
  add(info) {
    this.known.set(info.id, info);
    this.total += 1;
    this.render();
  }

  /** Focus the item of conversation `id`, if it is listed. */
  focus(id) {
    this.items.get(id)?.querySelector("button")?.focus();
  }

  async more() {
    if (!this.next) return;
    this.dom.more.disabled = true;
    try {
      const r = await this.rpc().call("conversations/list", { limit: LIST_PAGE, before: this.next });
      for (const info of r.conversations) {
        const had = this.known.get(info.id);
        if (had === undefined || !newer(had, info)) this.known.set(info.id, info);
      }
      this.next = r.next;
      this.morePages = true;
      this.total = r.total;
      this.render();
    } catch (err) {
      this.dom.summary.textContent = err.message;
    } finally {
      this.dom.more.disabled = false;
    }
  }

  render() {
    const order = [...this.known.values()].sort((a, b) => (newer(a, b) ? -1 : newer(b, a) ? 1 : 0));
    const list = this.dom.list;
    const focused = document.activeElement?.closest?.("#list li")?.dataset.id;
    for (const info of order) this.renderItem(info);
    const sameOrder =
      list.children.length === order.length &&
      order.every((info, i) => list.children[i].dataset.id === info.id);
    if (!sameOrder) {
      list.replaceChildren(...order.map((info) => this.items.get(info.id)));
      for (const id of this.items.keys()) if (!this.known.has(id)) this.items.delete(id);
      if (focused && this.items.has(focused)) this.items.get(focused).querySelector("button").focus();
    }
    const shown = order.length;
    const summary =
      this.total === 0
        ? "No conversations yet."
        : shown >= this.total
          ? `${this.total} conversation${this.total === 1 ? "" : "s"}`
          : `${shown} of ${this.total} conversations`;
    if (this.dom.summary.textContent !== summary) this.dom.summary.textContent = summary;
    this.dom.more.hidden = !this.next;
  }

  renderItem(info) {
    let li = this.items.get(info.id);
    if (!li) {
      li = el("li");
      li.dataset.id = info.id;
      const button = el("button", "item");
      button.type = "button";
      button.addEventListener("click", () => this.open(info.id));
      li.append(button);
      this.items.set(info.id, li);
    }
    const current = info.id === this.current();
    const when = ago(info.updated_at);
    const asks = this.watcher.requests.get(info.id) ?? info.open_requests ?? 0;
    const news = this.watcher.unseen.get(info.id);
    // Rebuilt only when something shown changed: polling must not churn the DOM (or a screen
    // reader) every few seconds.
    const signature = JSON.stringify([info.title, info.status, info.slot_position, info.agent, info.queued, when,
      current, asks, news]);
    if (li.dataset.signature === signature) return;
    li.dataset.signature = signature;
    const button = li.querySelector("button");
    const title = el("span", "item-title", info.title || "Untitled");
    const status = el("span", "badge", statusText(info));
    status.dataset.status = info.status;
    const meta = el("span", "item-meta muted small");
    const parts = [info.agent, when];
    if (info.queued > 0) parts.push(`${info.queued} queued`);
    meta.textContent = parts.join(" · ");
    const top = el("span", "item-top");
    top.append(title);
    if (asks > 0) top.append(el("span", "badge asks", asks === 1 ? "waits for you" : `${asks} wait for you`));
    if (news) top.append(el("span", "news", "●"));
    top.append(status);
    button.replaceChildren(top, meta);
    const flags = [asks > 0 ? `${asks} waiting for you` : "", news ? "new" : ""].filter(Boolean);
    button.setAttribute(
      "aria-label",
      [info.title || "Untitled", statusWords(info), ...(info.queued ? [`${info.queued} queued`] : []), ...flags, when]
        .join(", "),
    );
    li.classList.toggle("current", current);
    if (current) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }

  bind() {
    this.dom.more.addEventListener("click", () => this.more());
    // Arrow keys, Home and End move through the list; Enter or Space opens.
    this.dom.list.addEventListener("keydown", (e) => {
      const buttons = [...this.dom.list.querySelectorAll("button.item")];
      const i = buttons.indexOf(document.activeElement);
      const to = { ArrowDown: i + 1, ArrowUp: i - 1, Home: 0, End: buttons.length - 1 }[e.key];
      if (i < 0 || to === undefined) return;
      e.preventDefault();
      buttons[Math.max(0, Math.min(buttons.length - 1, to))].focus();
    });
  }
}

/** Whether `a` sorts before `b` in the list: newer activity first, then the larger id (the
 *  daemon's order; RFC 3339 UTC with milliseconds sorts as text). */
function newer(a, b) {
  return a.updated_at > b.updated_at || (a.updated_at === b.updated_at && a.id > b.id);
}

function ago(ts) {
  const s = Math.max(0, (Date.now() - new Date(ts).getTime()) / 1000);
  if (!Number.isFinite(s)) return "";
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(ts).toLocaleDateString();
}
