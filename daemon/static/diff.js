// A line diff for showing a tool call's file edit: Myers' O(ND) algorithm over the lines that
// differ (the common head and tail are cut first), grouped into unified-diff hunks.
//
// Bounded: past MAX_EDITS edits (a rewrite, not an edit) the middle is shown as all removed,
// then all added, rather than searched for longer; the search's time and memory stay small
// whatever the file's size.

export const CONTEXT = 3; // unchanged lines shown around a change
const MAX_EDITS = 400;

/** The edit script turning `a` into `b` (arrays of lines): [[op, line]], op " ", "-" or "+". */
export function diffLines(a, b) {
  let head = 0;
  while (head < a.length && head < b.length && a[head] === b[head]) head++;
  let endA = a.length;
  let endB = b.length;
  while (endA > head && endB > head && a[endA - 1] === b[endB - 1]) {
    endA--;
    endB--;
  }
  const midA = a.slice(head, endA);
  const midB = b.slice(head, endB);
  const middle = myers(midA, midB) ?? [...midA.map((l) => ["-", l]), ...midB.map((l) => ["+", l])];
  return [
    ...a.slice(0, head).map((l) => [" ", l]),
    ...middle,
    ...a.slice(endA).map((l) => [" ", l]),
  ];
}

/** Myers' shortest edit script, or null when it needs more than MAX_EDITS edits. */
function myers(a, b) {
  const n = a.length;
  const m = b.length;
  const max = Math.min(n + m, MAX_EDITS);
  const off = max + 1;
  const v = new Int32Array(2 * max + 3);
  const trace = [];
  for (let d = 0; d <= max; d++) {
    trace.push(v.slice(off - d - 1, off + d + 2)); // what step d starts from: k in [-d-1, d+1]
    for (let k = -d; k <= d; k += 2) {
      let x = k === -d || (k !== d && v[off + k - 1] < v[off + k + 1]) ? v[off + k + 1] : v[off + k - 1] + 1;
      let y = x - k;
      while (x < n && y < m && a[x] === b[y]) {
        x++;
        y++;
      }
      v[off + k] = x;
      if (x >= n && y >= m) return backtrack(trace, a, b, n, m);
    }
  }
  return null;
}

function backtrack(trace, a, b, x, y) {
  const ops = [];
  for (let d = trace.length - 1; d >= 0; d--) {
    const v = trace[d];
    const at = (k) => v[k + d + 1]; // the slice starts at k = -d-1
    const k = x - y;
    const down = k === -d || (k !== d && at(k - 1) < at(k + 1)); // an insertion led here
    const prevK = down ? k + 1 : k - 1;
    const prevX = d === 0 ? 0 : at(prevK);
    const prevY = d === 0 ? 0 : prevX - prevK;
    while (x > prevX && y > prevY) {
      ops.push([" ", a[x - 1]]);
      x--;
      y--;
    }
    if (d > 0) ops.push(down ? ["+", b[prevY]] : ["-", a[prevX]]);
    x = prevX;
    y = prevY;
  }
  return ops.reverse();
}

/** Lines of `text` (a final newline ends the last line, it does not start another). */
export function splitLines(text) {
  if (!text) return [];
  const lines = text.split(/\r?\n/);
  if (lines[lines.length - 1] === "") lines.pop();
  return lines;
}

/** A unified diff of `oldText` (null: a new file) to `newText`: {lines: [[kind, text]],
 *  added, removed}; kind "hunk" (an `@@ -a,b +c,d @@` header), " ", "-" or "+". */
export function unifiedDiff(oldText, newText) {
  const ops = diffLines(splitLines(oldText ?? ""), splitLines(newText ?? ""));
  let added = 0;
  let removed = 0;
  const changed = [];
  ops.forEach(([op], i) => {
    if (op === "+") added++;
    if (op === "-") removed++;
    if (op !== " ") changed.push(i);
  });
  // The line numbers each op is at, on either side.
  const oldAt = new Int32Array(ops.length + 1);
  const newAt = new Int32Array(ops.length + 1);
  oldAt[0] = newAt[0] = 1;
  ops.forEach(([op], j) => {
    oldAt[j + 1] = oldAt[j] + (op === "+" ? 0 : 1);
    newAt[j + 1] = newAt[j] + (op === "-" ? 0 : 1);
  });
  // As `diff -u` numbers an empty side: the line before it.
  const range = (line, count) => `${count === 0 ? line - 1 : line},${count}`;
  const lines = [];
  // Hunks: each change with CONTEXT lines around it, merged when they touch.
  let i = 0;
  while (i < changed.length) {
    const start = Math.max(0, changed[i] - CONTEXT);
    let end = Math.min(ops.length, changed[i] + CONTEXT + 1);
    while (i + 1 < changed.length && changed[i + 1] - CONTEXT <= end) {
      i++;
      end = Math.min(ops.length, changed[i] + CONTEXT + 1);
    }
    i++;
    const oldCount = oldAt[end] - oldAt[start];
    const newCount = newAt[end] - newAt[start];
    lines.push(["hunk", `@@ -${range(oldAt[start], oldCount)} +${range(newAt[start], newCount)} @@`]);
    for (let j = start; j < end; j++) lines.push(ops[j]);
  }
  return { lines, added, removed };
}
