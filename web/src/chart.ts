// Check-ins per minute as a small hand-drawn SVG bar chart.

import { svg } from "./dom";

const MINUTE = 60_000;
const WIDTH = 600;
const HEIGHT = 170;
const PAD = { left: 28, right: 22, top: 14, bottom: 24 };
const HHMM: Intl.DateTimeFormatOptions = { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };

export function minuteOf(at: string | number | Date): number {
  return Math.floor(new Date(at).getTime() / MINUTE) * MINUTE;
}

/** Bars for the `minutes` minutes up to `now`, one per minute; `counts` maps a minute's start (epoch ms) to check-ins. */
export function perMinuteChart(counts: Map<number, number>, now = Date.now(), minutes = 30): SVGSVGElement {
  const last = minuteOf(now);
  const first = last - (minutes - 1) * MINUTE;
  const values: number[] = [];
  for (let m = first; m <= last; m += MINUTE) values.push(counts.get(m) ?? 0);
  const total = values.reduce((a, b) => a + b, 0);
  const peak = Math.max(1, ...values);
  const innerW = WIDTH - PAD.left - PAD.right;
  const innerH = HEIGHT - PAD.top - PAD.bottom;
  const slot = innerW / minutes;
  const label = `${total} check-in${total === 1 ? "" : "s"} in the last ${minutes} minutes; at most ${Math.max(...values)} in one minute`;
  const chart = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": label, class: "chart" });
  chart.append(svg("title", {}, label));
  const axisY = PAD.top + innerH;
  chart.append(svg("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: axisY, y2: axisY, class: "axis" }));
  chart.append(svg("text", { x: PAD.left - 6, y: PAD.top + 4, "text-anchor": "end", class: "tick" }, String(peak)));
  chart.append(svg("text", { x: PAD.left - 6, y: axisY, "text-anchor": "end", class: "tick" }, "0"));
  values.forEach((n, i) => {
    const x = PAD.left + i * slot + slot * 0.15;
    const start = new Date(first + i * MINUTE);
    if (n > 0) {
      const barH = (n / peak) * innerH;
      const bar = svg("rect", { x, y: axisY - barH, width: slot * 0.7, height: barH, rx: 2, class: "bar", "data-count": n });
      bar.append(svg("title", {}, `${start.toLocaleTimeString([], HHMM)}: ${n}`));
      chart.append(bar);
      chart.append(svg("text", { x: x + slot * 0.35, y: axisY - barH - 3, "text-anchor": "middle", class: "count" }, String(n)));
    }
    if ((minutes - 1 - i) % 5 === 0) {
      const text = start.toLocaleTimeString([], HHMM);
      chart.append(svg("text", { x: x + slot * 0.35, y: HEIGHT - 6, "text-anchor": "middle", class: "tick" }, text));
    }
  });
  return chart;
}
