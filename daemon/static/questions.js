// The agent's questions (`elicitation_requested`): a form built from the question's JSON schema
// (a flat object of text, number, integer, boolean and enum fields), or, in url mode, the full
// URL with an explicit "Open" link; answered Accept / Decline / Cancel with
// `elicitations/respond`. The first answer wins: a later one is refused with -32003, shown as
// "already answered". `elicitation_resolved` settles the card, whoever answered, saying how it
// ended; a card whose question is over with no answer recorded (the daemon restarted; or
// answered, the answer on its way) is settled by `settleGone` from the conversation's list of
// open questions ("no longer open").

import { STALE, clockTime, countdown, el, endedText, noLongerOpen } from "./dom.js";

const CONFLICT = -32003;

/** An enum's choices: [{value, title}] from `enum` (+ `enumNames`) or `oneOf`/`anyOf` of
 *  `{const, title}`, the values as the schema has them (the answer must carry those); null
 *  when `prop` is not one. */
function enumChoices(prop) {
  if (Array.isArray(prop?.enum)) {
    const names = Array.isArray(prop.enumNames) ? prop.enumNames : [];
    return prop.enum.map((value, i) => ({ value, title: String(names[i] ?? value) }));
  }
  const alts = prop?.oneOf ?? prop?.anyOf;
  if (Array.isArray(alts) && alts.length > 0 && alts.every((a) => a?.const !== undefined)) {
    return alts.map((a) => ({ value: a.const, title: String(a.title ?? a.const) }));
  }
  return null;
}

const INPUT_TYPES = { email: "email", uri: "url", date: "date" };

/** One field: {row, read()} where read() gives [present, value]; null if not one we can show. */
function field(key, prop, required, id) {
  const title = String(prop.title ?? key);
  const help = typeof prop.description === "string" ? prop.description : "";
  const row = el("div", "field");
  const label = el("label");
  const name = el("span", "field-name", title);
  if (required) name.append(el("span", "required", " *"));
  let control;
  let read;
  const choices = enumChoices(prop);
  const many = prop.type === "array" ? enumChoices(prop.items) : null;
  if (choices) {
    // Options by index: an enum's values need not be strings.
    control = el("select");
    if (!required || prop.default === undefined) {
      const none = el("option", "", required ? "Choose…" : "—");
      none.value = "";
      control.append(none);
    }
    choices.forEach((choice, i) => {
      const option = el("option", "", choice.title);
      option.value = String(i);
      control.append(option);
    });
    const preset = choices.findIndex((c) => c.value === prop.default);
    if (preset >= 0) control.value = String(preset);
    read = () => (control.value === "" ? [false] : [true, choices[Number(control.value)].value]);
  } else if (many) {
    // Several choices: a checkbox each, in a group named by the field.
    const group = el("fieldset", "choices");
    group.append(el("legend", "field-name", title));
    const defaults = Array.isArray(prop.default) ? prop.default : [];
    const boxes = many.map((choice, i) => {
      const box = el("input");
      box.type = "checkbox";
      box.id = `${id}-${i}`;
      box.checked = defaults.includes(choice.value);
      const line = el("label", "check");
      line.append(box, el("span", "", choice.title));
      group.append(line);
      return box;
    });
    if (required) group.querySelector("legend").append(el("span", "required", " *"));
    row.append(group);
    if (help) row.append(el("div", "small muted", help));
    const picked = () => many.filter((_, i) => boxes[i].checked).map((c) => c.value);
    return { row, read: () => (picked().length === 0 && !required ? [false] : [true, picked()]), control: boxes[0] };
  } else if (prop.type === "boolean") {
    control = el("input");
    control.type = "checkbox";
    control.checked = prop.default === true;
    label.className = "check";
    read = () => [true, control.checked];
  } else if (prop.type === "number" || prop.type === "integer") {
    control = el("input");
    control.type = "number";
    control.step = prop.type === "integer" ? "1" : "any";
    if (Number.isFinite(prop.minimum)) control.min = String(prop.minimum);
    if (Number.isFinite(prop.maximum)) control.max = String(prop.maximum);
    if (Number.isFinite(prop.default)) control.value = String(prop.default);
    read = () => (control.value === "" ? [false] : [true, Number(control.value)]);
  } else if (prop.type === "string" || prop.type === undefined) {
    control = el("input");
    control.type = INPUT_TYPES[prop.format] ?? "text";
    if (Number.isInteger(prop.minLength)) control.minLength = prop.minLength;
    if (Number.isInteger(prop.maxLength)) control.maxLength = prop.maxLength;
    if (typeof prop.default === "string") control.value = prop.default;
    control.autocomplete = "off";
    read = () => (control.value === "" && !required ? [false] : [true, control.value]);
  } else {
    return null;
  }
  control.id = id;
  control.name = key;
  control.required = required && prop.type !== "boolean";
  if (control.type === "checkbox") label.append(control, name);
  else label.append(name, control);
  row.append(label);
  if (help) {
    const note = el("div", "small muted", help);
    note.id = `${id}-help`;
    control.setAttribute("aria-describedby", note.id);
    row.append(note);
  }
  return { row, read, control };
}

export class Questions {
  /** `respond(request, action, content)`: the call (rejects with the RpcError). */
  constructor({ respond }) {
    this.respond = respond;
    this.reset();
  }

  reset() {
    this.cards = new Map(); // request -> card
    this.resolved = new Map(); // request -> elicitation_resolved event
    this.made = 0;
  }

  render(event) {
    const li = el("li", "question");
    li.dataset.request = event.request;
    li.dataset.seq = event.seq;
    const heading = el("div", "who", "question from the agent");
    const message = el("div", "title", event.message || "The agent asks:");
    li.append(heading, message);
    const card = { li, event, fields: [], form: null, status: el("div", "deadline small"), note: el("div", "note") };
    card.note.setAttribute("role", "status");
    card.note.hidden = true;
    const form = el("form", "question-form");
    card.form = form;
    if (event.mode === "url") {
      this.urlPart(card, form);
    } else {
      this.formPart(card, form);
    }
    const actions = el("div", "row actions");
    const accept = el("button", "primary", "Accept");
    accept.type = "submit";
    const decline = el("button", "", "Decline");
    decline.type = "button";
    const cancel = el("button", "", "Cancel");
    cancel.type = "button";
    const about = event.message ? `: ${event.message.slice(0, 80)}` : "";
    accept.setAttribute("aria-label", `Accept${about}`);
    decline.setAttribute("aria-label", `Decline${about}`);
    cancel.setAttribute("aria-label", `Cancel${about}`);
    if (card.blocked) accept.disabled = true;
    actions.append(accept, decline, cancel);
    form.append(actions);
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.answer(card, "accept");
    });
    // Esc in a field (closing a list, say) must not interrupt the turn: that cancels the
    // question. The buttons answer.
    form.addEventListener("keydown", (e) => {
      if (e.key === "Escape") e.stopPropagation();
    });
    decline.addEventListener("click", () => this.answer(card, "decline"));
    cancel.addEventListener("click", () => this.answer(card, "cancel"));
    li.append(form, card.note, card.status);
    this.cards.set(event.request, card);
    const resolved = this.resolved.get(event.request);
    if (resolved) this.settle(card, resolved);
    else this.tick();
    return li;
  }

  formPart(card, form) {
    const schema = card.event.schema ?? {};
    const props = schema.properties && typeof schema.properties === "object" ? schema.properties : {};
    const required = new Set(Array.isArray(schema.required) ? schema.required : []);
    const n = ++this.made;
    const missing = [];
    Object.entries(props).forEach(([key, prop], i) => {
      const made = field(key, prop ?? {}, required.has(key), `q${n}-${i}`);
      if (made === null) {
        missing.push(key);
        if (required.has(key)) card.blocked = true;
        return;
      }
      card.fields.push({ key, ...made });
      form.append(made.row);
    });
    if (missing.length > 0) {
      const what = card.blocked ? "it can only be declined or cancelled here" : "they are left out of the answer";
      form.append(el("div", "note", `The dashboard cannot show the fields ${missing.join(", ")}: ${what}.`));
    }
  }

  urlPart(card, form) {
    const url = String(card.event.url ?? "");
    const box = el("div", "question-url");
    let parsed = null;
    try {
      parsed = new URL(url);
    } catch {
      parsed = null;
    }
    const safe = parsed !== null && ["http:", "https:"].includes(parsed.protocol);
    // The site named apart: what a person must check before going there.
    const lead = safe ? `The agent asks you to open a page on ${parsed.host}:` : "The agent asks you to open:";
    box.append(el("div", "small muted", lead), el("code", "url", url));
    if (safe) {
      const open = el("a", "open-url", "Open");
      open.href = url;
      open.target = "_blank";
      open.rel = "noopener noreferrer";
      open.setAttribute("aria-label", `Open ${url} in a new tab`);
      box.append(open);
    } else {
      box.append(el("div", "note", "Not a web address: not opened from here."));
    }
    form.append(box);
  }

  content(card) {
    const content = {};
    for (const { key, read } of card.fields) {
      const [present, value] = read();
      if (present) content[key] = value;
    }
    return content;
  }

  async answer(card, action) {
    if (card.li.classList.contains("settled")) return;
    const content = action === "accept" && card.event.mode !== "url" ? this.content(card) : undefined;
    const controls = card.form.querySelectorAll("button, input, select");
    for (const c of controls) c.disabled = true;
    card.note.hidden = true;
    try {
      await this.respond(card.event.request, action, content);
      if (!card.li.classList.contains("settled")) {
        this.say(card, `Answer sent: ${action}.`, "note small muted");
      }
    } catch (err) {
      if (card.li.classList.contains("settled")) return;
      if (err.code === CONFLICT) {
        this.say(card, "Already answered (elsewhere, or the deadline passed).", "note");
        return; // the resolution is on its way
      }
      this.say(card, err.message, "note error");
      for (const c of controls) c.disabled = false;
      if (card.blocked) card.form.querySelector("button[type=submit]").disabled = true;
    }
  }

  say(card, text, className) {
    card.note.className = className;
    card.note.textContent = text;
    card.note.hidden = false;
  }

  /** `elicitation_resolved`: settles its card (null), or a line when the question is not
   *  shown (an earlier page); `older`: from such a page, so nothing. */
  resolve(event, older) {
    this.resolved.set(event.request, event);
    const card = this.cards.get(event.request);
    if (card) {
      this.settle(card, event);
      return null;
    }
    return older ? null : el("li", "meta", `question ${event.request}: ${event.action}`);
  }

  settle(card, resolved) {
    card.li.classList.add("settled");
    card.li.classList.remove("stale");
    card.status.removeAttribute("title");
    card.form.remove();
    card.note.hidden = true;
    card.status.textContent = endedText(resolved.action, resolved.by);
    if (resolved.action === "accept" && resolved.content && typeof resolved.content === "object") {
      const given = Object.entries(resolved.content).map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`);
      if (given.length > 0) card.li.append(el("div", "small answer", given.join(" · ")));
    }
  }

  /** Over, with no answer recorded (yet): the form goes; a recorded answer, if it comes,
   *  says how it ended. */
  settleStale(card) {
    if (card.li.classList.contains("settled")) return;
    card.li.classList.add("settled", "stale");
    card.form.remove();
    card.note.hidden = true;
    card.status.textContent = "no longer open";
    card.status.title = STALE;
  }

  /** Settle every card the conversation (`info`, a `conversations/get` answer) no longer
   *  lists as open. */
  settleGone(info) {
    for (const card of this.cards.values()) {
      if (noLongerOpen(card.event, info, info.questions)) this.settleStale(card);
    }
  }

  /** The countdown to each open question's default answer. */
  tick() {
    const now = Date.now();
    for (const card of this.cards.values()) {
      if (card.li.classList.contains("settled")) continue;
      const deadline = card.event.deadline;
      card.status.textContent = deadline ? `answer by ${clockTime(deadline)} · ${countdown(new Date(deadline) - now)}` : "";
    }
  }
}
