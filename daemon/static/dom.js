// Small helpers shared by the page's modules: elements (text always through textContent, never
// innerHTML), clock times, deadlines and how a request for an answer ended.

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function clockTime(ts) {
  const d = new Date(ts);
  return Number.isNaN(d.getTime())
    ? ""
    : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

/** What a card waiting for an answer says about its deadline, `ms` from now. */
export function countdown(ms) {
  if (ms <= 0) return "deadline passed";
  const s = Math.ceil(ms / 1000);
  return `default answer in ${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

/** Why a card says "no longer open" (its tooltip). */
export const STALE =
  "The daemon no longer waits for an answer to this: it was answered elsewhere (the answer " +
  "is on its way), or the daemon restarted before one was recorded.";

/** Whether the request of a card (its `event`) is over, going by a `conversations/get` answer
 *  (`info`): listed as open there, it is not; its event newer than the answer, nobody knows yet.
 *  The daemon lists a request from the moment its event is stored until it is answered, and
 *  only while its agent runs: one missing from a list that covers its event is over (answered,
 *  and the answer on its way; or its agent died or the daemon restarted, and none will come). */
export function noLongerOpen(event, info, open) {
  if (!Number.isInteger(event.seq) || event.seq > info.last_seq) return false;
  // Request ids restart with the daemon: the deadline tells two of the same id apart.
  const same = (o) => o?.request === event.request && o?.deadline === event.deadline;
  return !(Array.isArray(open) && open.some(same));
}

/** How a permission request or question ended, for its card: `what` is the answer (an
 *  option's name, an action), `by` who or what gave it (the daemon's `by`). */
export function endedText(what, by) {
  switch (by) {
    case "timeout":
      return `deadline passed: ${what}`;
    case "cancel":
      return "cancelled: the turn was interrupted";
    case "turn_ended":
      return "cancelled: the turn ended first";
    case "agent_stopped":
      return "cancelled: the agent stopped";
    case "policy":
      return `answered by policy: ${what}`;
    case undefined:
    case null:
    case "":
      return `answered: ${what}`;
    default:
      return `answered: ${what} (by ${by})`;
  }
}
