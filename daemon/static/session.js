// The agent session's state in the conversation's head: context usage (a bar and the cost), a
// mode picker, a model picker (the config option of category "model") and the other config
// options in a small settings popover. Each is hidden until the agent says it.
//
// Choosing calls `conversations/set_mode` or `conversations/set_option` through `act`; until
// the answer the control is disabled, and a refusal puts the control back to what the agent
// has and shows the agent's message. An agent that sends a config option of category "mode"
// has it as its mode picker (ACP: config options supersede the older modes). A change of mode
// or option also shows in the timeline, as a line saying what changed (`SessionLines`).

import { clockTime, el } from "./dom.js";

const COMPACT = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });
const FULL = new Intl.NumberFormat();

/** A select's values, groups kept: [{value, name, description?, group?}]. */
function choices(option) {
  const out = [];
  for (const entry of Array.isArray(option.options) ? option.options : []) {
    if (Array.isArray(entry?.options)) {
      for (const inner of entry.options) if (typeof inner?.value === "string") out.push({ ...inner, group: entry.name ?? entry.group });
    } else if (typeof entry?.value === "string") {
      out.push(entry);
    }
  }
  return out;
}

function fillSelect(select, items, current) {
  const groups = new Map();
  const nodes = [];
  for (const item of items) {
    const option = el("option", "", item.name || item.value);
    option.value = item.value;
    if (item.description) option.title = item.description;
    if (item.group) {
      let group = groups.get(item.group);
      if (!group) {
        group = el("optgroup");
        group.label = item.group;
        groups.set(item.group, group);
        nodes.push(group);
      }
      group.append(option);
    } else {
      nodes.push(option);
    }
  }
  if (current !== null && current !== undefined && !items.some((i) => i.value === current)) {
    const unknown = el("option", "", String(current)); // what the agent says, even if unlisted
    unknown.value = String(current);
    nodes.unshift(unknown);
  }
  select.replaceChildren(...nodes);
  if (current !== null && current !== undefined) select.value = String(current);
}

export function usageText(usage) {
  const parts = [];
  if (Number.isFinite(usage?.used)) {
    parts.push(Number.isFinite(usage.size) && usage.size > 0 ? `${COMPACT.format(usage.used)} / ${COMPACT.format(usage.size)}` : `${COMPACT.format(usage.used)} tokens`);
  }
  const cost = costText(usage?.cost);
  if (cost) parts.push(cost);
  return parts.join(" · ");
}

function costText(cost) {
  if (!Number.isFinite(cost?.amount)) return "";
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency: cost.currency }).format(cost.amount);
  } catch {
    return `${cost.amount.toFixed(2)} ${cost.currency ?? ""}`.trim(); // not an ISO 4217 code
  }
}

export class SessionBar {
  /** `root`: the element to fill; `act(method, params)`: the call, resolving once the view has
   *  the answer; `onError(message)`: show a refusal. */
  constructor(root, { act, onError }) {
    this.root = root;
    this.act = act;
    this.onError = onError;
    this.state = null;
    this.signature = "";
    this.busy = false;

    this.modePick = el("label", "pick");
    this.modeSelect = el("select");
    this.modePick.append(el("span", "pick-name", "Mode"), this.modeSelect);
    this.modePick.title = "The agent's mode";
    this.modeSelect.addEventListener("change", () => this.chooseMode());

    this.modelPick = el("label", "pick");
    this.modelSelect = el("select");
    this.modelPick.append(el("span", "pick-name", "Model"), this.modelSelect);
    this.modelSelect.addEventListener("change", () => this.chooseOption(this.model, this.modelSelect.value, this.modelSelect));

    this.settingsBox = el("span", "settings-box");
    this.settingsButton = el("button", "small", "Settings");
    this.settingsButton.type = "button";
    this.settingsButton.id = "settings";
    this.settingsButton.setAttribute("aria-expanded", "false");
    this.settingsButton.setAttribute("aria-controls", "settings-panel");
    this.panel = el("div", "popover");
    this.panel.id = "settings-panel";
    this.panel.setAttribute("role", "group");
    this.panel.setAttribute("aria-label", "Agent settings");
    this.panel.hidden = true;
    this.settingsBox.append(this.settingsButton, this.panel);
    this.settingsButton.addEventListener("click", () => this.togglePanel(this.panel.hidden));
    this.panel.addEventListener("keydown", (e) => {
      if (e.key === "Escape") {
        e.preventDefault();
        e.stopPropagation(); // not the page's Escape (interrupt)
        this.togglePanel(false);
      }
    });
    document.addEventListener("pointerdown", (e) => {
      if (!this.panel.hidden && !this.settingsBox.contains(e.target)) this.togglePanel(false, { focus: false });
    });

    this.usage = el("span", "usage");
    this.meter = el("meter");
    this.meter.setAttribute("aria-label", "Context used");
    this.usageText = el("span", "usage-text");
    this.usage.append(this.meter, this.usageText);

    root.replaceChildren(this.modePick, this.modelPick, this.settingsBox, this.usage);
    this.render(null);
  }

  /** Show `state` ({modes, config_options, usage}; null: nothing known). */
  render(state) {
    this.state = state;
    const options = (Array.isArray(state?.config_options) ? state.config_options : []).filter(
      (o) => typeof o?.id === "string" && (o.type === "select" || o.type === "boolean"),
    );
    const modeOption = options.find((o) => o.type === "select" && o.category === "mode");
    this.model = options.find((o) => o.type === "select" && o.category === "model") ?? null;
    this.modeOption = modeOption ?? null;
    this.others = options.filter((o) => o !== this.model && o !== this.modeOption);
    const modes = state?.modes;
    const modeItems = this.modeOption
      ? choices(this.modeOption)
      : (Array.isArray(modes?.available) ? modes.available : [])
          .filter((m) => typeof m?.id === "string")
          .map((m) => ({ value: m.id, name: m.name, description: m.description }));
    const modeCurrent = this.modeOption ? this.modeOption.currentValue : modes?.current;
    // Rebuilt only when something shown changed: not under a reader's hand at every refresh.
    const signature = JSON.stringify([modeItems, modeCurrent, this.model, this.others, state?.usage, this.busy]);
    if (signature === this.signature) return;
    this.signature = signature;

    this.modePick.hidden = modeItems.length === 0 && typeof modeCurrent !== "string";
    if (!this.modePick.hidden) fillSelect(this.modeSelect, modeItems, modeCurrent);
    this.modelPick.hidden = this.model === null;
    if (this.model) {
      fillSelect(this.modelSelect, choices(this.model), this.model.currentValue);
      this.modelPick.title = this.model.description || this.model.name || "Model";
      this.modelSelect.setAttribute("aria-label", this.model.name || "Model");
    }
    this.modeSelect.setAttribute("aria-label", this.modeOption?.name || "Mode");
    this.settingsBox.hidden = this.others.length === 0;
    if (this.others.length === 0) this.togglePanel(false, { focus: false });
    this.renderPanel();
    this.renderUsage(state?.usage);
    for (const control of this.root.querySelectorAll("select, input")) control.disabled = this.busy;
    this.root.hidden = this.modePick.hidden && this.modelPick.hidden && this.settingsBox.hidden && this.usage.hidden;
  }

  renderPanel() {
    const focused = this.panel.contains(document.activeElement) ? document.activeElement.dataset.option : null;
    const rows = [];
    for (const option of this.others) {
      const row = el("div", "setting");
      let control;
      if (option.type === "boolean") {
        control = el("input");
        control.type = "checkbox";
        control.checked = option.currentValue === true;
        control.addEventListener("change", () => this.chooseOption(option, control.checked, control));
        const label = el("label", "check");
        label.append(control, el("span", "", option.name || option.id));
        row.append(label);
      } else {
        control = el("select");
        fillSelect(control, choices(option), option.currentValue);
        control.addEventListener("change", () => this.chooseOption(option, control.value, control));
        const label = el("label");
        label.append(el("span", "", option.name || option.id), control);
        row.append(label);
      }
      control.dataset.option = option.id;
      if (option.description) row.append(el("div", "small muted", option.description));
      rows.push(row);
    }
    this.panel.replaceChildren(...rows);
    if (focused) this.panel.querySelector(`[data-option="${CSS.escape(focused)}"]`)?.focus();
  }

  renderUsage(usage) {
    const text = usageText(usage);
    this.usage.hidden = !text;
    if (!text) return;
    const used = usage.used;
    const size = usage.size;
    const windowKnown = Number.isFinite(used) && Number.isFinite(size) && size > 0;
    this.meter.hidden = !windowKnown;
    if (windowKnown) {
      this.meter.max = size;
      this.meter.value = Math.min(used, size);
      this.meter.low = size * 0.7; // the bar warns as the window fills
      this.meter.high = size * 0.9;
      this.meter.optimum = 0;
    }
    this.usageText.textContent = text;
    const detail = [];
    if (windowKnown) detail.push(`${FULL.format(used)} of ${FULL.format(size)} tokens of context used (${Math.floor((used * 100) / size)}%)`);
    else if (Number.isFinite(used)) detail.push(`${FULL.format(used)} tokens of context used`);
    const cost = costText(usage.cost);
    if (cost) detail.push(`cost so far ${cost}`);
    this.usage.title = detail.join("; ");
    this.meter.setAttribute("aria-valuetext", detail[0] ?? "");
  }

  togglePanel(open, { focus = true } = {}) {
    if (this.panel.hidden === !open) return;
    this.panel.hidden = !open;
    this.settingsButton.setAttribute("aria-expanded", String(open));
    if (!focus) return;
    if (open) this.panel.querySelector("select, input")?.focus();
    else this.settingsButton.focus();
  }

  async chooseMode() {
    const value = this.modeSelect.value;
    if (this.modeOption) return this.chooseOption(this.modeOption, value, this.modeSelect);
    return this.run("conversations/set_mode", { mode: value }, this.modeSelect);
  }

  async chooseOption(option, value, control) {
    return this.run("conversations/set_option", { option: option.id, value }, control);
  }

  async run(method, params, control) {
    this.busy = true;
    for (const c of this.root.querySelectorAll("select, input")) c.disabled = true;
    try {
      await this.act(method, params);
      this.onError("");
    } catch (err) {
      this.onError(err.message);
    } finally {
      this.busy = false;
      this.signature = ""; // shown again as the agent has it (the refused choice undone)
      this.render(this.state);
      if (control.isConnected) control.focus();
      else this.root.querySelector(`[data-option="${CSS.escape(params.option ?? "")}"]`)?.focus();
    }
  }
}

// --- what the agent said last -------------------------------------------------------------------

const FIELDS = ["modes", "config_options", "commands", "usage"];

/** The session's state as of the newest source: a conversation (as of its `last_seq`) or an
 *  event (at its seq). A `conversations/get` answered after a newer event arrived must not undo
 *  it, nor an event of the history page older than the conversation read before it. */
export class SessionState {
  constructor() {
    this.reset();
  }

  reset() {
    this.value = Object.fromEntries(FIELDS.map((f) => [f, null]));
    this.seq = Object.fromEntries(FIELDS.map((f) => [f, -1]));
  }

  fromInfo(info) {
    for (const field of FIELDS) {
      if (info.last_seq >= this.seq[field]) {
        this.value[field] = info[field] ?? null;
        this.seq[field] = info.last_seq;
      }
    }
  }

  /** Whether `event` changed the state. */
  fromEvent(event) {
    const field = { usage: "usage", commands: "commands", mode: "modes", config_options: "config_options" }[event.type];
    if (field === undefined || event.seq <= this.seq[field]) return false;
    this.seq[field] = event.seq;
    if (event.type === "usage") {
      const { used, size, cost } = event;
      this.value.usage = { used, size, cost };
    } else if (event.type === "commands") {
      this.value.commands = event.commands ?? [];
    } else if (event.type === "mode") {
      const available = event.available ?? this.value.modes?.available ?? [];
      this.value.modes = { current: event.current, available };
    } else {
      this.value.config_options = event.options ?? [];
    }
    return true;
  }
}

// --- what changed, in the timeline ------------------------------------------------------------

/** An option's name as the start of a line: "Model" as "model", "GPU" left as it is. */
function label(name) {
  return /^\p{Lu}\p{Ll}/u.test(name) ? name[0].toLowerCase() + name.slice(1) : name;
}

/** A config option's value by its display name. */
function valueName(option) {
  if (option.type === "boolean") return option.currentValue === true ? "on" : "off";
  const choice = choices(option).find((c) => c.value === option.currentValue);
  return choice?.name || String(option.currentValue ?? "");
}

/** The agent's mode and config options as lines in the timeline ("mode → Plan", "model →
 *  Opus"), each saying what changed since the one before it. "Before" goes by seq, whatever
 *  order the pages arrive in (an earlier page read later recomputes the line after it); the
 *  first one known says the whole state. A session set-up or an agent restart that changes
 *  nothing shows nothing (the line is there, hidden). */
export class SessionLines {
  /** `state()`: the session's state now (the names of modes not in the event). */
  constructor(state) {
    this.state = state;
    this.reset();
  }

  reset() {
    this.chains = { mode: [], config_options: [] }; // [{seq, event, li, text}] in seq order
  }

  /** The <li> for a `mode` or `config_options` event. */
  render(event) {
    const chain = this.chains[event.type];
    const li = el("li", "meta session-change");
    li.dataset.seq = event.seq;
    const entry = { seq: event.seq, event, li, text: el("span") };
    li.append(entry.text, el("time", "ts", clockTime(event.ts)));
    let at = chain.length;
    while (at > 0 && chain[at - 1].seq > event.seq) at--;
    chain.splice(at, 0, entry);
    this.describe(chain, at);
    if (at + 1 < chain.length) this.describe(chain, at + 1);
    return li;
  }

  describe(chain, i) {
    const { event, li, text } = chain[i];
    const before = i > 0 ? chain[i - 1].event : null;
    const said = event.type === "mode" ? this.modeLine(chain, i, before) : this.optionsLine(event, before);
    text.textContent = said;
    li.hidden = said === "";
  }

  modeLine(chain, i, before) {
    const { current } = chain[i].event;
    // An agent with a config option of category mode says it there too (the head's picker).
    const options = this.state()?.config_options;
    if (Array.isArray(options) && options.some((o) => o?.category === "mode" && o.type === "select")) return "";
    if (typeof current !== "string" || (before && before.current === current)) return "";
    let available = null;
    for (let j = i; j >= 0 && available === null; j--) {
      if (Array.isArray(chain[j].event.available)) available = chain[j].event.available;
    }
    available ??= this.state()?.modes?.available;
    const mode = Array.isArray(available) ? available.find((m) => m?.id === current) : undefined;
    return `mode → ${mode?.name || current}`;
  }

  optionsLine(event, before) {
    const was = new Map();
    for (const o of Array.isArray(before?.options) ? before.options : []) {
      if (typeof o?.id === "string") was.set(o.id, o.currentValue);
    }
    const parts = [];
    for (const o of Array.isArray(event.options) ? event.options : []) {
      if (typeof o?.id !== "string" || (o.type !== "select" && o.type !== "boolean")) continue;
      if (before && was.has(o.id) && was.get(o.id) === o.currentValue) continue;
      parts.push(`${label(o.name || o.id)} → ${valueName(o)}`);
    }
    return parts.join(" · ");
  }
}
