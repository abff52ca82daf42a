// A tool call in the timeline: its title, kind and status, where it works (locations), what it
// produced (content: text, file edits as compact unified diffs, terminals), its raw input and
// output. One <li> per tool call; `tool_call_update` events change it in place, and `content`
// and `locations` replace what was shown (ACP's semantics). Agent text goes through textContent.

import { unifiedDiff } from "./diff.js";
import { el } from "./dom.js";

export const DIFF_SHOWN = 40; // diff lines shown before "Show all"
const RAW_SHOWN = 4000; // characters of a raw input or output shown before "Show all"
const TOOL_MARK = { pending: "○", in_progress: "◐", completed: "●", failed: "✕" };

function placeholder(event) {
  return event.kind ? `${event.kind.replaceAll("_", " ")} (tool call)` : "tool call";
}

export class ToolCalls {
  constructor() {
    this.calls = new Map(); // tool_call_id -> entry
  }

  reset() {
    this.calls.clear();
  }

  /** The <li> of a new tool call, or null when `event` updates one shown already. `older`:
   *  from an earlier page read after newer events, so only a missing title is taken from it. */
  render(event, older) {
    const known = this.calls.get(event.tool_call_id);
    if (known) {
      // A title from any event beats none; between two, the newer one wins.
      if (event.title && (!older || !known.titled)) {
        known.title.textContent = event.title;
        known.title.removeAttribute("title");
        known.titled = true;
      }
      if (!older) this.update(known, event);
      return null;
    }
    const li = el("li", "tool");
    const mark = el("span", "mark");
    mark.setAttribute("aria-hidden", "true");
    // Never the id: until an event with the title comes (e.g. an earlier page), its kind.
    const title = el("span", "title", event.title || placeholder(event));
    if (!event.title) title.title = event.tool_call_id;
    const status = el("span", "status");
    const line = el("div", "tool-line");
    line.append(mark, title, status);
    const where = el("div", "tool-where small");
    const body = el("div", "tool-body");
    const raw = el("div", "tool-raw");
    li.append(line, where, body, raw);
    const entry = { li, mark, title, status, where, body, raw, titled: Boolean(event.title),
      rawInput: undefined, rawOutput: undefined }; // prettier-ignore
    this.setStatus(entry, event.status || "pending");
    this.calls.set(event.tool_call_id, entry);
    this.update(entry, event);
    return li;
  }

  update(entry, event) {
    if (event.status) this.setStatus(entry, event.status);
    if (event.kind) entry.li.dataset.kind = event.kind;
    if (Array.isArray(event.locations)) this.renderLocations(entry, event.locations);
    if (event.truncated) entry.li.dataset.truncated = "true";
    if (Array.isArray(event.content)) this.renderContent(entry, event.content);
    if (event.raw_input !== undefined) entry.rawInput = event.raw_input;
    if (event.raw_output !== undefined) entry.rawOutput = event.raw_output;
    const raw = event.raw_input !== undefined || event.raw_output !== undefined;
    if (raw || Array.isArray(event.content)) this.renderRaw(entry);
  }

  setStatus(entry, status) {
    entry.li.dataset.status = status;
    entry.mark.textContent = TOOL_MARK[status] ?? "·";
    entry.status.textContent = status.replaceAll("_", " ");
  }

  renderLocations(entry, locations) {
    const shown = locations
      .filter((l) => typeof l?.path === "string")
      .map((l) => (Number.isInteger(l.line) ? `${l.path}:${l.line}` : l.path));
    entry.where.textContent = shown.join(" · ");
    entry.where.hidden = shown.length === 0;
  }

  /** Text blocks together as the tool's output, each diff as a diff, terminals by id. */
  renderContent(entry, content) {
    const parts = [];
    const texts = [];
    for (const item of content) {
      if (item?.type === "diff" && typeof item.path === "string") {
        parts.push(diffView(item));
      } else if (item?.type === "terminal") {
        parts.push(el("div", "terminal small muted", `terminal ${item.terminal_id ?? ""}`));
      } else if (item?.type === "content" || item?.content !== undefined) {
        const text = blockText(item.content ?? item);
        if (text) texts.push(text);
      }
    }
    if (texts.length > 0) {
      const details = el("details", "tool-output");
      details.append(el("summary", "", "Tool output"), el("pre", "text", texts.join("\n")));
      parts.unshift(details);
    }
    entry.body.replaceChildren(...parts);
    if (entry.li.dataset.truncated) {
      entry.body.append(el("div", "note", "cut to fit: the tool call was too big to keep whole"));
    }
  }

  renderRaw(entry) {
    const parts = [];
    if (entry.rawInput !== undefined) parts.push(rawView("Input", entry.rawInput));
    // The output's text is shown already when the content has it.
    const hasOutput = entry.body.querySelector(".tool-output") !== null;
    if (entry.rawOutput !== undefined && !hasOutput) parts.push(rawView("Output", entry.rawOutput));
    entry.raw.replaceChildren(...parts);
  }

  /** Whether tool call `id` shows output text (the stored text replaces the streamed one). */
  hasOutput(id) {
    return this.calls.get(id)?.body.querySelector(".tool-output") != null;
  }
}

/** What a content block says, as text: text, a resource's text, a link, or what it is. */
function blockText(block) {
  if (typeof block?.text === "string") return block.text;
  switch (block?.type) {
    case "resource":
      return typeof block.resource?.text === "string" ? block.resource.text : `[resource ${block.resource?.uri ?? ""}]`;
    case "resource_link":
      return `[${block.name ?? "link"}] ${block.uri ?? ""}`;
    case "image":
    case "audio":
      return `[${block.type}${block.mimeType ? ` ${block.mimeType}` : ""}]`;
    default:
      return "";
  }
}

/** A file edit: the path and a +added/-removed count, then the unified diff, collapsible; a
 *  long one shows its first DIFF_SHOWN lines until "Show all" is pressed. */
export function diffView(item) {
  const isNew = item.old_text === undefined || item.old_text === null;
  const { lines, added, removed } = unifiedDiff(isNew ? null : item.old_text, item.new_text);
  const details = el("details", "diff");
  details.open = true;
  const summary = el("summary");
  const counts = el("span", "diff-counts");
  counts.append(el("span", "add", `+${added}`), el("span", "del", `−${removed}`));
  counts.setAttribute("aria-label", `${added} lines added, ${removed} removed`);
  summary.append(el("span", "diff-path", item.path));
  if (isNew) summary.append(el("span", "badge", "new file"));
  summary.append(counts);
  details.append(summary);
  if (lines.length === 0) {
    details.append(el("div", "small muted", "no change"));
    return details;
  }
  const pre = el("pre", "diff-body");
  const show = (from, to) => {
    const frag = document.createDocumentFragment();
    for (const [kind, text] of lines.slice(from, to)) {
      const prefix = kind === "hunk" ? "" : kind;
      // A line each (display: block), its sign kept in the text: copied, it is a diff.
      frag.append(el("span", `dl ${{ hunk: "hunk", "+": "add", "-": "del" }[kind] ?? "ctx"}`, `${prefix}${text}`));
    }
    pre.append(frag);
  };
  show(0, DIFF_SHOWN);
  details.append(pre);
  if (lines.length > DIFF_SHOWN) {
    const more = el("button", "small show-all", `Show all ${lines.length} lines`);
    more.type = "button";
    more.setAttribute("aria-label", `Show all ${lines.length} lines of the diff of ${item.path}`);
    more.addEventListener("click", () => {
      show(DIFF_SHOWN, lines.length);
      more.remove();
      pre.focus();
    });
    pre.tabIndex = -1;
    details.append(more);
  }
  return details;
}

/** A raw JSON value, collapsed, pretty-printed; a long one cut until "Show all". */
function rawView(name, value) {
  const text = typeof value === "string" ? value : JSON.stringify(value, null, 2) ?? String(value);
  const details = el("details", "raw");
  const pre = el("pre", "text", text.length > RAW_SHOWN ? `${text.slice(0, RAW_SHOWN)}…` : text);
  details.append(el("summary", "", name), pre);
  if (text.length > RAW_SHOWN) {
    const more = el("button", "small show-all", `Show all ${text.length} characters`);
    more.type = "button";
    more.addEventListener("click", () => {
      pre.textContent = text;
      more.remove();
    });
    details.append(more);
  }
  return details;
}
