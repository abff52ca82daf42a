// One open conversation: its history (paged backwards), the live turn, the queue, the actions.
//
// Stored events are shown in seq order, each seq once: history pages are prepended, the
// subscription appends, and anything at or below the last seq seen is a duplicate (a replay
// after reconnect or lag). One exception, so that a queued message never shows above the reply
// of the turn that runs: a user message is shown where its turn starts (`turn_started`), and
// until then only in the queue panel. Deltas stream into "live" blocks below the events; the
// stored agent_message / agent_thought that completes a block replaces it, so each message
// shows once. All agent text goes through textContent, never innerHTML. A steer the agent took
// shows where it was taken (`user_message_steered`): it has no turn of its own.

import { QueuePanel } from "./queue.js";

import { Questions } from "./questions.js";
import { SessionBar, SessionState } from "./session.js";
import { ToolCalls } from "./tools.js";

const PAGE = 100;

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

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

export function clockTime(ts) {
  const d = new Date(ts);
  return Number.isNaN(d.getTime())
    ? ""
    : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function countdown(ms) {
  if (ms <= 0) return "deadline passed";
  const s = Math.ceil(ms / 1000);
  const m = Math.floor(s / 60);
  return `default answer in ${m}:${String(s % 60).padStart(2, "0")}`;
}

const PLAN_MARK = { pending: "○", in_progress: "◐", completed: "●" };

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
    this.toolCalls = new ToolCalls();
    this.questions = new Questions({
      respond: (request, action, content) =>
        this.rpc.call("elicitations/respond", { id: this.id, request, action, content }),
    });
    this.session = new SessionState(); // modes, config options, commands, usage
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
    setInterval(() => this.tickDeadlines(), 1000);
  }

  reset() {
    this.info = null;
    this.session.reset();
    this.sessionBar.render(null);
    this.lastSeq = 0; // highest event seq shown
    this.loadedFrom = 0; // every event with seq > loadedFrom is shown (or on its way)
    this.users = new Map(); // seq -> user message <li>
    this.held = new Map(); // seq -> user message <li> whose turn has not started: not shown
    this.anchors = new Map(); // prompt_seq -> hidden <li> where a turn started, its message unseen
    this.toolCalls.reset();
    this.questions.reset();
    this.plans = new Map(); // prompt_seq -> <li>
    this.permissions = new Map(); // request -> {li, event}
    this.resolved = new Map(); // request -> permission_resolved event
    this.lastStop = null; // stop reason of the latest turn shown: was it interrupted?
    this.live = {}; // kind -> {block, body, promptSeq}
    this.dom.events.replaceChildren();
    this.dom.live.replaceChildren();
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
      this.clearLive(); // deltas missed meanwhile cannot be recovered; the stored event will come
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
    const missing = [...this.anchors.keys()].filter((seq) => seq <= this.loadedFrom).slice(0, 20);
    for (const seq of missing) {
      const page = await this.rpc.call("conversations/events", {
        id: this.id,
        after_seq: seq - 1,
        limit: 1,
      });
      if (gen !== this.gen) return;
      const event = page.events.find((e) => e.seq === seq);
      if (event) this.render(event, true);
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
        const node = this.render(event, true);
        if (node) frag.append(node);
      }
      this.dom.events.prepend(frag);
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
      this.addDelta(params);
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
    const node = this.render(event, false);
    if (node) this.dom.events.append(node);
    if (!history) this.onEvent?.(this.id, event, this.info);
    if (this.session.fromEvent(event)) {
      this.sessionBar.render(this.session.value);
      this.onSession?.();
    }
    const refreshing = ["user_message", "turn_started", "turn_ended", "agent_restarted", "error",
      "permission_requested", "permission_resolved", "elicitation_requested", "elicitation_resolved",
      "user_message_edited", "user_message_steered", "queue_reordered", "title"];
    if (refreshing.includes(event.type)) {
      this.refreshSoon();
    }
  }

  addDelta({ prompt_seq: promptSeq, kind, text }) {
    let live = this.live[kind];
    if (live === undefined || live.promptSeq !== promptSeq) {
      this.clearLive(kind);
      live = this.live[kind] = this.liveBlock(kind, promptSeq);
      this.dom.live.append(live.block);
    }
    live.body.append(document.createTextNode(text)); // appending: no O(n²) re-render
  }

  liveBlock(kind, promptSeq) {
    if (kind === "thought") {
      const block = el("details", "thought streaming");
      block.open = true;
      block.append(el("summary", "", "Thinking…"));
      const body = el("div", "text");
      block.append(body);
      return { block, body, promptSeq };
    }
    if (kind === "tool") {
      const block = el("details", "tool-output streaming");
      block.append(el("summary", "", "Tool output"));
      const body = el("pre", "text");
      block.append(body);
      return { block, body, promptSeq };
    }
    const block = el("div", "msg agent streaming");
    block.append(el("div", "who", this.info ? this.info.agent : "agent"));
    const body = el("div", "text");
    block.append(body);
    return { block, body, promptSeq };
  }

  clearLive(kind) {
    for (const k of kind === undefined ? Object.keys(this.live) : [kind]) {
      this.live[k]?.block.remove();
      delete this.live[k];
    }
  }

  // --- rendering stored events ------------------------------------------------------------

  /** The <li> for `event`, or null when it only updates something shown already. */
  render(event, older) {
    switch (event.type) {
      case "user_message":
        return this.renderUser(event);
      case "turn_started":
        return this.placeUser(event.prompt_seq);
      case "user_message_steered":
        return this.placeSteered(event);
      case "user_message_edited":
        return this.renderEdited(event);
      case "queue_reordered":
        return null; // the queue panel reads the new order
      case "agent_message":
        if (!older) this.clearLive("message");
        return this.renderText(event, "msg agent", this.info ? this.info.agent : "agent");
      case "agent_thought": {
        if (!older) this.clearLive("thought");
        const li = el("li", "thought");
        li.dataset.seq = event.seq;
        const details = el("details");
        details.append(el("summary", "", "Thought"), el("div", "text", event.text));
        li.append(details);
        return li;
      }
      case "tool_call":
      case "tool_call_update": {
        const node = this.toolCalls.render(event, older);
        // The stored output replaces the streamed one.
        const output = Array.isArray(event.content) && this.toolCalls.hasOutput(event.tool_call_id);
        if (!older && output) this.clearLive("tool");
        return node;
      }
      case "usage":
      case "commands":
      case "mode":
      case "config_options":
      case "title":
        return null; // the session's state: the conversation's own fields say it
      case "plan":
        return this.renderPlan(event, older);
      case "permission_requested":
        return this.renderPermission(event);
      case "permission_resolved":
        return this.renderResolved(event, older);
      case "elicitation_requested":
        return this.questions.render(event);
      case "elicitation_resolved":
        return this.questions.resolve(event, older);
      case "turn_ended": {
        if (!older) {
          this.clearLive();
          this.lastStop = event.stop_reason;
        }
        const ok = event.stop_reason === "end_turn";
        const li = el("li", ok ? "meta" : "meta warn");
        let text = ok ? "turn ended" : `turn ended: ${event.stop_reason.replaceAll("_", " ")}`;
        if (event.detail) text += ` (${event.detail})`;
        li.append(el("span", "", text), el("time", "ts", clockTime(event.ts)));
        return li;
      }
      case "agent_restarted": {
        const how = event.session_loaded ? "session restored" : "new session";
        const why = String(event.reason ?? "").replaceAll("_", " ");
        return el("li", "meta warn", `agent restarted: ${why} (${how})`);
      }
      case "error": {
        const li = el("li", "error-event");
        li.append(el("div", "", event.message));
        const more = event.detail ?? event.stderr; // the agent's own words, or its stderr
        if (more) {
          const details = el("details");
          details.append(el("summary", "", "details"), el("pre", "text", more));
          li.append(details);
        }
        return li;
      }
      default:
        return el("li", "meta", event.type);
    }
  }

  renderText(event, className, who) {
    const li = el("li", className);
    li.dataset.seq = event.seq;
    const head = el("div", "who");
    head.append(el("span", "", who), el("time", "ts", clockTime(event.ts)));
    li.append(head, el("div", "text", event.text));
    if (event.partial) li.append(el("div", "note", "recovered after a crash; may be incomplete"));
    return li;
  }

  /** A user message is held until its turn starts: a queued one must not show above the
   *  reply of the turn that runs (the queue panel shows it meanwhile). */
  renderUser(event) {
    const li = this.renderText(event, "msg user", "you");
    this.users.set(event.seq, li);
    const anchor = this.anchors.get(event.seq);
    if (anchor) {
      // Its turn is shown already (an earlier page, read later): the message goes there.
      this.anchors.delete(event.seq);
      anchor.replaceWith(li);
    } else {
      this.held.set(event.seq, li);
    }
    return null;
  }

  /** Where the turn of message `seq` starts: the message, or a hidden anchor for it. */
  placeUser(seq) {
    const li = this.held.get(seq);
    if (li) {
      this.held.delete(seq);
      return li;
    }
    if (this.users.has(seq) || this.anchors.has(seq)) return null;
    const anchor = el("li", "anchor");
    anchor.hidden = true;
    this.anchors.set(seq, anchor);
    return anchor;
  }

  /** A steer the agent took: shown now, inside the turn it went into. */
  placeSteered(event) {
    const li = this.held.get(event.message_seq);
    if (li) this.held.delete(event.message_seq);
    this.queue.drop(event.message_seq);
    const note = el("div", "note", "steered into the running turn");
    if (!li) {
      // Its message is on an earlier page (or was never loaded): say what happened.
      const meta = el("li", "meta", "a message was steered into the running turn");
      meta.dataset.seq = event.seq;
      return meta;
    }
    li.classList.add("steered");
    li.append(note);
    return li;
  }

  /** A queued message edited: it will show (where its turn starts) with its new text. */
  renderEdited(event) {
    const li = this.users.get(event.message_seq);
    if (li) {
      li.querySelector(".text").textContent = event.text;
      if (!li.querySelector(".note.edited")) li.append(el("div", "note edited", "edited"));
    }
    return null;
  }

  renderPlan(event, older) {
    const known = this.plans.get(event.prompt_seq);
    if (known && older) return null;
    const li = known ?? el("li", "plan");
    li.replaceChildren(el("div", "who", "plan"));
    const list = el("ol");
    for (const entry of event.entries) {
      const item = el("li");
      item.dataset.status = entry.status ?? "pending";
      const mark = el("span", "mark", PLAN_MARK[entry.status] ?? "○");
      mark.setAttribute("aria-hidden", "true");
      item.append(mark, el("span", "", entry.content ?? JSON.stringify(entry)));
      list.append(item);
    }
    li.append(list);
    this.plans.set(event.prompt_seq, li);
    return known ? null : li;
  }

  renderPermission(event) {
    const li = el("li", "permission");
    li.dataset.request = event.request;
    li.append(el("div", "who", "permission requested"), el("div", "title", event.title));
    const actions = el("div", "row actions");
    for (const option of event.options) {
      const button = el("button", option.kind.startsWith("allow") ? "allow" : "reject", option.name);
      button.type = "button";
      button.setAttribute("aria-label", `${option.name}: ${event.title}`);
      button.addEventListener("click", () => this.answer(event.request, option.option_id, li));
      actions.append(button);
    }
    const deadline = el("div", "deadline small");
    li.append(actions, deadline);
    const entry = { li, event, deadline, actions };
    this.permissions.set(event.request, entry);
    const resolved = this.resolved.get(event.request);
    if (resolved) this.settle(entry, resolved);
    else this.tickDeadlines();
    return li;
  }

  renderResolved(event, older) {
    this.resolved.set(event.request, event);
    const entry = this.permissions.get(event.request);
    if (entry) {
      this.settle(entry, event);
      return null;
    }
    return older ? null : el("li", "meta", `permission ${event.request}: ${event.outcome}`);
  }

  settle(entry, resolved) {
    entry.li.classList.add("settled");
    entry.actions.remove();
    const option = entry.event.options.find((o) => o.option_id === resolved.option);
    const what = resolved.outcome === "selected" && option ? option.name : resolved.outcome;
    entry.deadline.textContent = `answered: ${what} (by ${resolved.by})`;
  }

  tickDeadlines() {
    this.questions.tick();
    const now = Date.now();
    for (const entry of this.permissions?.values() ?? []) {
      if (entry.li.classList.contains("settled")) continue;
      const at = new Date(entry.event.deadline);
      entry.deadline.textContent = `answer by ${clockTime(entry.event.deadline)} · ${countdown(at - now)}`;
    }
  }

  async answer(request, option, li) {
    for (const button of li.querySelectorAll("button")) button.disabled = true;
    try {
      await this.rpc.call("permissions/respond", { id: this.id, request, option });
    } catch (err) {
      this.showError(err.message);
      for (const button of li.querySelectorAll("button")) button.disabled = false;
    }
  }

  // --- head, queue, actions ---------------------------------------------------------------

  setInfo(info) {
    this.info = info;
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
      const what = this.lastStop === "cancelled" ? "Interrupted. The queue is paused" : "The queue is paused";
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
    const started = this.users.has(seq) && !this.held.has(seq);
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
