// Permission requests (`permission_requested`): a card with the agent's options as buttons and
// the countdown to the default answer, answered with `permissions/respond`. The first answer
// wins; `permission_resolved` settles the card, whoever answered, saying how it ended. A card
// whose request is over with no answer recorded (the daemon restarted; or answered, the answer
// on its way) is settled by `settleGone` from the conversation's list of open requests: it says
// "no longer open", its buttons gone.

import { STALE, clockTime, countdown, el, endedText, noLongerOpen } from "./dom.js";

const CONFLICT = -32003; // no such open request: answered already, or over

export class Permissions {
  /** `respond(request, option)`: the call (rejects with the RpcError); `showError(message)`. */
  constructor({ respond, showError }) {
    this.respond = respond;
    this.showError = showError;
    this.reset();
  }

  reset() {
    this.cards = new Map(); // request -> {li, event, deadline, actions}
    this.resolved = new Map(); // request -> permission_resolved event
  }

  render(event) {
    const li = el("li", "permission");
    li.dataset.request = event.request;
    li.dataset.seq = event.seq;
    li.append(el("div", "who", "permission requested"), el("div", "title", event.title));
    const actions = el("div", "row actions");
    for (const option of event.options) {
      const button = el("button", option.kind.startsWith("allow") ? "allow" : "reject", option.name);
      button.type = "button";
      button.setAttribute("aria-label", `${option.name}: ${event.title}`);
      button.addEventListener("click", () => this.answer(card, option.option_id));
      actions.append(button);
    }
    const deadline = el("div", "deadline small");
    li.append(actions, deadline);
    const card = { li, event, deadline, actions };
    this.cards.set(event.request, card);
    const resolved = this.resolved.get(event.request);
    if (resolved) this.settle(card, resolved);
    else this.tick();
    return li;
  }

  /** `permission_resolved`: settles its card (null), or a line when the request is not shown
   *  (an earlier page); `older`: from such a page, so nothing. */
  resolve(event, older) {
    this.resolved.set(event.request, event);
    const card = this.cards.get(event.request);
    if (card) {
      this.settle(card, event);
      return null;
    }
    return older ? null : el("li", "meta", `permission ${event.request}: ${event.outcome}`);
  }

  settle(card, resolved) {
    card.li.classList.add("settled");
    card.li.classList.remove("stale");
    card.deadline.removeAttribute("title");
    card.actions.remove();
    const option = card.event.options.find((o) => o.option_id === resolved.option);
    const what = resolved.outcome === "selected" && option ? option.name : resolved.outcome;
    card.deadline.textContent = endedText(what, resolved.by);
  }

  /** Over, with no answer recorded (yet): the buttons go; a recorded answer, if it comes,
   *  says how it ended. */
  settleStale(card) {
    if (card.li.classList.contains("settled")) return;
    card.li.classList.add("settled", "stale");
    card.actions.remove();
    card.deadline.textContent = "no longer open";
    card.deadline.title = STALE;
  }

  /** Settle every card the conversation (`info`, a `conversations/get` answer) no longer
   *  lists as open. */
  settleGone(info) {
    for (const card of this.cards.values()) {
      if (noLongerOpen(card.event, info, info.permissions)) this.settleStale(card);
    }
  }

  /** The countdown to each open request's default answer. */
  tick() {
    const now = Date.now();
    for (const card of this.cards.values()) {
      if (card.li.classList.contains("settled")) continue;
      const at = new Date(card.event.deadline);
      card.deadline.textContent = `answer by ${clockTime(card.event.deadline)} · ${countdown(at - now)}`;
    }
  }

  async answer(card, option) {
    const buttons = card.li.querySelectorAll("button");
    for (const button of buttons) button.disabled = true;
    try {
      await this.respond(card.event.request, option);
    } catch (err) {
      if (err.code === CONFLICT) {
        this.settleStale(card); // answered elsewhere, or over: its resolution says how
        return;
      }
      this.showError(err.message);
      if (!card.li.classList.contains("settled")) for (const button of buttons) button.disabled = false;
    }
  }
}
