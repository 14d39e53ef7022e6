// The console's router: `#/` sign in or my sessions, `#/sessions/<id>` the
// live dashboard, `#/kiosk/<id>` the check-in kiosk, `#/enrol` face enrolment.
// Hash routes keep every path on the server for the API.

import "./style.css";
import { currentAuth, onAuthChange, signOut } from "./api";
import { type Cleanup, fill, h } from "./dom";
import { dashboardPage } from "./pages/dashboard";
import { enrolPage } from "./pages/enrol";
import { kioskPage } from "./pages/kiosk";
import { go } from "./nav";
import { sessionsPage } from "./pages/sessions";
import { signInPage } from "./pages/signin";

const main = document.getElementById("main") as HTMLElement;
const top = document.getElementById("top") as HTMLElement;
let cleanup: Cleanup | null = null;

function header(path: string): void {
  const auth = currentAuth();
  const link = (href: string, text: string) =>
    h("a", { href, "aria-current": path === href.slice(1) ? "page" : undefined }, text);
  fill(
    top,
    h("a", { href: "#/", class: "brand" }, "AttendWise"),
    auth
      ? h(
          "nav",
          { "aria-label": "Main" },
          link("#/", "My sessions"),
          link("#/enrol", "Enrol my face"),
          h("span", { class: "who" }, auth.displayName ?? auth.email),
          h("button", { type: "button", class: "link", onclick: () => (signOut(), go("#/")) }, "Sign out"),
        )
      : null,
  );
}

function render(): void {
  cleanup?.();
  cleanup = null;
  const path = location.hash.replace(/^#/, "") || "/";
  header(path);
  main.replaceChildren();
  const signedIn = currentAuth() !== null;
  const [, page, id] = path.split("/");
  if (!signedIn) cleanup = signInPage(main, page ? path : null);
  else if (page === "sessions" && id) cleanup = dashboardPage(main, decodeURIComponent(id));
  else if (page === "kiosk" && id) cleanup = kioskPage(main, decodeURIComponent(id));
  else if (page === "enrol") cleanup = enrolPage(main);
  else cleanup = sessionsPage(main);
  document.title = `${main.querySelector("h1")?.textContent ?? "Console"} · AttendWise`;
  const first = main.querySelector<HTMLElement>("[data-autofocus]") ?? main.querySelector<HTMLElement>("h1");
  first?.focus();
}

window.addEventListener("hashchange", render);
let wasSignedIn = currentAuth() !== null;
onAuthChange((auth) => {
  if ((auth !== null) !== wasSignedIn) {
    wasSignedIn = auth !== null;
    render();
  } else header(location.hash.replace(/^#/, "") || "/");
});
document.getElementById("skip")?.addEventListener("click", (e) => {
  e.preventDefault();
  main.focus();
});
render();
