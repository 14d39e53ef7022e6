// The sessions I host: today's and the upcoming ones (GraphQL `upcomingSessions`
// from the start of the day, so a session stays listed while it runs), the ones
// opened recently on this device, and any session by its id.

import { ApiError, currentAuth, gql } from "../api";
import { type Cleanup, fill, formatTime, h } from "../dom";
import { go } from "../nav";

export interface SessionInfo {
  id: string;
  title: string;
  start: string;
  end: string;
  timeZone: string;
  status: string;
}

const FIELDS = "id title start end timeZone status";
const RECENT_KEY = "attendwise.recent-sessions";
const RECENT_MAX = 5;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function rememberSession(id: string): void {
  const recent = recentSessions().filter((s) => s !== id);
  localStorage.setItem(RECENT_KEY, JSON.stringify([id, ...recent].slice(0, RECENT_MAX)));
}

function recentSessions(): string[] {
  try {
    const ids = JSON.parse(localStorage.getItem(RECENT_KEY) ?? "[]");
    return Array.isArray(ids) ? ids.filter((i) => typeof i === "string" && UUID.test(i)) : [];
  } catch {
    return [];
  }
}

export async function loadSession(id: string): Promise<SessionInfo | null> {
  const data = await gql<{ session: SessionInfo | null }>(`query($id: ID!) { session(id: $id) { ${FIELDS} } }`, { id });
  return data.session;
}

function sessionItem(s: SessionInfo): HTMLElement {
  const when = `${formatTime(s.start, s.timeZone)} – ${formatTime(s.end, s.timeZone).split(", ").pop()}`;
  return h(
    "li",
    { class: "session", "data-session": s.id },
    h("div", {}, h("strong", {}, s.title), h("br"), h("span", { class: "muted" }, when, s.status === "cancelled" ? " · cancelled" : "")),
    h(
      "div",
      { class: "actions" },
      h("a", { href: `#/sessions/${s.id}`, class: "button", "aria-label": `Dashboard: ${s.title}` }, "Dashboard"),
      h("a", { href: `#/kiosk/${s.id}`, class: "button", "aria-label": `Kiosk: ${s.title}` }, "Kiosk"),
    ),
  );
}

export function sessionsPage(root: HTMLElement): Cleanup {
  const auth = currentAuth();
  const upcoming = h("ul", { class: "sessions", id: "upcoming", "aria-busy": "true" });
  const recent = h("ul", { class: "sessions", id: "recent" });
  const recentBlock = h("section", { hidden: true }, h("h2", {}, "Opened recently"), recent);
  const status = h("p", { class: "muted", role: "status" }, "Loading…");
  const idInput = h("input", { id: "session-id", name: "session", required: true, pattern: "[0-9a-fA-F-]{36}", title: "a session id (a UUID)", placeholder: "00000000-0000-…", autocomplete: "off" });
  const openForm = h(
    "form",
    { class: "inline" },
    h("label", { for: "session-id" }, "Session id"),
    idInput,
    h("button", { type: "submit" }, "Open dashboard"),
  );
  openForm.addEventListener("submit", (e) => {
    e.preventDefault();
    go(`#/sessions/${idInput.value.trim()}`);
  });
  root.append(
    h("h1", { tabindex: -1 }, "My sessions"),
    h("section", {}, h("h2", {}, "Sessions I host, today and later"), status, upcoming),
    recentBlock,
    h("section", {}, h("h2", {}, "Another session"), openForm),
  );
  let alive = true;
  (async () => {
    try {
      const data = await gql<{ upcomingSessions: { edges: { node: SessionInfo }[] } }>(
        `query($u: ID!, $from: String) { upcomingSessions(userId: $u, first: 50, from: $from) { edges { node { ${FIELDS} } } } }`,
        { u: auth?.userId, from: new Date(new Date().setHours(0, 0, 0, 0)).toISOString() },
      );
      if (!alive) return;
      const nodes = data.upcomingSessions.edges.map((e) => e.node);
      fill(upcoming, nodes.map(sessionItem));
      status.textContent = nodes.length ? `${nodes.length} today or later` : "You host no session today or later.";
    } catch (e) {
      if (alive) status.textContent = `Could not load your sessions (${e instanceof ApiError ? e.code : "OFFLINE"}).`;
    } finally {
      upcoming.removeAttribute("aria-busy");
    }
    const ids = recentSessions();
    const found = await Promise.all(ids.map((id) => loadSession(id).catch(() => null)));
    if (!alive) return;
    const shown = found.filter((s): s is SessionInfo => s !== null);
    fill(recent, shown.map(sessionItem));
    recentBlock.hidden = shown.length === 0;
  })();
  return () => {
    alive = false;
  };
}
