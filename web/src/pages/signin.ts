// Sign in with the identity API (POST /auth/token, password grant).

import { ApiError, signIn } from "../api";
import { type Cleanup, h } from "../dom";

export function signInPage(root: HTMLElement, wanted: string | null): Cleanup {
  const error = h("p", { class: "error", role: "alert", id: "signin-error" });
  const email = h("input", { type: "email", name: "email", id: "email", autocomplete: "username", required: true, "data-autofocus": true });
  const password = h("input", { type: "password", name: "password", id: "password", autocomplete: "current-password", required: true, minlength: 10 });
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h(
    "form",
    { class: "card narrow", "aria-describedby": "signin-error" },
    h("label", { for: "email" }, "Email"),
    email,
    h("label", { for: "password" }, "Password"),
    password,
    error,
    submit,
  );
  let alive = true;
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.textContent = "";
    submit.disabled = true;
    submit.textContent = "Signing in…";
    try {
      await signIn(email.value.trim(), password.value);
    } catch (err) {
      if (!alive) return;
      const code = err instanceof ApiError ? err.code : "OFFLINE";
      error.textContent =
        code === "INVALID_CREDENTIALS"
          ? "That email and password do not match an account."
          : code === "RATE_LIMITED"
            ? "Too many attempts: wait a minute and try again."
            : `Could not sign in (${code}).`;
      submit.disabled = false;
      submit.textContent = "Sign in";
      password.focus();
    }
  });
  root.append(
    h("h1", { tabindex: -1 }, "Sign in"),
    h(
      "p",
      { class: "lead" },
      wanted
        ? "Sign in to open this page."
        : "Hosts watch check-ins arrive and run the door's kiosk here; members enrol their face.",
    ),
    form,
  );
  return () => {
    alive = false;
  };
}
