// Slash-command completion in the composer: typing "/" lists the agent's commands (those whose
// name starts with what follows the slash first, then those that contain it) with their
// descriptions; ↑/↓ choose, Enter or Tab completes, Esc closes (without interrupting), and a
// click completes too. Once a command is typed, its input hint shows above the box. The
// textbox keeps its role; the list is tied to it by aria-controls and aria-activedescendant.

import { el } from "./dom.js";

const MAX_SHOWN = 50;

/** A command's input hint: acpd stores `input_hint`; ACP says `input: {hint}`. */
export function inputHint(command) {
  return command.input_hint ?? command.input?.hint ?? "";
}

export class Completer {
  /** `commands()`: the agent's commands now ([{name, description, input_hint?}] or null). */
  constructor({ input, box, list, hint, form, commands }) {
    this.input = input;
    this.box = box;
    this.list = list;
    this.hint = hint;
    this.commands = commands;
    this.shown = []; // the commands listed
    this.active = -1;
    this.dismissed = null; // the word Esc closed the list for: not reopened until it changes
    input.setAttribute("aria-autocomplete", "list");
    input.setAttribute("aria-controls", list.id);
    // Before the page's own Enter (send) and Esc (interrupt): registered first, and stopping
    // the event when the list uses it.
    input.addEventListener("keydown", (e) => this.key(e));
    input.addEventListener("input", () => this.update());
    input.addEventListener("click", () => this.update());
    input.addEventListener("blur", () => this.update());
    // The box emptied by a send (or a steer, Ctrl+Enter): the hint goes.
    form.addEventListener("submit", () => queueMicrotask(() => this.update()));
    input.addEventListener("keyup", (e) => {
      if (e.key === "Enter") this.update();
    });
    // A press on the list must not take the focus from the box (that would close the list).
    list.addEventListener("mousedown", (e) => e.preventDefault());
  }

  /** The command word being typed: {word, end} when the caret is in "/word" at the start. */
  typing() {
    const text = this.input.value;
    if (!text.startsWith("/")) return null;
    const space = text.search(/\s/);
    const end = space < 0 ? text.length : space;
    const caret = this.input.selectionStart ?? text.length;
    if (caret > end || this.input.selectionEnd !== caret) return null;
    return { word: text.slice(1, end), end };
  }

  update() {
    const all = (this.commands() ?? []).filter((c) => typeof c?.name === "string" && c.name);
    const focused = document.activeElement === this.input;
    const typing = focused ? this.typing() : null;
    this.renderHint(focused ? all : [], typing);
    if (typing === null || typing.word === this.dismissed) return this.close({ keepDismissed: typing !== null });
    this.dismissed = null;
    const word = typing.word.toLowerCase();
    const starts = all.filter((c) => c.name.toLowerCase().startsWith(word));
    const contains = all.filter((c) => !c.name.toLowerCase().startsWith(word) && c.name.toLowerCase().includes(word));
    const shown = [...starts, ...contains].slice(0, MAX_SHOWN);
    // Nothing to offer, or the one left is what is typed already.
    if (shown.length === 0 || (shown.length === 1 && shown[0].name === typing.word)) return this.close();
    const was = this.shown[this.active]?.name;
    this.shown = shown;
    this.active = Math.max(0, shown.findIndex((c) => c.name === was));
    this.render();
  }

  render() {
    const items = this.shown.map((command, i) => {
      const li = el("li", "command");
      li.id = `command-${i}`;
      li.setAttribute("role", "option");
      li.setAttribute("aria-selected", String(i === this.active));
      const name = el("span", "command-name", `/${command.name}`);
      li.append(name);
      const hint = inputHint(command);
      if (hint) li.append(el("span", "command-input", hint));
      if (command.description) li.append(el("span", "command-desc", command.description));
      li.addEventListener("click", () => this.accept(i));
      return li;
    });
    this.list.replaceChildren(...items);
    this.box.hidden = false;
    this.hint.hidden = true;
    this.input.setAttribute("aria-activedescendant", `command-${this.active}`);
    items[this.active]?.scrollIntoView({ block: "nearest" });
  }

  renderHint(all, typing) {
    const match = /^\/(\S+)\s/.exec(this.input.value);
    const command = match && typing === null ? all.find((c) => c.name === match[1]) : undefined;
    const hint = command ? inputHint(command) : "";
    this.hint.textContent = hint ? `/${command.name} ${hint}` : "";
    this.hint.hidden = !hint;
  }

  get open() {
    return !this.box.hidden;
  }

  close({ keepDismissed = false } = {}) {
    if (!keepDismissed) this.dismissed = null;
    if (!this.open) return;
    this.box.hidden = true;
    this.list.replaceChildren();
    this.shown = [];
    this.active = -1;
    this.input.removeAttribute("aria-activedescendant");
  }

  move(by) {
    const n = this.shown.length;
    this.active = (this.active + by + n) % n;
    for (const [i, li] of [...this.list.children].entries()) li.setAttribute("aria-selected", String(i === this.active));
    this.input.setAttribute("aria-activedescendant", `command-${this.active}`);
    this.list.children[this.active]?.scrollIntoView({ block: "nearest" });
  }

  /** Put command `i` in the box in place of the word typed, followed by a space. */
  accept(i) {
    const command = this.shown[i];
    const typing = this.typing();
    if (!command || typing === null) return;
    const rest = this.input.value.slice(typing.end).replace(/^[ \t]+/, "");
    const head = `/${command.name} `;
    this.input.value = head + rest;
    this.input.setSelectionRange(head.length, head.length);
    this.close();
    this.update(); // the hint
    this.input.focus();
  }

  key(e) {
    if (!this.open || e.isComposing) return;
    const used = () => {
      e.preventDefault();
      e.stopImmediatePropagation();
    };
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      used();
      this.move(e.key === "ArrowDown" ? 1 : -1);
    } else if ((e.key === "Enter" || e.key === "Tab") && !(e.shiftKey || e.ctrlKey || e.metaKey || e.altKey)) {
      // (Ctrl+Enter is the page's: it steers, or sends.)
      used();
      this.accept(this.active);
    } else if (e.key === "Escape") {
      used();
      this.dismissed = this.typing()?.word ?? null;
      this.close({ keepDismissed: true });
    }
  }
}
