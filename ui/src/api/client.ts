// Fetch wrapper over the same-origin API: the session cookie rides along, errors become ApiError.

/** The server's error envelope `{code, reason, message, field}` as a throwable. */
export class ApiError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

/** Called on any 401 so the app can send the user to the login page. */
let onUnauthorized: () => void = () => {};
export function setUnauthorizedHandler(handler: () => void): void {
  onUnauthorized = handler;
}

async function toError(res: Response): Promise<ApiError> {
  const text = await res.text();
  try {
    const body = JSON.parse(text) as { code?: number; reason?: string; message?: string; field?: string };
    return new ApiError(res.status, body.reason ?? "Error", body.message ?? text, body.field ?? undefined);
  } catch {
    return new ApiError(res.status, res.statusText, text || `HTTP ${res.status}`);
  }
}

/** Any request; resolves to the raw Response when it succeeded, throws ApiError otherwise. */
export async function send(path: string, init: RequestInit = {}): Promise<Response> {
  const res = await fetch(path, { credentials: "same-origin", ...init });
  if (res.ok) return res;
  if (res.status === 401 && !path.startsWith("/auth/")) onUnauthorized();
  throw await toError(res);
}

export async function getJson<T>(path: string): Promise<T> {
  return (await send(path)).json() as Promise<T>;
}

function withBody(method: string, body: unknown): RequestInit {
  return { method, headers: { "content-type": "application/json" }, body: JSON.stringify(body) };
}

export async function postJson<T>(path: string, body: unknown): Promise<T> {
  return (await send(path, withBody("POST", body))).json() as Promise<T>;
}

export async function putJson<T>(path: string, body: unknown): Promise<T> {
  return (await send(path, withBody("PUT", body))).json() as Promise<T>;
}

export async function del(path: string): Promise<void> {
  await send(path, { method: "DELETE" });
}

export async function login(username: string, password: string): Promise<void> {
  await send("/auth/login", { method: "POST", body: new URLSearchParams({ username, password }) });
}

export async function logout(): Promise<void> {
  await send("/auth/logout", { method: "POST" });
}

/** A message for any thrown value. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
