// The queue panel: the messages waiting for their turn, in line, each with its number, its text
// (as edited) and what can be done with it until its turn starts: edit it in place, move it up
// or down, remove it. The daemon decides: each action is a call, then the panel reads the queue
// again; a message whose turn started meanwhile is refused (-32003), and the panel says so.

import { el } from "./dom.js";

export class QueuePanel {
  constructor(rpc, list, { conversation, onChange, showError }) {
    this.rpc = rpc; // () => the connection (it changes on reconnect)
    this.list = list; // the <ol>
    this.conversation = conversation; // () => the conversation id shown, or null
    this.onChange = onChange; // () => void: after the entries changed (the title follows)
    this.showError = showError;
    this.entries = []; // [{seq, text, number}], first in line first
    this.editing = null; // the seq being edited
    this.editItem = null; // its <li>: a refresh keeps it, and what is typed in it, as it is
  }

  get size() {
    return this.entries.length;
  }

  clear() {
    this.entries = [];
    this.stopEditing();
    this.list.replaceChildren();
  }

  stopEditing() {
    this.editing = null;
    this.editItem = null;
  }

  /** Show a message just sent as queued, before the refresh that confirms it. */
  add(seq, text, number) {
    if (this.entries.some((m) => m.seq === seq)) return;
    this.entries.push({ seq, text, number });
    this.render();
  }

  /** Forget a message the daemon no longer queues (its turn started, or it was steered). */
  drop(seq) {
    const before = this.entries.length;
    this.entries = this.entries.filter((m) => m.seq !== seq);
    if (this.entries.length !== before) this.render();
  }

  async refresh() {
    const id = this.conversation();
    if (id === null) return;
    const { pending } = await this.rpc().call("messages/queue", { id });
    if (id !== this.conversation()) return;
    this.entries = pending.map((m) => ({ seq: m.seq, text: m.text, number: m.number }));
    if (this.editing !== null && !this.entries.some((m) => m.seq === this.editing)) {
      this.stopEditing(); // its turn started: nothing left to edit
    }
    this.render();
  }

  render() {
    // The box being typed in survives a refresh: the same element, its focus and caret too.
    const box = this.editItem?.querySelector("textarea");
    const typing = box !== undefined && box === document.activeElement;
    const caret = typing ? [box.selectionStart, box.selectionEnd] : null;
    const items = [];
    this.entries.forEach((entry, i) => items.push(this.item(entry, i)));
    this.list.replaceChildren(...items);
    if (typing && box.isConnected) {
      box.focus();
      box.setSelectionRange(...caret);
    }
    this.onChange();
  }

  item({ seq, text, number }, i) {
    const li = el("li");
    li.dataset.seq = seq;
    const name = number === undefined ? "" : `#${number}`;
    const gist = text.slice(0, 60);
    if (this.editing === seq && this.editItem !== null) return this.editItem;
    if (this.editing === seq) {
      this.editItem = li;
      li.classList.add("editing");
      const box = el("textarea", "edit");
      box.value = text;
      box.rows = Math.min(6, text.split("\n").length + 1);
      box.setAttribute("aria-label", `New text of queued message ${name}`.trim());
      const save = this.button("save primary", "Save", `Save queued message ${name}`.trim(),
        () => this.save(seq, box.value));
      const cancel = this.button("cancel", "Cancel", "Cancel the edit", () => {
        this.stopEditing();
        this.render();
      });
      box.addEventListener("keydown", (e) => {
        if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
          e.preventDefault();
          save.click();
        } else if (e.key === "Escape") {
          e.preventDefault();
          e.stopPropagation(); // Esc here cancels the edit, not the running turn
          cancel.click();
        }
      });
      li.append(el("span", "num", name), box, save, cancel);
      queueMicrotask(() => box.focus());
      return li;
    }
    li.append(el("span", "num", name), el("span", "text", text));
    const up = this.button("up", "↑", `Move up: ${gist}`, () => this.move(seq, this.entries[i - 1].seq));
    up.disabled = i === 0;
    const down = this.button("down", "↓", `Move down: ${gist}`,
      () => this.move(this.entries[i + 1].seq, seq)); // the next one goes before this one
    down.disabled = i === this.entries.length - 1;
    const edit = this.button("edit", "Edit", `Edit queued message: ${gist}`, () => {
      this.stopEditing();
      this.editing = seq;
      this.render();
    });
    const remove = this.button("remove", "Remove", `Remove queued message: ${gist}`,
      () => this.remove(seq));
    li.append(up, down, edit, remove);
    return li;
  }

  button(className, label, aria, onClick) {
    const button = el("button", className, label);
    button.type = "button";
    button.setAttribute("aria-label", aria);
    button.title = aria;
    button.addEventListener("click", onClick);
    return button;
  }

  // --- actions ----------------------------------------------------------------------------

  async save(seq, text) {
    if (!text.trim()) {
      this.showError("A queued message cannot be empty: remove it instead.");
      return;
    }
    this.stopEditing();
    await this.act("messages/edit", { seq, text });
  }

  /** Put message `seq` right before message `before` (the daemon keeps the rest in line). */
  move(seq, before) {
    return this.act("messages/move", { seq, before });
  }

  remove(seq) {
    return this.act("messages/remove", { seq });
  }

  async act(method, params) {
    const id = this.conversation();
    if (id === null) return;
    try {
      await this.rpc().call(method, { id, ...params });
      this.showError("");
    } catch (err) {
      // -32003: its turn started (or it is being steered) meanwhile; the refresh shows that.
      this.showError(err.code === -32003 ? `Too late: ${err.message}.` : err.message);
    }
    await this.refresh().catch(() => {});
  }
}
