// A session's live dashboard: counters, check-ins as they arrive over the
// WebSocket (with its connection state), check-ins per minute, and the
// hosts' overrides (mark present or absent, with a reason).

import { ApiError, gql, json } from "../api";
import { minuteOf, perMinuteChart } from "../chart";
import { type Cleanup, fill, formatTime, h } from "../dom";
import { type Change, type LinkState, LiveLink, type Stats } from "../live";
import { describeReason } from "../reasons";
import { loadSession, rememberSession } from "./sessions";

interface Attendee {
  userId: string;
  user: { displayName: string } | null;
  status: string;
  attended: boolean;
  inside: boolean;
  markedBy: string | null;
  markReason: string | null;
}

interface CheckInNode {
  id: string;
  userId: string;
  outcome: string;
  reason: string | null;
  direction: string;
  gate: string;
  receivedAt: string;
  decidedAt: string | null;
}

interface Page<T> {
  edges: { node: T }[];
  pageInfo: { hasNextPage: boolean; endCursor: string | null };
}

const COUNTERS: [keyof Stats, string][] = [
  ["expected", "Expected"],
  ["checked_in", "Checked in"],
  ["failed", "Failed"],
  ["pending", "Pending"],
];
const ATTENDEE_KINDS = new Set([
  "place_taken", "waitlisted", "promoted", "place_given_up", "checkin.succeeded", "checkin.annulled",
  "marked_present", "marked_absent", "entered", "exited",
]);
const SKIPPED = new Set(["entered", "exited"]); // told by the check-in's own row
const MAX_ROWS = 200;
const PAGES = 5;

const ATTENDANCE = `query($s: ID!, $after: String) { sessionAttendance(sessionId: $s, first: 100, after: $after) {
  edges { node { userId user { displayName } status attended inside markedBy markReason } }
  pageInfo { hasNextPage endCursor } } }`;
const HISTORY = `query($s: ID!, $after: String) { checkIns(sessionId: $s, first: 100, after: $after) {
  edges { node { id userId outcome reason direction gate receivedAt decidedAt } }
  pageInfo { hasNextPage endCursor } } }`;

function linkText(s: LinkState): string {
  switch (s.state) {
    case "connecting":
      return s.attempt ? "Reconnecting…" : "Connecting…";
    case "live":
      return s.resumed ? "Live (resumed)" : "Live";
    case "waiting":
      return `Connection lost: retrying in ${Math.ceil(s.retryIn / 1000)} s`;
    case "stopped":
      return `Disconnected: ${s.message} (${s.code})`;
  }
}

export function dashboardPage(root: HTMLElement, sessionId: string): Cleanup {
  const title = h("h1", { tabindex: -1 }, "Dashboard");
  const when = h("p", { class: "muted" });
  const linkState = h("p", { class: "link-state", role: "status", "data-state": "connecting" }, "Connecting…");
  const counters = h("dl", { class: "counters" });
  const counterValues = new Map<string, HTMLElement>();
  for (const [key, label] of COUNTERS) {
    const value = h("dd", { "data-counter": key }, "–");
    counterValues.set(key, value);
    counters.append(h("div", { class: `counter counter-${key}` }, h("dt", {}, label), value));
  }
  const inside = h("p", { class: "muted", id: "inside" });
  const chartBox = h("div", { class: "chart-box", id: "chart" });
  const feed = h("ol", { class: "feed", id: "feed", "aria-live": "polite", "aria-relevant": "additions" });
  const feedEmpty = h("p", { class: "muted" }, "No check-ins yet.");
  const people = h("ul", { class: "people", id: "attendees" });
  const notice = h("p", { class: "notice", role: "status", id: "override-status" });

  root.append(
    h("div", { class: "page-head" }, h("div", {}, title, when), linkState),
    h("p", {}, h("a", { href: `#/kiosk/${sessionId}`, class: "button" }, "Open the kiosk")),
    h("section", { "aria-label": "Counters" }, counters, inside),
    h("section", {}, h("h2", {}, "Check-ins per minute"), chartBox),
    h("div", { class: "columns" },
      h("section", {}, h("h2", {}, "As they arrive"), feedEmpty, feed),
      h("section", {}, h("h2", {}, "People with a place"), notice, people)),
  );

  const names = new Map<string, string>();
  const rows = new Map<string, HTMLLIElement>();
  const arrivals = new Map<string, number>(); // check-in id -> minute it succeeded
  let alive = true;
  let historyLoaded = false;
  let attendeesTimer: number | undefined;

  const nameOf = (userId?: string | null) => (userId ? names.get(userId) ?? "Someone" : "Someone");

  function showStats(stats: Stats): void {
    for (const [key] of COUNTERS) counterValues.get(key)!.textContent = String(stats[key]);
    const gates = Object.entries(stats.inside_by_gate).map(([g, n]) => `${g}: ${n}`).join(", ");
    inside.textContent = `Inside now: ${stats.inside}${gates ? ` (${gates})` : ""} · ${stats.rate_per_minute} in the last minute`;
  }

  function drawChart(): void {
    const counts = new Map<number, number>();
    for (const m of arrivals.values()) counts.set(m, (counts.get(m) ?? 0) + 1);
    fill(chartBox, perMinuteChart(counts));
  }

  function row(key: string, kind: string, userId: string | null | undefined, text: string, at: string | null | undefined, newest: boolean): void {
    const item = h(
      "li",
      { class: `entry kind-${kind.replace(".", "-")}`, "data-kind": kind, "data-user": userId ?? "" },
      h("time", { datetime: at ?? "" }, at ? formatTime(at, undefined, false) : ""),
      h("span", { class: "name" }, nameOf(userId)),
      h("span", { class: "what" }, text),
    );
    const old = rows.get(key);
    if (old) old.replaceWith(item);
    else if (newest) feed.prepend(item);
    else feed.append(item);
    rows.set(key, item);
    feedEmpty.hidden = true;
    while (feed.children.length > MAX_ROWS) {
      const last = feed.lastElementChild as HTMLLIElement;
      for (const [k, v] of rows) if (v === last) rows.delete(k);
      last.remove();
    }
  }

  function checkinText(outcome: string, reason: string | null | undefined, direction?: string | null): string {
    switch (outcome) {
      case "succeeded":
        return direction === "out" ? "checked out" : "checked in";
      case "pending":
        return "checking the face…";
      case "failed":
        return `refused: ${describeReason(reason)}`;
      case "conflict":
        return "conflict: two kiosks accepted this ticket";
      case "annulled":
        return `check-in annulled${reason ? `: ${reason}` : ""}`;
      default:
        return outcome;
    }
  }

  function onChange(c: Change): void {
    showStats(c.stats);
    if (c.kind === "checkin.succeeded" && c.direction !== "out" && c.checkin_id) arrivals.set(c.checkin_id, minuteOf(c.at ?? Date.now()));
    if (c.kind === "checkin.annulled" && c.checkin_id) arrivals.delete(c.checkin_id);
    if (c.kind.startsWith("checkin.")) drawChart();
    if (c.user_id && !names.has(c.user_id)) void learnName(c.user_id);
    if (ATTENDEE_KINDS.has(c.kind)) refreshAttendeesSoon();
    if (SKIPPED.has(c.kind)) return;
    if (c.kind.startsWith("checkin.") && c.checkin_id) {
      const outcome = c.kind.slice("checkin.".length);
      row(`c:${c.checkin_id}`, c.kind, c.user_id, checkinText(outcome, c.reason, c.direction), c.at, true);
      return;
    }
    const text: Record<string, string> = {
      marked_present: `marked present${c.reason ? `: ${c.reason}` : ""}`,
      marked_absent: `marked absent${c.reason ? `: ${c.reason}` : ""}`,
      place_taken: "took a place",
      waitlisted: "joined the waitlist",
      promoted: "got a place from the waitlist",
      place_given_up: "gave up their place",
    };
    row(`s:${c.seq}`, c.kind, c.user_id, text[c.kind] ?? c.kind, c.at, true);
  }

  async function learnName(userId: string): Promise<void> {
    names.set(userId, "Someone");
    try {
      const data = await gql<{ user: { displayName: string } | null }>("query($id: ID!) { user(id: $id) { displayName } }", { id: userId });
      if (!alive || !data.user) return;
      names.set(userId, data.user.displayName);
      for (const item of feed.querySelectorAll<HTMLElement>(`li[data-user="${CSS.escape(userId)}"] .name`)) item.textContent = data.user.displayName;
    } catch {
      /* the name stays "Someone" */
    }
  }

  async function loadHistory(): Promise<void> {
    const found: CheckInNode[] = [];
    let after: string | null = null;
    for (let i = 0; i < PAGES; i++) {
      const data: { checkIns: Page<CheckInNode> } = await gql(HISTORY, { s: sessionId, after });
      found.push(...data.checkIns.edges.map((e) => e.node));
      if (!data.checkIns.pageInfo.hasNextPage) break;
      after = data.checkIns.pageInfo.endCursor;
    }
    if (!alive) return;
    for (const c of found) {
      const outcome = c.outcome.toLowerCase();
      if (outcome === "succeeded" && c.direction !== "out" && !arrivals.has(c.id)) arrivals.set(c.id, minuteOf(c.decidedAt ?? c.receivedAt));
      if (!rows.has(`c:${c.id}`)) row(`c:${c.id}`, `checkin.${outcome}`, c.userId, checkinText(outcome, c.reason, c.direction), c.decidedAt ?? c.receivedAt, false);
      if (!names.has(c.userId)) void learnName(c.userId);
    }
    drawChart();
  }

  function refreshAttendeesSoon(): void {
    window.clearTimeout(attendeesTimer);
    attendeesTimer = window.setTimeout(() => void loadAttendees(), 250);
  }

  async function loadAttendees(): Promise<void> {
    const found: Attendee[] = [];
    let after: string | null = null;
    for (let i = 0; i < PAGES; i++) {
      const data: { sessionAttendance: Page<Attendee> } = await gql(ATTENDANCE, { s: sessionId, after });
      found.push(...data.sessionAttendance.edges.map((e) => e.node));
      if (!data.sessionAttendance.pageInfo.hasNextPage) break;
      after = data.sessionAttendance.pageInfo.endCursor;
    }
    if (!alive) return;
    for (const a of found) if (a.user) names.set(a.userId, a.user.displayName);
    if (people.querySelector("form")) return; // a host is typing a reason: refresh after
    fill(people, found.length ? found.map(person) : h("li", { class: "muted" }, "Nobody has a place yet."));
  }

  function person(a: Attendee): HTMLLIElement {
    const name = a.user?.displayName ?? "Someone";
    const standing = a.attended ? (a.inside ? "here" : "attended") : "not here";
    const detail = a.markReason ? ` · marked: ${a.markReason}` : "";
    const item = h(
      "li",
      { class: `person ${a.attended ? "attended" : ""}`, "data-user": a.userId },
      h("div", {}, h("strong", {}, name), h("br"),
        h("span", { class: "muted" }, `${a.status} · `, h("span", { class: "standing" }, standing), detail)),
    );
    const actions = h("div", { class: "actions" });
    for (const present of [true, false]) {
      const label = present ? "Mark present" : "Mark absent";
      actions.append(
        h("button", { type: "button", "aria-label": `${label}: ${name}`, onclick: () => overrideForm(item, a.userId, name, present) }, label),
      );
    }
    item.append(actions);
    return item;
  }

  function overrideForm(item: HTMLLIElement, userId: string, name: string, present: boolean): void {
    people.querySelector("form")?.remove();
    const id = `reason-${userId}`;
    const reason = h("input", { id, name: "reason", required: true, maxlength: 500, autocomplete: "off" });
    const verb = present ? "Mark present" : "Mark absent";
    const form = h(
      "form",
      { class: "override" },
      h("label", { for: id }, `Why mark ${name} ${present ? "present" : "absent"}?`),
      reason,
      h("div", { class: "actions" },
        h("button", { type: "submit", class: "primary" }, verb),
        h("button", { type: "button", onclick: () => close() }, "Cancel")),
    );
    const close = () => {
      form.remove();
      item.querySelector<HTMLButtonElement>("button")?.focus();
      refreshAttendeesSoon();
    };
    form.addEventListener("keydown", (e) => {
      if (e.key === "Escape") close();
    });
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      notice.textContent = "Saving…";
      try {
        await json(`/sessions/${sessionId}/attendance/${userId}`, {
          method: "PUT",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ present, reason: reason.value.trim() }),
        });
        notice.textContent = `${name} marked ${present ? "present" : "absent"}.`;
        form.remove();
        refreshAttendeesSoon();
      } catch (err) {
        notice.textContent = `Not saved: ${err instanceof ApiError ? err.message : "the server cannot be reached"}`;
      }
    });
    item.append(form);
    reason.focus();
  }

  const link = new LiveLink(sessionId, {
    snapshot(s) {
      showStats(s.stats);
      if (!historyLoaded) {
        historyLoaded = true; // after the snapshot: what it counts is in the history, what comes later arrives as changes
        void loadHistory().catch(() => undefined);
      }
    },
    change: onChange,
    state(s) {
      linkState.dataset.state = s.state;
      linkState.textContent = linkText(s);
    },
  });

  const chartTimer = window.setInterval(drawChart, 30_000);
  drawChart();
  (async () => {
    try {
      const session = await loadSession(sessionId);
      if (!alive) return;
      if (!session) {
        title.textContent = "No such session";
        linkState.hidden = true;
        return;
      }
      rememberSession(sessionId);
      title.textContent = session.title;
      document.title = `${session.title} · AttendWise`;
      when.textContent = `${formatTime(session.start, session.timeZone)} · ${session.timeZone}`;
      await loadAttendees();
    } catch (e) {
      if (alive) notice.textContent = `Could not load the session (${e instanceof ApiError ? e.code : "OFFLINE"}).`;
    }
    if (alive) link.start();
  })();

  return () => {
    alive = false;
    link.stop();
    window.clearInterval(chartTimer);
    window.clearTimeout(attendeesTimer);
  };
}
