// A conversation's timeline: its stored events, each rendered once, and the live blocks that
// stream the running turn's text (deltas) until the stored event replaces them.
//
// `RENDERERS` says what becomes of every event type the daemon stores (protocol/events.py's
// EVENT_BODIES; a browser test holds the two to each other and renders one of each): a line or
// a card, an update of something shown, or, on purpose, nothing. An unknown type (a newer
// daemon's) shows as its name, marked `unknown`.
//
// A user message is shown where its turn starts (`turn_started`), and until then only in the
// queue panel, so a queued message never shows above the reply of the turn that runs. A steer
// the agent took shows where it was taken (`user_message_steered`); one removed from the queue
// (`user_message_removed`) never shows, a line says so where it left. All agent text goes
// through textContent, never innerHTML.

import { clockTime, el } from "./dom.js";
import { Permissions } from "./permissions.js";
import { Questions } from "./questions.js";
import { SessionLines } from "./session.js";
import { ToolCalls } from "./tools.js";

const PLAN_MARK = { pending: "○", in_progress: "◐", completed: "●" };

/** Event type -> (timeline, event, older) => the <li> to add, or null. `older`: the event comes
 *  from an earlier page read after later ones (nothing live may change). */
export const RENDERERS = {
  user_message: (t, event) => t.renderUser(event),
  turn_started: (t, event) => t.placeUser(event.prompt_seq),
  user_message_steered: (t, event) => t.placeSteered(event),
  user_message_edited: (t, event) => t.renderEdited(event),
  user_message_removed: (t, event) => t.renderRemoved(event),
  queue_reordered: () => null, // the queue panel reads the new order
  agent_message: (t, event, older) => {
    if (!older) t.clearLive("message");
    return t.renderText(event, "msg agent", t.agent());
  },
  agent_thought: (t, event, older) => {
    if (!older) t.clearLive("thought");
    const li = el("li", "thought");
    li.dataset.seq = event.seq;
    const details = el("details");
    details.append(el("summary", "", "Thought"), el("div", "text", event.text));
    li.append(details);
    return li;
  },
  tool_call: (t, event, older) => t.renderTool(event, older),
  tool_call_update: (t, event, older) => t.renderTool(event, older),
  plan: (t, event, older) => t.renderPlan(event, older),
  permission_requested: (t, event) => t.permissions.render(event),
  permission_resolved: (t, event, older) => t.permissions.resolve(event, older),
  elicitation_requested: (t, event) => t.questions.render(event),
  elicitation_resolved: (t, event, older) => t.questions.resolve(event, older),
  turn_ended: (t, event, older) => {
    if (!older) {
      t.clearLive();
      t.lastStop = event.stop_reason;
    }
    const ok = event.stop_reason === "end_turn";
    const li = el("li", ok ? "meta" : "meta warn");
    let text = ok ? "turn ended" : `turn ended: ${event.stop_reason.replaceAll("_", " ")}`;
    if (event.detail) text += ` (${event.detail})`;
    li.append(el("span", "", text), el("time", "ts", clockTime(event.ts)));
    return li;
  },
  agent_restarted: (t, event) => {
    const how = event.session_loaded ? "session restored" : "new session";
    const why = String(event.reason ?? "").replaceAll("_", " ");
    return el("li", "meta warn", `agent restarted: ${why} (${how})`);
  },
  error: (t, event) => {
    const li = el("li", "error-event");
    li.append(el("div", "", event.message));
    const more = event.detail ?? event.stderr; // the agent's own words, or its stderr
    if (more) {
      const details = el("details");
      details.append(el("summary", "", "details"), el("pre", "text", more));
      li.append(details);
    }
    return li;
  },
  // The session's state: the head shows the latest; a change of mode or option is also a line
  // here, to say when it happened.
  mode: (t, event) => t.sessionLines.render(event),
  config_options: (t, event) => t.sessionLines.render(event),
  usage: () => null, // the head's meter
  commands: () => null, // the composer's completion
  title: () => null, // the head and the list
};

export class Timeline {
  /** `dom`: {events, live} lists; `agent()`: the agent's name; `leftQueue(seq)`: a message
   *  left the queue (steered or removed); `respondPermission(request, option)`,
   *  `respondQuestion(request, action, content)`: the calls; `showError(message)`;
   *  `session()`: the session's state now (names of modes and options). */
  constructor(dom, { agent, leftQueue, respondPermission, respondQuestion, showError, session }) {
    this.dom = dom;
    this.agent = agent;
    this.leftQueue = leftQueue;
    this.toolCalls = new ToolCalls();
    this.permissions = new Permissions({ respond: respondPermission, showError });
    this.questions = new Questions({ respond: respondQuestion });
    this.sessionLines = new SessionLines(session);
    this.reset();
  }

  reset() {
    this.users = new Map(); // seq -> user message <li>
    this.numbers = new Map(); // seq -> {number, text} of each user message read
    this.removed = new Map(); // seq -> the line saying that message left the queue
    this.held = new Map(); // seq -> user message <li> whose turn has not started: not shown
    this.anchors = new Map(); // prompt_seq -> hidden <li> where a turn started, its message unseen
    this.plans = new Map(); // prompt_seq -> <li>
    this.toolCalls.reset();
    this.permissions.reset();
    this.questions.reset();
    this.sessionLines.reset();
    this.lastStop = null; // stop reason of the latest turn shown: was it interrupted?
    this.live = {}; // kind -> {block, body, promptSeq}
    this.dom.events.replaceChildren();
    this.dom.live.replaceChildren();
  }

  /** The <li> for `event`, or null when it only updates something shown already. */
  render(event, older) {
    const renderer = Object.hasOwn(RENDERERS, event.type) ? RENDERERS[event.type] : null;
    if (renderer === null) return el("li", "meta unknown", event.type); // a newer daemon's
    return renderer(this, event, older);
  }

  /** Whether user message `seq` is shown (its turn started, or it was steered). */
  shown(seq) {
    return this.users.has(seq) && !this.held.has(seq);
  }

  /** The turns shown whose message is at or below `seq` and not read yet (at most `n`). */
  missingMessages(seq, n) {
    return [...this.anchors.keys()].filter((s) => s <= seq).slice(0, n);
  }

  // --- live blocks --------------------------------------------------------------------------

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
    block.append(el("div", "who", this.agent()));
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

  // --- messages -----------------------------------------------------------------------------

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
    this.numbers.set(event.seq, { number: event.number, text: event.text });
    const removed = this.removed.get(event.seq);
    if (removed) {
      // Read after its removal (an earlier page): never shown, and now the line can name it.
      removed.textContent = this.removedText(event.seq);
      return null;
    }
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
    this.leftQueue(event.message_seq);
    if (!li) {
      // Its message is on an earlier page (or was never loaded): say what happened.
      const meta = el("li", "meta", "a message was steered into the running turn");
      meta.dataset.seq = event.seq;
      return meta;
    }
    li.classList.add("steered");
    li.append(el("div", "note", "steered into the running turn"));
    return li;
  }

  /** A queued message edited: it will show (where its turn starts) with its new text. */
  renderEdited(event) {
    const li = this.users.get(event.message_seq);
    const known = this.numbers.get(event.message_seq);
    if (known) known.text = event.text;
    if (li) {
      li.querySelector(".text").textContent = event.text;
      if (!li.querySelector(".note.edited")) li.append(el("div", "note edited", "edited"));
    }
    return null;
  }

  /** A queued message taken out before its turn (`acpd queue --remove`, an ACP client's
   *  cancelled prompt): it leaves the queue and is never shown; a line says so. The daemon
   *  deletes the message's own event, so a reload names it only by what is left: the line. */
  renderRemoved(event) {
    const seq = event.message_seq;
    this.held.delete(seq);
    this.leftQueue(seq);
    const li = el("li", "meta removed", this.removedText(seq));
    li.dataset.seq = event.seq;
    this.removed.set(seq, li);
    return li;
  }

  removedText(seq) {
    const known = this.numbers.get(seq);
    if (!known) return "a queued message was removed from the queue";
    const name = Number.isInteger(known.number) ? `message ${known.number}` : "a queued message";
    const first = String(known.text ?? "").trim().split("\n")[0];
    const gist = first.length > 60 ? `${first.slice(0, 59)}…` : first;
    return gist ? `${name} removed from the queue: “${gist}”` : `${name} removed from the queue`;
  }

  // --- the agent's work ---------------------------------------------------------------------

  renderTool(event, older) {
    const node = this.toolCalls.render(event, older);
    // The stored output replaces the streamed one.
    const output = Array.isArray(event.content) && this.toolCalls.hasOutput(event.tool_call_id);
    if (!older && output) this.clearLive("tool");
    return node;
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

  // --- what waits for an answer -------------------------------------------------------------

  /** Settle the cards whose request the conversation (a `conversations/get` answer) no longer
   *  has open: answered elsewhere (its resolution on its way), or over with none recorded. */
  settleGone(info) {
    this.permissions.settleGone(info);
    this.questions.settleGone(info);
  }

  /** The countdowns to the default answers. */
  tick() {
    this.questions.tick();
    this.permissions.tick();
  }
}
