// The device camera (getUserMedia): a preview, frames for the QR reader, photos.

export async function startCamera(video: HTMLVideoElement): Promise<MediaStream> {
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new Error("this browser gives no camera here (a camera needs HTTPS, or localhost)");
  }
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: false,
    video: { facingMode: "user", width: { ideal: 1280 }, height: { ideal: 720 } },
  });
  video.srcObject = stream;
  video.muted = true;
  video.playsInline = true;
  await video.play();
  return stream;
}

export function stopCamera(video: HTMLVideoElement): void {
  const stream = video.srcObject as MediaStream | null;
  stream?.getTracks().forEach((t) => t.stop());
  video.srcObject = null;
}

export function cameraError(e: unknown): string {
  const name = (e as { name?: string }).name;
  if (name === "NotAllowedError") return "The camera is blocked: allow it in the browser's site settings.";
  if (name === "NotFoundError" || name === "OverconstrainedError") return "No camera was found on this device.";
  if (name === "NotReadableError") return "The camera is in use by another app.";
  return (e as Error).message || String(e);
}

const scratch = document.createElement("canvas");

/** The middle square of the current frame (where the ticket is held), at most
 * `maxSide` pixels across, for the QR reader: a ticket's QR code is dense, so
 * it is read at the camera's own resolution where it can be. */
export function grabFrame(video: HTMLVideoElement, maxSide = 960): ImageData | null {
  const w = video.videoWidth;
  const h = video.videoHeight;
  if (!w || !h || video.readyState < HTMLMediaElement.HAVE_CURRENT_DATA) return null;
  const side = Math.min(w, h);
  const out = Math.min(side, maxSide);
  scratch.width = out;
  scratch.height = out;
  const ctx = scratch.getContext("2d", { willReadFrequently: true });
  if (!ctx) return null;
  ctx.drawImage(video, (w - side) / 2, (h - side) / 2, side, side, 0, 0, out, out);
  return ctx.getImageData(0, 0, out, out);
}

/** The current frame at full size as a JPEG (as the camera sees it, not mirrored). */
export function takePhoto(video: HTMLVideoElement): Promise<Blob> {
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d")?.drawImage(video, 0, 0);
  return new Promise((resolve, reject) =>
    canvas.toBlob((b) => (b ? resolve(b) : reject(new Error("the photo could not be taken"))), "image/jpeg", 0.92),
  );
}
