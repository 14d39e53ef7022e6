// A tiny element builder: text goes in as text nodes, never as HTML.

type Child = Node | string | number | null | undefined | false;
type Props = Record<string, unknown>;

function apply(el: Element, props: Props): void {
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value as EventListener);
    } else if (key === "class") {
      el.setAttribute("class", String(value));
    } else if (key in el && !key.includes("-") && typeof value !== "string") {
      (el as unknown as Record<string, unknown>)[key] = value; // properties: checked, disabled, value as non-strings
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
}

function append(el: Element, children: (Child | Child[])[]): void {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Props = {},
  ...children: (Child | Child[])[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  apply(el, props);
  append(el, children);
  return el;
}

const SVG = "http://www.w3.org/2000/svg";

export function svg<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | number> = {},
  ...children: (Child | Child[])[]
): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  append(el, children);
  return el;
}

/** Replace an element's content. */
export function fill(el: Element, ...children: (Child | Child[])[]): void {
  el.replaceChildren();
  append(el, children);
}

/** A page's cleanup: timers, sockets, cameras. */
export type Cleanup = () => void;

export function formatTime(iso: string, timeZone?: string, withDate = true): string {
  const when = new Date(iso);
  if (Number.isNaN(when.getTime())) return iso;
  const opts: Intl.DateTimeFormatOptions = withDate
    ? { weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit", hourCycle: "h23" }
    : { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" };
  try {
    return new Intl.DateTimeFormat(undefined, { ...opts, timeZone }).format(when);
  } catch {
    return new Intl.DateTimeFormat(undefined, opts).format(when);
  }
}
