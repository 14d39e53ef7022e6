// Face enrolment through the liveness challenge: GET /users/enroll-challenge,
// then one frame per challenge to POST /users/me/enroll-face, with retry or
// continue after each, then success.

import { ApiError, json } from "../api";
import { cameraError, startCamera, stopCamera, takePhoto } from "../camera";
import { type Cleanup, fill, h } from "../dom";
import { describeFrameReason } from "../reasons";

interface Challenge {
  session_id: string;
  challenges: string[];
  nonce: string;
  expires_at: string;
}

interface FrameOut {
  status: "CHALLENGE_FAILED_RETRY" | "CHALLENGE_PASSED_CONTINUE" | "ENROLLED";
  challenge: string | null;
  reason: string | null;
}

const ASK: Record<string, string> = {
  front: "Look straight at the camera",
  turn_left: "Turn your head to your left",
  turn_right: "Turn your head to your right",
  smile: "Smile",
};

export function enrolPage(root: HTMLElement): Cleanup {
  const steps = h("ol", { class: "steps", id: "steps" });
  const instruction = h("p", { class: "instruction", id: "instruction" }, "Enrol your face once; kiosks then recognise you at check-in.");
  const video = h("video", { class: "preview", muted: true, playsInline: true, autoplay: true, "aria-hidden": "true" });
  const stage = h("div", { class: "stage small", hidden: true }, video);
  const capture = h("button", { type: "button", class: "primary", hidden: true, onclick: () => void snap() }, "Capture");
  const file = h("input", { type: "file", id: "photo", accept: "image/jpeg,image/png,image/webp", capture: "user" });
  const fileField = h("div", { class: "field", hidden: true }, h("label", { for: "photo" }, "Or use a photo"), file);
  const result = h("div", { class: "result", id: "result", role: "status", "aria-live": "polite" });
  const start = h("button", { type: "button", class: "primary", "data-autofocus": true, onclick: () => void begin() }, "Start");
  const cameraNote = h("p", { class: "muted" });
  root.append(
    h("h1", { tabindex: -1 }, "Enrol my face"),
    instruction,
    steps,
    stage,
    cameraNote,
    h("div", { class: "actions" }, start, capture),
    fileField,
    result,
  );

  let alive = true;
  let current: Challenge | null = null;
  let index = 0;
  let busy = false;
  file.addEventListener("change", () => {
    const chosen = file.files?.[0];
    file.value = "";
    if (chosen) void upload(chosen);
  });

  function drawSteps(): void {
    if (!current) return;
    fill(
      steps,
      current.challenges.map((c, i) =>
        h("li", { "data-challenge": c, class: i < index ? "done" : i === index ? "current" : "", "aria-current": i === index ? "step" : undefined },
          ASK[c] ?? c, i < index ? h("span", { class: "tick", "aria-label": "done" }, " ✓") : null),
      ),
    );
  }

  function ask(): void {
    if (!current) return;
    drawSteps();
    const challenge = current.challenges[index];
    instruction.textContent = `Step ${index + 1} of ${current.challenges.length}: ${ASK[challenge] ?? challenge}`;
    instruction.dataset.challenge = challenge;
    capture.hidden = !video.srcObject;
    fileField.hidden = false;
    capture.disabled = false;
    file.disabled = false;
    fill(result);
    result.removeAttribute("data-status");
  }

  async function begin(): Promise<void> {
    start.hidden = true;
    fill(result, "Starting…");
    try {
      current = await json<Challenge>("/users/enroll-challenge");
    } catch (e) {
      return failed(e);
    }
    if (!alive) return;
    index = 0;
    if (!video.srcObject) {
      try {
        await startCamera(video);
        stage.hidden = false;
        cameraNote.textContent = "";
      } catch (e) {
        cameraNote.textContent = `${cameraError(e)} You can use a photo instead.`;
      }
    }
    if (alive) ask();
  }

  async function snap(): Promise<void> {
    try {
      await upload(await takePhoto(video));
    } catch (e) {
      failed(e);
    }
  }

  async function upload(image: Blob): Promise<void> {
    if (!current || busy) return;
    busy = true;
    capture.disabled = true;
    file.disabled = true;
    fill(result, "Checking the picture…");
    const form = new FormData();
    form.set("session_id", current.session_id);
    form.set("nonce", current.nonce);
    form.set("mirrored", "false"); // camera frames are sent as the camera sees them
    form.set("image", image, "frame.jpg");
    try {
      const out = await json<FrameOut>("/users/me/enroll-face", { method: "POST", body: form });
      if (!alive) return;
      result.dataset.status = out.status;
      if (out.status === "ENROLLED") return done();
      if (out.status === "CHALLENGE_PASSED_CONTINUE") {
        index = Math.max(index + 1, current.challenges.indexOf(out.challenge ?? ""));
        drawSteps();
        const go = h("button", { type: "button", class: "primary", onclick: () => ask() }, "Continue");
        fill(result, h("p", { class: "ok" }, "Passed."), go);
        capture.hidden = true;
        fileField.hidden = true;
        go.focus();
      } else {
        const again = h("button", { type: "button", class: "primary", onclick: () => ask() }, "Retry");
        fill(result, h("p", { class: "error" }, `Not quite: ${describeFrameReason(out.reason)}`), again);
        result.dataset.reason = out.reason ?? "";
        capture.hidden = true;
        fileField.hidden = true;
        again.focus();
      }
    } catch (e) {
      failed(e);
    } finally {
      busy = false;
    }
  }

  function done(): void {
    index = current?.challenges.length ?? 0;
    drawSteps();
    stopCamera(video);
    stage.hidden = true;
    capture.hidden = true;
    fileField.hidden = true;
    instruction.textContent = "All done.";
    const home = h("a", { href: "#/", class: "button" }, "Back to my sessions");
    fill(result, h("p", { class: "success" }, "Your face is enrolled. Kiosks can now check you in by face."), home);
    home.focus();
  }

  function failed(e: unknown): void {
    const message = e instanceof ApiError ? `${e.message} (${e.code})` : (e as Error).message;
    const again = h("button", { type: "button", class: "primary", onclick: () => void begin() }, "Start again");
    fill(result, h("p", { class: "error" }, message), again);
    result.dataset.status = "ERROR";
    capture.hidden = true;
    fileField.hidden = true;
    current = null;
    again.focus();
  }

  return () => {
    alive = false;
    stopCamera(video);
  };
}
