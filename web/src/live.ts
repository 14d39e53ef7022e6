// The live dashboard's WebSocket (`/sessions/{id}/live`, api/live.py): a
// snapshot first, then every change with its sequence number. After a drop it
// reconnects with `?after=<last seq>`, so nothing is missed or repeated.

import { freshToken, renewAfterRefusal } from "./api";

export interface Stats {
  expected: number;
  checked_in: number;
  failed: number;
  pending: number;
  conflicts: number;
  inside: number;
  inside_by_gate: Record<string, number>;
  rate_per_minute: number;
}

export interface Snapshot {
  type: "snapshot";
  seq: number;
  stats: Stats;
}

export interface Change {
  type: "change";
  seq: number;
  kind: string;
  user_id?: string | null;
  checkin_id?: string | null;
  gate?: string | null;
  direction?: string | null;
  reason?: string | null;
  by?: string | null;
  at?: string | null;
  stats: Stats;
}

export type LinkState =
  | { state: "connecting"; attempt: number }
  | { state: "live"; resumed: boolean }
  | { state: "waiting"; retryIn: number; attempt: number }
  | { state: "stopped"; code: string; message: string };

export interface LiveHandlers {
  snapshot(message: Snapshot): void;
  change(message: Change): void;
  state(state: LinkState): void;
}

const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 10000];
const REFUSED: Record<number, string> = { 4403: "FORBIDDEN", 4404: "NOT_FOUND" };

export class LiveLink {
  private socket: WebSocket | null = null;
  private lastSeq: number | null = null;
  private attempt = 0;
  private timer: number | undefined;
  private closed = false;
  private renewed = false;

  constructor(
    private readonly sessionId: string,
    private readonly on: LiveHandlers,
  ) {
    window.addEventListener("online", this.reconnectNow);
  }

  /** The last sequence number received (what a reconnect resumes after). */
  get seq(): number | null {
    return this.lastSeq;
  }

  start(): void {
    void this.connect();
  }

  stop(): void {
    this.closed = true;
    window.removeEventListener("online", this.reconnectNow);
    window.clearTimeout(this.timer);
    this.socket?.close(1000, "page closed");
    this.socket = null;
  }

  private reconnectNow = (): void => {
    if (this.closed || this.socket) return;
    window.clearTimeout(this.timer);
    void this.connect();
  };

  private async connect(): Promise<void> {
    this.timer = undefined;
    if (this.closed) return;
    this.on.state({ state: "connecting", attempt: this.attempt });
    let token: string;
    try {
      token = await freshToken();
    } catch (e) {
      this.on.state({ state: "stopped", code: "TOKEN_INVALID", message: (e as Error).message });
      return;
    }
    if (this.closed) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = new URLSearchParams({ access_token: token });
    if (this.lastSeq !== null) query.set("after", String(this.lastSeq));
    const url = `${scheme}//${location.host}/sessions/${encodeURIComponent(this.sessionId)}/live?${query}`;
    const socket = new WebSocket(url);
    this.socket = socket;
    let refusal: { code: string; message: string } | null = null;
    socket.onopen = () => {
      if (this.lastSeq !== null) this.on.state({ state: "live", resumed: true });
    };
    socket.onmessage = (event) => {
      const message = JSON.parse(String(event.data));
      if (message.type === "error") {
        refusal = { code: message.code, message: message.message };
        return;
      }
      this.attempt = 0;
      this.renewed = false;
      if (message.type === "snapshot") {
        this.lastSeq = message.seq;
        this.on.state({ state: "live", resumed: false });
        this.on.snapshot(message as Snapshot);
      } else if (message.type === "change" && (this.lastSeq === null || message.seq > this.lastSeq)) {
        this.lastSeq = message.seq;
        this.on.change(message as Change);
      }
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.closed) return;
      void this.closedWith(event.code, token, refusal);
    };
  }

  private async closedWith(code: number, token: string, refusal: { code: string; message: string } | null) {
    if (code === 4401 && !this.renewed) {
      this.renewed = true; // the token expired: renew it once, then reconnect at once
      if (await renewAfterRefusal(token)) return this.connect();
    }
    if (code === 4422) this.lastSeq = null; // a resume point the server does not know: start from a snapshot
    else if (code >= 4400 && code < 4500) {
      const fallback = REFUSED[code] ?? (code === 4401 ? "TOKEN_INVALID" : `CLOSED_${code}`);
      this.on.state({ state: "stopped", code: refusal?.code ?? fallback, message: refusal?.message ?? "refused" });
      return;
    }
    const wait = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt += 1;
    this.on.state({ state: "waiting", retryIn: wait, attempt: this.attempt });
    this.timer = window.setTimeout(() => void this.connect(), wait);
  }
}
