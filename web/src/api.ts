// The console's link to the API: the signed-in user's tokens (localStorage,
// shared by the console's tabs), fetch with Bearer auth and one refresh on an
// expired token, problem+json errors as ApiError, and GraphQL.

export interface Auth {
  accessToken: string;
  refreshToken: string;
  /** epoch ms when the access token expires */
  expiresAt: number;
  userId: string;
  email: string;
  displayName?: string;
}

interface TokenOut {
  access_token: string;
  refresh_token: string;
  expires_in: number;
  user_id: string;
}

const KEY = "attendwise.auth";
const AUTH_CODES = new Set(["TOKEN_INVALID", "TOKEN_EXPIRED", "TOKEN_REVOKED", "REFRESH_TOKEN_REUSED"]);
const listeners = new Set<(a: Auth | null) => void>();

/** An error answer (problem+json, or a GraphQL error) with its stable code. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

export function currentAuth(): Auth | null {
  try {
    const raw = localStorage.getItem(KEY);
    return raw ? (JSON.parse(raw) as Auth) : null;
  } catch {
    return null;
  }
}

export function saveAuth(auth: Auth | null): void {
  if (auth) localStorage.setItem(KEY, JSON.stringify(auth));
  else localStorage.removeItem(KEY);
  for (const listen of listeners) listen(auth);
}

export function onAuthChange(listen: (a: Auth | null) => void): void {
  listeners.add(listen);
}

window.addEventListener("storage", (e) => {
  if (e.key === KEY) for (const listen of listeners) listen(currentAuth());
});

function fromTokens(t: TokenOut, email: string, displayName?: string): Auth {
  return {
    accessToken: t.access_token,
    refreshToken: t.refresh_token,
    expiresAt: Date.now() + t.expires_in * 1000,
    userId: t.user_id,
    email,
    displayName,
  };
}

async function problem(r: Response): Promise<ApiError> {
  let code = `HTTP_${r.status}`;
  let message = r.statusText || "request failed";
  let field: string | undefined;
  try {
    const body = await r.json();
    code = body.code ?? code;
    message = body.detail && body.detail !== "see errors" ? `${body.title}: ${body.detail}` : body.title ?? message;
    field = body.errors?.[0]?.field;
  } catch {
    /* not JSON */
  }
  return new ApiError(r.status, code, message, field);
}

async function tokenRequest(form: Record<string, string>): Promise<TokenOut> {
  const r = await fetch("/auth/token", { method: "POST", body: new URLSearchParams(form) });
  if (!r.ok) throw await problem(r);
  return (await r.json()) as TokenOut;
}

export async function signIn(email: string, password: string): Promise<Auth> {
  const tokens = await tokenRequest({ grant_type: "password", username: email, password });
  let auth = fromTokens(tokens, email);
  saveAuth(auth);
  const me = await json<{ display_name: string }>("/me");
  auth = { ...auth, displayName: me.display_name };
  saveAuth(auth);
  return auth;
}

export function signOut(): void {
  saveAuth(null);
}

/** A new access token from the refresh token, once for all tabs: a refresh
 * token works once, and presenting it twice ends the login. */
async function refresh(stale: string): Promise<Auth | null> {
  const run = async (): Promise<Auth | null> => {
    const auth = currentAuth();
    if (!auth) return null;
    if (auth.accessToken !== stale) return auth; // another tab refreshed meanwhile
    try {
      const tokens = await tokenRequest({ grant_type: "refresh_token", refresh_token: auth.refreshToken });
      const next = fromTokens(tokens, auth.email, auth.displayName);
      saveAuth(next);
      return next;
    } catch (e) {
      if (e instanceof ApiError && e.status < 500) saveAuth(null);
      throw e;
    }
  };
  if (navigator.locks) return navigator.locks.request("attendwise-refresh", run);
  return run();
}

/** An access token valid for at least another 30 seconds (for WebSockets). */
export async function freshToken(): Promise<string> {
  const auth = currentAuth();
  if (!auth) throw new ApiError(401, "TOKEN_INVALID", "sign in first");
  if (auth.expiresAt - Date.now() > 30_000) return auth.accessToken;
  const next = await refresh(auth.accessToken);
  if (!next) throw new ApiError(401, "TOKEN_INVALID", "sign in again");
  return next.accessToken;
}

/** Refresh after the server refused `token` as expired or invalid. */
export async function renewAfterRefusal(token: string): Promise<string | null> {
  try {
    return (await refresh(token))?.accessToken ?? null;
  } catch {
    return null;
  }
}

/** fetch with the access token; on an expired one, refresh and try once more. */
export async function request(path: string, init: RequestInit = {}): Promise<Response> {
  const auth = currentAuth();
  const send = (token: string | undefined) => {
    const headers = new Headers(init.headers);
    if (token) headers.set("Authorization", `Bearer ${token}`);
    return fetch(path, { ...init, headers });
  };
  const r = await send(auth?.accessToken);
  if (r.status !== 401 || !auth) return r;
  const refused = await problem(r.clone());
  if (!AUTH_CODES.has(refused.code)) return r;
  const token = await renewAfterRefusal(auth.accessToken);
  return token ? send(token) : r;
}

/** The JSON answer, or an ApiError. */
export async function json<T>(path: string, init: RequestInit = {}): Promise<T> {
  const r = await request(path, init);
  if (!r.ok) throw await problem(r);
  if (r.status === 204) return undefined as T;
  return (await r.json()) as T;
}

export { problem as readProblem };

interface GraphQLAnswer<T> {
  data?: T;
  errors?: { message: string; extensions?: { code?: string } }[];
}

export async function gql<T>(query: string, variables: Record<string, unknown> = {}): Promise<T> {
  const call = () =>
    request("/graphql", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ query, variables }),
    });
  let r = await call();
  let body = (await r.json()) as GraphQLAnswer<T>;
  const code = body.errors?.[0]?.extensions?.code ?? "";
  const auth = currentAuth();
  if (AUTH_CODES.has(code) && auth && (await renewAfterRefusal(auth.accessToken))) {
    r = await call();
    body = (await r.json()) as GraphQLAnswer<T>;
  }
  if (body.errors?.length) {
    const first = body.errors[0];
    throw new ApiError(r.status, first.extensions?.code ?? "GRAPHQL_ERROR", first.message);
  }
  if (!r.ok || !body.data) throw new ApiError(r.status, `HTTP_${r.status}`, "the query failed");
  return body.data;
}
