// One open conversation: its history (paged backwards), the live turn, the queue, the actions.
//
// Stored events are shown in seq order, each seq once: history pages are prepended, the
// subscription appends, and anything at or below the last seq seen is a duplicate (a replay
// after reconnect or lag). What each event shows as is the timeline's (timeline.js).
//
// Permission and question cards still open are checked against the conversation's open
// requests (`conversations/get`) at each load, page and refresh: one whose request is over with
// no answer recorded (answered elsewhere with the answer on its way, or its agent died, the turn
// was cancelled, the daemon restarted) stops offering its buttons and says "no longer open"; a
// recorded answer, when it comes, says how it ended.

import { QueuePanel } from "./queue.js";
import { SessionBar, SessionState } from "./session.js";
import { Timeline } from "./timeline.js";

const PAGE = 100;

/** A conversation's status as shown: `waiting #2` while second in line for an agent slot. */
export function statusText(info) {
  return info.status === "waiting" && info.slot_position ? `waiting #${info.slot_position}` : info.status;
}

/** The same for a screen reader. */
export function statusWords(info) {
  return info.status === "waiting" && info.slot_position
    ? `waiting for an agent, number ${info.slot_position} in line`
    : info.status;
}

export class ConversationView {
  constructor(rpc, dom, { onInfo, onEvent, onSession }) {
    this.rpc = rpc;
    this.dom = dom;
    this.onSession = onSession; // () => void: the session's state changed (commands, modes...)
    this.onInfo = onInfo; // (conversation info) => void: keeps the list in step
    this.onEvent = onEvent; // (id, event) => void: each event streamed live, for notifications
    this.id = null;
    this.gen = 0; // bumped on every load: late answers for an old view are dropped
    this.failed = false; // the last load failed: choosing the conversation again retries
    this.subChanges = Promise.resolve(); // subscription changes, one after the other
    this.subscribedTo = null; // the conversation the daemon streams to us, if any
    this.streamingGen = -1; // the view (gen) whose subscribe was answered
    this.refreshTimer = null;
    this.stick = true; // follow the end of the timeline until the reader scrolls up
    this.session = new SessionState(); // modes, config options, commands, usage
    this.timeline = new Timeline(dom, {
      agent: () => (this.info ? this.info.agent : "agent"),
      leftQueue: (seq) => this.queue.drop(seq),
      respondPermission: (request, option) =>
        this.rpc.call("permissions/respond", { id: this.id, request, option }),
      respondQuestion: (request, action, content) =>
        this.rpc.call("elicitations/respond", { id: this.id, request, action, content }),
      showError: (message) => this.showError(message),
      session: () => this.session.value,
    });
    this.sessionBar = new SessionBar(dom.session, {
      act: (method, params) => this.setSession(method, params),
      onError: (message) => this.showError(message),
    });
    dom.timeline.addEventListener("scroll", () => {
      this.stick = this.atEnd();
    });
    // The queue panel or the window changing size must not unstick the reader either.
    new ResizeObserver(() => {
      if (this.stick) this.scrollToEnd();
    }).observe(dom.timeline);
    this.queue = new QueuePanel(() => this.rpc, dom.queueList, {
      conversation: () => this.id,
      onChange: () => this.renderQueueTitle(),
      showError: (message) => this.showError(message),
    });
    this.reset();
    setInterval(() => this.timeline.tick(), 1000);
  }

  reset() {
    this.info = null;
    this.session.reset();
    this.sessionBar.render(null);
    this.lastSeq = 0; // highest event seq shown
    this.loadedFrom = 0; // every event with seq > loadedFrom is shown (or on its way)
    this.timeline.reset();
    this.queue.clear();
    this.dom.queue.hidden = true;
    this.dom.earlier.hidden = true;
    this.showError("");
  }

  // --- opening, subscribing ---------------------------------------------------------------
  //
  // At most one subscription per conversation on the connection: deltas carry no seq, so a
  // second one would show every streamed chunk twice. Subscription changes run one at a time,
  // in order (`serial`), each waiting for the daemon's answer, since the daemon runs one
  // connection's requests concurrently; and notifications count only once the current view's
  // subscribe has been answered (`streamingGen`): stragglers of an earlier one are ignored.

  /** Show conversation `id`. Choosing the one already shown does nothing. */
  open(id) {
    if (id === this.id && !this.failed) return Promise.resolve();
    return this.load(id);
  }

  async load(id) {
    const previous = this.subscribedTo;
    const gen = ++this.gen;
    this.id = id;
    this.failed = false;
    this.reset();
    if (previous !== null && previous !== id) this.serial(() => this.unsubscribe());
    try {
      const { conversation } = await this.rpc.call("conversations/get", { id });
      if (gen !== this.gen) return;
      this.setInfo(conversation);
      const after = Math.max(0, conversation.last_seq - PAGE);
      const page = await this.rpc.call("conversations/events", {
        id,
        after_seq: after,
        limit: PAGE,
      });
      if (gen !== this.gen) return;
      this.loadedFrom = after;
      this.dom.earlier.hidden = after === 0;
      this.lastSeq = after;
      for (const event of page.events) this.addEvent(event, { history: true });
      this.timeline.settleGone(conversation);
      await this.fillAnchors(gen);
      this.scrollToEnd();
      await this.subscribe(gen);
      await this.refreshQueue();
    } catch (err) {
      if (gen === this.gen) {
        this.failed = true;
        this.showError(err.message);
      }
    }
  }

  /** Run `change` once every subscription change queued before it is done. */
  serial(change) {
    const done = this.subChanges.then(change);
    this.subChanges = done.catch(() => {});
    return done;
  }

  async unsubscribe() {
    const id = this.subscribedTo;
    this.subscribedTo = null;
    this.streamingGen = -1;
    // Idempotent: a no-op for a subscription the daemon dropped (lagged) or never had (a new
    // connection).
    if (id !== null) await this.rpc.call("conversations/unsubscribe", { id }).catch(() => {});
  }

  /** Subscribe from the last seq shown: the daemon replays what we missed, then goes live. */
  subscribe(gen = this.gen) {
    return this.serial(async () => {
      if (this.id === null || gen !== this.gen) return;
      await this.unsubscribe(); // never two at once, whatever came before
      this.timeline.clearLive(); // deltas missed meanwhile cannot be recovered; the stored event will come
      try {
        this.subscribedTo = this.id;
        await this.rpc.call("conversations/subscribe", {
          id: this.id,
          after_seq: this.lastSeq,
          deltas: true,
        });
        if (gen === this.gen) this.streamingGen = gen; // the replay follows this answer
      } catch (err) {
        if (gen === this.gen) this.showError(err.message);
      }
    });
  }

  /** After a reconnect: catch up from where we were. */
  async resume() {
    if (this.id === null) return;
    if (this.info === null || this.failed) return this.load(this.id);
    this.subscribedTo = null; // that subscription ended with the old connection
    await this.subscribe();
    this.refreshSoon(0);
  }

  /** Turns on the first page whose message is older than the page (it waited in the queue
   *  meanwhile): fetch those messages, so each turn shows what started it. */
  async fillAnchors(gen) {
    for (const seq of this.timeline.missingMessages(this.loadedFrom, 20)) {
      const page = await this.rpc.call("conversations/events", {
        id: this.id,
        after_seq: seq - 1,
        limit: 1,
      });
      if (gen !== this.gen) return;
      const event = page.events.find((e) => e.seq === seq);
      if (event) this.timeline.render(event, true);
    }
  }

  async loadEarlier() {
    const id = this.id;
    const gen = this.gen;
    const upto = this.loadedFrom;
    const from = Math.max(0, upto - PAGE);
    this.dom.earlier.disabled = true;
    try {
      // A page may stop early (the daemon bounds its bytes): read on to `upto`.
      const events = [];
      for (let after = from; after < upto; ) {
        const page = await this.rpc.call("conversations/events", {
          id,
          after_seq: after,
          limit: upto - after,
        });
        if (gen !== this.gen) return;
        const got = page.events.filter((event) => event.seq > after && event.seq <= upto);
        if (got.length === 0) break;
        events.push(...got);
        after = got[got.length - 1].seq;
      }
      const timeline = this.dom.timeline;
      const before = timeline.scrollHeight;
      const frag = document.createDocumentFragment();
      for (const event of events) {
        const node = this.timeline.render(event, true);
        if (node) frag.append(node);
      }
      this.dom.events.prepend(frag);
      if (this.info) this.timeline.settleGone(this.info);
      this.loadedFrom = from;
      this.dom.earlier.hidden = from === 0;
      timeline.scrollTop += timeline.scrollHeight - before; // keep the reader's place
    } catch (err) {
      this.showError(err.message);
    } finally {
      this.dom.earlier.disabled = false;
    }
  }

  // --- notifications ----------------------------------------------------------------------

  notify(method, params) {
    if (this.id === null || params.id !== this.id || this.streamingGen !== this.gen) return false;
    if (method === "conversation/event") {
      this.addEvent(params.event);
      if (this.stick) this.scrollToEnd();
    } else if (method === "conversation/delta") {
      this.timeline.addDelta(params);
      if (this.stick) this.scrollToEnd();
    } else if (method === "conversation/lagged") {
      // Dropped for falling behind: pick up again from the last event we were given.
      this.lastSeq = Math.min(this.lastSeq, params.last_seq);
      this.subscribe();
    }
    return method === "conversation/event";
  }

  addEvent(event, { history = false } = {}) {
    if (event.seq <= this.lastSeq) return; // seen already: a replay overlapping what we have
    this.lastSeq = event.seq;
    const node = this.timeline.render(event, false);
    if (node) this.dom.events.append(node);
    if (!history) this.onEvent?.(this.id, event, this.info);
    if (this.session.fromEvent(event)) {
      this.sessionBar.render(this.session.value);
      this.onSession?.();
    }
    const refreshing = ["user_message", "turn_started", "turn_ended", "agent_restarted", "error",
      "permission_requested", "permission_resolved", "elicitation_requested", "elicitation_resolved",
      "user_message_edited", "user_message_steered", "user_message_removed", "queue_reordered",
      "title"];
    if (refreshing.includes(event.type)) {
      this.refreshSoon();
    }
  }

  // --- head, queue, actions ---------------------------------------------------------------

  setInfo(info) {
    this.info = info;
    this.timeline.settleGone(info);
    const d = this.dom;
    d.title.textContent = info.title || "Untitled";
    d.meta.textContent = `${info.agent} · ${info.cwd} · ${info.id}`;
    d.status.textContent = statusText(info);
    d.status.dataset.status = info.status;
    d.status.setAttribute("aria-label", statusWords(info));
    // Waiting for an agent (or starting one) counts too: the turn about to run is stopped.
    d.interrupt.disabled = !["running", "waiting", "starting"].includes(info.status);
    d.steer.disabled = info.status !== "running"; // a steer joins a turn that runs
    const held = info.status === "paused" || info.status === "failed";
    d.resume.disabled = !held;
    d.resume.classList.toggle("primary", held); // the way on, once the queue is held
    d.queue.classList.toggle("paused", held);
    this.session.fromInfo(info);
    this.sessionBar.render(this.session.value);
    this.onSession?.();
    this.renderQueueTitle();
    this.onInfo(info);
  }

  /** `conversations/set_mode` or `set_option` ({mode} or {option, value}): the conversation
   *  it answers with is shown; an agent's refusal is thrown (the bar shows it). */
  async setSession(method, params) {
    const gen = this.gen;
    const { conversation } = await this.rpc.call(method, { id: this.id, ...params });
    if (gen === this.gen) this.setInfo(conversation);
  }

  /** What the queue does next, in words: after an interrupt it is paused, and a message sent
   *  from here resumes it (the queued messages run in order, then the new one). */
  renderQueueTitle() {
    const d = this.dom;
    const status = this.info?.status;
    const n = this.queue.size;
    const queued = `${n} queued`;
    let text;
    if (status === "paused") {
      const what = this.timeline.lastStop === "cancelled" ? "Interrupted. The queue is paused" : "The queue is paused";
      text = n > 0 ? `${what}: Resume, or send a message, to run the ${queued}.`
        : `${what}. Nothing is queued: a message you send runs at once.`;
    } else if (status === "failed") {
      text = n > 0 ? `The agent failed. Resume, or send a message, to try again: the ${queued} run first.`
        : "The agent failed. Resume, or send a message, to try again.";
    } else if (status === "waiting") {
      const place = this.info.slot_position ? ` (number ${this.info.slot_position} in line)` : "";
      text = `Waiting for an agent${place}: every agent slot is busy. The next one freed is ours.`;
    } else {
      text = n > 0 ? `Queued (${n}): each runs when the turn before it ends.` : "";
    }
    if (d.queueTitle.textContent !== text) d.queueTitle.textContent = text;
    d.queue.hidden = text === "";
    d.input.placeholder =
      (status === "paused" || status === "failed") && n > 0
        ? `Message (sending resumes the queue: the ${queued} run first, then yours)`
        : status === "running"
          ? "Message (queued until the turn ends; Ctrl+Enter steers it into the turn; Esc interrupts)"
          : "Message (Enter sends, Shift+Enter for a new line, Esc interrupts)";
  }

  refreshSoon(delay = 150) {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(() => this.refresh(), delay);
  }

  async refresh() {
    if (this.id === null) return;
    const gen = this.gen;
    try {
      const { conversation } = await this.rpc.call("conversations/get", { id: this.id });
      if (gen !== this.gen) return;
      this.setInfo(conversation);
      await this.refreshQueue();
    } catch {
      // Offline or deleted: the next tick or reconnect tries again.
    }
  }

  refreshQueue() {
    return this.queue.refresh();
  }

  /** Send `text`; with `steer`, into the running turn if the agent takes it. */
  async send(text, { steer = false } = {}) {
    const params = steer ? { id: this.id, text, steer: true } : { id: this.id, text };
    const result = await this.rpc.call("messages/send", params);
    const { seq, queued, number, steered } = result;
    const started = this.timeline.shown(seq);
    if (steer && !steered) {
      this.showNote(queued > 0
        ? "The agent did not take it into the running turn: it is next in line."
        : "No turn was running to steer: it was sent as a message.");
    }
    if (queued > 0 && !started && !steered) {
      this.queue.add(seq, text, number); // shown in the queue at once; the refresh confirms it
    }
    this.refreshSoon(0);
    return result;
  }

  async interrupt() {
    if (this.id === null) return;
    try {
      await this.rpc.call("turns/interrupt", { id: this.id });
    } catch (err) {
      this.showError(err.message);
    }
    this.refreshSoon(0);
  }

  async resumeQueue() {
    try {
      await this.rpc.call("conversations/resume", { id: this.id });
    } catch (err) {
      this.showError(err.message);
    }
    this.refreshSoon(0);
  }

  // --- bits -------------------------------------------------------------------------------

  showError(message) {
    this.dom.error.textContent = message;
    this.dom.error.hidden = !message;
    this.dom.error.classList.remove("note");
  }

  /** A line for the reader that is not an error (the same place, quieter). */
  showNote(message) {
    this.showError(message);
    this.dom.error.classList.add("note");
  }

  atEnd() {
    const t = this.dom.timeline;
    return t.scrollHeight - t.scrollTop - t.clientHeight < 48;
  }

  scrollToEnd() {
    const t = this.dom.timeline;
    t.scrollTop = t.scrollHeight;
    this.stick = true;
  }
}
