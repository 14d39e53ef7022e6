// The door's kiosk (signed in as one of the session's hosts): reads the
// member's QR code from the camera, takes their photo when the session checks
// faces, sends POST /checkin, shows the verdict in large text, and is ready
// for the next person 1.5 seconds later.

import jsQR from "jsqr";
import { ApiError, gql, readProblem, request } from "../api";
import { cameraError, grabFrame, startCamera, stopCamera, takePhoto } from "../camera";
import { type Cleanup, formatTime, h } from "../dom";
import { describeReason } from "../reasons";
import { loadSession, rememberSession } from "./sessions";

type Phase = "idle" | "scanning" | "face" | "sending" | "verdict";
type Outcome = "succeeded" | "failed" | "pending";

interface KioskSettings {
  deviceId: string;
  gate: string;
  direction: "in" | "out";
  face: boolean;
}

interface ScanOut {
  checkin_id: string;
  user_id: string;
  outcome: "succeeded" | "failed" | "pending" | "conflict" | "annulled";
  reason: string;
}

const SETTINGS_KEY = "attendwise.kiosk";
const TICK_MS = 150; // between QR reads
const VERDICT_MS = 1500; // the verdict stays this long, then the next person may scan
const FACE_SETTLE_MS = 700; // after the QR: the ticket is lowered, the face is in view
const FACE_MAX_WAIT_MS = 5000;
const SAME_TICKET_MS = 60_000; // a ticket just admitted is not sent again while still in view
const RECENT = 6;

function loadSettings(): KioskSettings {
  const fallback: KioskSettings = { deviceId: `kiosk-${Math.random().toString(36).slice(2, 6)}`, gate: "main", direction: "in", face: true };
  try {
    return { ...fallback, ...JSON.parse(localStorage.getItem(SETTINGS_KEY) ?? "{}") };
  } catch {
    return fallback;
  }
}

export function kioskPage(root: HTMLElement, sessionId: string): Cleanup {
  const settings = loadSettings();
  const save = () => localStorage.setItem(SETTINGS_KEY, JSON.stringify(settings));
  save();

  const title = h("h1", { tabindex: -1 }, "Kiosk");
  const video = h("video", { class: "preview", muted: true, playsInline: true, autoplay: true, "aria-hidden": "true" });
  const prompt = h("p", { class: "prompt", id: "prompt" }, "Starting the camera…");
  const headline = h("p", { class: "headline" });
  const detail = h("p", { class: "detail" });
  const verdict = h("div", { class: "verdict", id: "verdict", role: "status", "aria-live": "assertive", hidden: true }, headline, detail);
  const stage = h("div", { class: "stage", id: "kiosk", "data-phase": "idle" }, video, prompt, verdict);
  const next = h("button", { type: "button", class: "primary", hidden: true, onclick: () => ready() }, "Next person");
  const cameraButton = h("button", { type: "button", onclick: () => void toggleCamera() }, "Stop camera");
  const cameraNote = h("p", { class: "error", role: "alert" });
  const hint = h("p", { class: "muted", role: "status", id: "kiosk-hint" });
  const recent = h("ol", { class: "recent", id: "recent-verdicts" });

  const manual = h("input", { id: "ticket-code", name: "token", autocomplete: "off", spellcheck: false, required: true });
  const manualForm = h(
    "form",
    { class: "inline" },
    h("label", { for: "ticket-code" }, "Ticket code"),
    manual,
    h("button", { type: "submit" }, "Check in"),
  );
  manualForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const token = manual.value.trim();
    manual.value = "";
    if (token && (phase === "scanning" || phase === "idle")) onTicket(token);
  });

  const field = (id: string, label: string, input: HTMLElement) => h("div", { class: "field" }, h("label", { for: id }, label), input);
  const device = h("input", { id: "device-id", value: settings.deviceId, maxlength: 100, required: true });
  const gate = h("input", { id: "gate", value: settings.gate, maxlength: 100, required: true });
  const direction = h("select", { id: "direction" }, h("option", { value: "in" }, "Entry"), h("option", { value: "out" }, "Exit"));
  direction.value = settings.direction;
  const face = h("input", { id: "face", type: "checkbox", checked: settings.face });
  device.addEventListener("change", () => ((settings.deviceId = device.value.trim() || settings.deviceId), save()));
  gate.addEventListener("change", () => ((settings.gate = gate.value.trim() || "main"), save()));
  direction.addEventListener("change", () => ((settings.direction = direction.value as "in" | "out"), save()));
  face.addEventListener("change", () => ((settings.face = face.checked), save()));

  root.append(
    title,
    stage,
    h("div", { class: "kiosk-controls" }, next, cameraButton),
    cameraNote,
    hint,
    manualForm,
    h("details", { class: "settings" },
      h("summary", {}, "Kiosk settings"),
      field("device-id", "Device name", device),
      field("gate", "Gate", gate),
      field("direction", "Scans", direction),
      h("div", { class: "field check" }, face, h("label", { for: "face" }, "Take a face photo after the QR code"))),
    h("section", {}, h("h2", {}, "Recent"), recent),
  );

  let alive = true;
  let phase: Phase = "idle";
  let cameraOn = false;
  let timer: number | undefined;
  let verdictTimer: number | undefined;
  let token = "";
  let faceSince = 0;
  let gone = 0;
  let lastAdmitted = { token: "", at: 0 };
  const names = new Map<string, string>();

  function setPhase(p: Phase, text?: string): void {
    phase = p;
    stage.dataset.phase = p;
    if (text !== undefined) prompt.textContent = text;
  }

  function ready(): void {
    if (!alive) return;
    window.clearTimeout(verdictTimer);
    verdict.hidden = true;
    next.hidden = true;
    token = "";
    stage.dataset.readyAt = String(Math.round(performance.now()));
    if (cameraOn) setPhase("scanning", "Show your ticket's QR code");
    else setPhase("idle", "Type or paste a ticket code below, or start the camera");
  }

  function onTicket(text: string): void {
    if (text === lastAdmitted.token && Date.now() - lastAdmitted.at < SAME_TICKET_MS) {
      hint.textContent = "That ticket was just checked in.";
      return;
    }
    hint.textContent = "";
    token = text;
    if (settings.face && cameraOn) {
      faceSince = performance.now();
      gone = 0;
      setPhase("face", "Got it. Lower your ticket and look at the camera");
    } else {
      void send(text, null);
    }
  }

  function tick(): void {
    if (!alive) return;
    if (cameraOn && (phase === "scanning" || phase === "face")) {
      const frame = grabFrame(video);
      const found = frame ? jsQR(frame.data, frame.width, frame.height, { inversionAttempts: "dontInvert" }) : null;
      const text = found?.data.trim() ?? "";
      if (phase === "scanning" && text) {
        onTicket(text);
      } else if (phase === "face") {
        gone = text === token ? 0 : gone + 1;
        const waited = performance.now() - faceSince;
        if ((gone >= 2 && waited >= FACE_SETTLE_MS) || waited >= FACE_MAX_WAIT_MS) void capture();
      }
    }
    timer = window.setTimeout(tick, TICK_MS);
  }

  async function capture(): Promise<void> {
    setPhase("sending", "Checking…");
    let photo: Blob;
    try {
      photo = await takePhoto(video);
    } catch (e) {
      return show("failed", "No photo", (e as Error).message);
    }
    await send(token, photo);
  }

  async function send(ticket: string, photo: Blob | null): Promise<void> {
    setPhase("sending", "Checking…");
    const form = new FormData();
    form.set("token", ticket);
    form.set("device_id", settings.deviceId);
    form.set("gate", settings.gate);
    form.set("direction", settings.direction);
    form.set("session_id", sessionId);
    if (photo) form.set("image", photo, "photo.jpg");
    let r: Response;
    try {
      r = await request("/checkin", { method: "POST", body: form });
    } catch {
      return show("failed", "Not checked in", describeReason("OFFLINE"));
    }
    if (!alive) return;
    if (r.ok) {
      const out = (await r.json()) as ScanOut;
      if (out.outcome === "succeeded") {
        lastAdmitted = { token: ticket, at: Date.now() };
        return show("succeeded", settings.direction === "out" ? "Goodbye" : "Welcome", "Checked in", out.user_id, out.reason);
      }
      if (out.outcome === "pending") {
        return show("pending", "Please wait", "The face check is still running: a host will confirm", out.user_id, out.reason);
      }
      return show("failed", "Not checked in", describeReason(out.reason), out.user_id, out.reason);
    }
    const refused = await readProblem(r);
    if (refused.code === "INVALID_INPUT" && refused.field === "image" && !photo) {
      settings.face = face.checked = true; // the session checks faces: this kiosk takes photos from now on
      save();
      if (cameraOn) {
        token = ticket;
        faceSince = performance.now();
        gone = 0;
        return setPhase("face", "This session checks faces. Lower your ticket and look at the camera");
      }
      return show("failed", "Photo needed", "This session checks faces: start the camera", undefined, refused.code);
    }
    show("failed", "Not checked in", describeReason(refused.code), undefined, refused.code);
  }

  function show(outcome: Outcome, big: string, small: string, userId?: string, code?: string): void {
    if (!alive) return;
    setPhase("verdict");
    verdict.className = `verdict ${outcome}`;
    verdict.dataset.outcome = outcome;
    verdict.dataset.reason = code ?? "";
    headline.textContent = userId && outcome === "succeeded" ? `${big}, ${names.get(userId) ?? ""}`.replace(/, $/, "") : big;
    detail.textContent = code && outcome !== "succeeded" ? `${small} (${code})` : small;
    verdict.hidden = false;
    next.hidden = false;
    stage.dataset.verdictAt = String(Math.round(performance.now()));
    const entry = h("li", { class: outcome, "data-outcome": outcome, "data-reason": code ?? "" },
      h("time", {}, formatTime(new Date().toISOString(), undefined, false)), " ", headline.textContent, " · ", detail.textContent);
    recent.prepend(entry);
    while (recent.children.length > RECENT) recent.lastElementChild?.remove();
    if (userId && !names.has(userId)) void learnName(userId, entry);
    verdictTimer = window.setTimeout(ready, VERDICT_MS);
  }

  async function learnName(userId: string, entry: HTMLElement): Promise<void> {
    try {
      const data = await gql<{ user: { displayName: string } | null }>("query($id: ID!) { user(id: $id) { displayName } }", { id: userId });
      if (!alive || !data.user) return;
      names.set(userId, data.user.displayName);
      if (phase === "verdict" && verdict.dataset.outcome === "succeeded" && !headline.textContent?.includes(",")) {
        headline.textContent = `${headline.textContent}, ${data.user.displayName}`;
      }
      entry.append(` · ${data.user.displayName}`);
    } catch {
      /* no name: the verdict stands without it */
    }
  }

  function onKey(e: KeyboardEvent): void {
    if (phase === "verdict" && (e.key === "Escape" || (e.key === "Enter" && e.target === document.body))) ready();
  }

  async function toggleCamera(): Promise<void> {
    if (cameraOn) {
      cameraOn = false;
      stopCamera(video);
      cameraButton.textContent = "Start camera";
      if (phase !== "verdict" && phase !== "sending") ready();
      return;
    }
    cameraNote.textContent = "";
    try {
      await startCamera(video);
      if (!alive) return stopCamera(video);
      cameraOn = true;
      cameraButton.textContent = "Stop camera";
    } catch (e) {
      cameraNote.textContent = cameraError(e);
      cameraButton.textContent = "Start camera";
    }
    if (phase !== "verdict" && phase !== "sending") ready();
  }

  document.addEventListener("keydown", onKey);
  (async () => {
    try {
      const session = await loadSession(sessionId);
      if (!alive) return;
      if (!session) {
        title.textContent = "No such session";
        return;
      }
      rememberSession(sessionId);
      title.textContent = `Kiosk: ${session.title}`;
      document.title = `${title.textContent} · AttendWise`;
    } catch (e) {
      hint.textContent = `Could not load the session (${e instanceof ApiError ? e.code : "OFFLINE"}).`;
    }
  })();
  void toggleCamera();
  tick();

  return () => {
    alive = false;
    window.clearTimeout(timer);
    window.clearTimeout(verdictTimer);
    document.removeEventListener("keydown", onKey);
    stopCamera(video);
  };
}
