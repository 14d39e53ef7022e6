// Moving between the console's pages (hash routes).

export function go(hash: string): void {
  if (location.hash === hash || (hash === "#/" && location.hash === "")) {
    window.dispatchEvent(new HashChangeEvent("hashchange"));
  } else {
    location.hash = hash;
  }
}
