// What waits for you: the tab title's count and, once you turn them on, browser notifications.
//
// What waits: permission requests (and questions) open in the conversations listed, and
// conversations whose turn ended or that failed while not on screen, until you open them. The
// title shows their number, e.g. "(2) acpd". A notification says when one appears; browsers
// allow asking for that only after a user gesture, hence the "Notify me" toggle, and only in a
// secure context (HTTPS, or this host's loopback).
//
// The open conversation is followed live (its events); the others through the list's poll: one
// whose last_seq moved has its newest events read (at most PEEK) to tell a turn's end or a
// permission request from other news.

const PREF_KEY = "acpd.notify";
const PEEK = 50;
const BASE_TITLE = "acpd";

export class Watcher {
  /** `rpc()`: the connection; `onScreen(id)`: whether conversation `id` is being looked at;
   *  `open(id)`: show it (a notification was clicked); `changed()`: the counts changed. */
  constructor({ rpc, onScreen, open, changed }) {
    this.rpc = rpc;
    this.onScreen = onScreen;
    this.open = open;
    this.changed = changed;
    this.seen = new Map(); // id -> {last_seq, status, open_requests} as of the last poll
    this.unseen = new Map(); // id -> what happened while it was not on screen
    this.requests = new Map(); // id -> open requests (the daemon's count)
    this.peeking = new Set();
    this.enabled = false;
    this.button = null;
  }

  // --- the toggle -------------------------------------------------------------------------

  get supported() {
    return "Notification" in window && window.isSecureContext;
  }

  bind(button) {
    this.button = button;
    if (this.supported && localStorage.getItem(PREF_KEY) === "on" && Notification.permission === "granted") {
      this.enabled = true;
    }
    button.addEventListener("click", () => this.toggle());
    this.renderButton();
  }

  async toggle() {
    if (!this.supported) return;
    if (this.enabled) {
      this.enabled = false;
      localStorage.removeItem(PREF_KEY);
    } else {
      // Asked here, inside the click: browsers ignore a request made without a user gesture.
      const answer =
        Notification.permission === "default" ? await Notification.requestPermission() : Notification.permission;
      this.enabled = answer === "granted";
      if (this.enabled) localStorage.setItem(PREF_KEY, "on");
    }
    this.renderButton();
  }

  renderButton() {
    const b = this.button;
    if (!b) return;
    b.setAttribute("aria-pressed", String(this.enabled));
    if (!this.supported) {
      b.disabled = true;
      b.textContent = "Notify me";
      b.title = "Notifications need HTTPS (or this computer's own address)";
    } else if (Notification.permission === "denied") {
      b.disabled = true;
      b.textContent = "Notify me";
      b.title = "Notifications are blocked for this page in the browser's settings";
    } else {
      b.disabled = false;
      b.textContent = this.enabled ? "Notifying" : "Notify me";
      b.title = this.enabled
        ? "Notifications on: permission requests, questions, turns that end and failures elsewhere. Click to turn off."
        : "Get a notification when a permission request or a question waits, a turn ends elsewhere, or a conversation fails";
    }
  }

  // --- what happened ----------------------------------------------------------------------

  /** The list's poll: conversations as the daemon has them now (`current`: the open one, whose
   *  events come live). The first sight of a conversation only sets the baseline. */
  observe(conversations, current) {
    for (const info of conversations) {
      const before = this.seen.get(info.id);
      this.seen.set(info.id, { last_seq: info.last_seq, status: info.status });
      this.requests.set(info.id, info.open_requests ?? 0);
      if (before === undefined) continue;
      if (info.status === "failed" && before.status !== "failed") {
        this.happened(info, "failed", "The conversation failed; open it to see why.");
      }
      if (info.id !== current && info.last_seq > before.last_seq) {
        this.peek(info, Math.max(before.last_seq, info.last_seq - PEEK));
      }
    }
    this.update();
  }

  /** Forget conversations that are gone from the list. */
  keepOnly(ids) {
    for (const map of [this.seen, this.unseen, this.requests]) {
      for (const id of map.keys()) if (!ids.has(id)) map.delete(id);
    }
    this.update();
  }

  async peek(info, after) {
    if (this.peeking.has(info.id)) return;
    this.peeking.add(info.id);
    try {
      const { events } = await this.rpc().call("conversations/events", {
        id: info.id,
        after_seq: after,
        limit: PEEK,
      });
      for (const event of events) this.event(info, event);
    } catch {
      // Offline or deleted: the next poll looks again, or not.
    } finally {
      this.peeking.delete(info.id);
    }
  }

  /** One event of conversation `info` (live for the open one, peeked for the others). */
  event(info, event) {
    if (event.type === "permission_requested" || event.type === "elicitation_requested") {
      const what = event.title || event.message || "";
      this.happened(info, "asks", what ? `Asks: ${what}` : "A question waits for your answer.");
    } else if (event.type === "turn_ended") {
      const how = event.stop_reason === "end_turn" ? "Turn ended." : `Turn ended: ${event.stop_reason.replaceAll("_", " ")}.`;
      this.happened(info, "turn", how);
    }
  }

  happened(info, kind, body) {
    if (this.onScreen(info.id)) return;
    if (kind !== "asks") this.unseen.set(info.id, kind);
    this.update();
    if (!this.enabled || Notification.permission !== "granted") return;
    const title = `${info.title || "Untitled"}: ${kind === "asks" ? "waiting for you" : kind === "failed" ? "failed" : "done"}`;
    show(title, { body, tag: `acpd-${info.id}-${kind}`, data: { id: info.id } }, () => {
      window.focus();
      this.open(info.id);
    });
  }

  /** Conversation `id` is on screen now: its news is seen. */
  looked(id) {
    if (this.unseen.delete(id)) this.update();
  }

  setRequests(id, n) {
    if ((this.requests.get(id) ?? 0) === n) return;
    this.requests.set(id, n);
    this.update();
  }

  /** How many things wait: open requests, and conversations with unseen news. */
  get count() {
    let n = this.unseen.size;
    for (const k of this.requests.values()) n += k;
    return n;
  }

  update() {
    const n = this.count;
    const title = n > 0 ? `(${n}) ${BASE_TITLE}` : BASE_TITLE;
    if (document.title !== title) document.title = title;
    this.changed?.();
  }
}

/** A notification, by the page's constructor where there is one; Android's Chrome has none
 *  for pages (it throws) and wants a service worker's `showNotification` instead. */
function show(title, options, onClick) {
  try {
    const n = new Notification(title, options);
    n.onclick = onClick;
    return;
  } catch {
    // below
  }
  navigator.serviceWorker
    ?.register("/sw.js")
    .then(() => navigator.serviceWorker.ready)
    .then((reg) => reg.showNotification(title, options))
    .catch(() => {});
}
