// The node's HTTP API as the pages call it: the bearer token in the Authorization header (never a
// cookie), kept in sessionStorage (gone with the tab; never sent by the browser on its own), and
// every refusal turned into an ApiError with the node's code and reason. A 401 on a call made
// with a session ends that session: the page goes back to sign-in and says why.

const TOKEN_KEY = 'dicom-vault.session';

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export interface Session {
  token: string;
  expiresAt: string;
}

export function currentSession(): Session | undefined {
  const raw = sessionStorage.getItem(TOKEN_KEY);
  if (raw === null) return undefined;
  try {
    const s = JSON.parse(raw) as Session;
    return typeof s.token === 'string' ? s : undefined;
  } catch {
    return undefined;
  }
}

export function saveSession(s: Session): void {
  sessionStorage.setItem(TOKEN_KEY, JSON.stringify(s));
}

export function clearSession(): void {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** Called when a session is refused (expired, revoked): set by the page. */
let onSessionEnded: (reason: string) => void = () => undefined;
export function whenSessionEnds(handler: (reason: string) => void): void {
  onSessionEnded = handler;
}

async function errorOf(res: Response): Promise<ApiError> {
  let code = `HTTP_${res.status}`;
  let message = res.statusText;
  try {
    const body = (await res.json()) as { code?: string; message?: string; error?: string; error_description?: string };
    code = body.code ?? body.error ?? code;
    message = body.message ?? body.error_description ?? message;
  } catch {}
  return new ApiError(res.status, code, message);
}

export interface CallOptions {
  method?: string;
  body?: unknown;
  accept?: string;
  /** Without the session (enrollment, sign-in). */
  anonymous?: boolean;
  /** Use this token instead of the stored session (enrollment's short one). */
  token?: string;
}

/** A request to the node (same origin); the raw response when ok, else an ApiError. */
export async function request(path: string, options: CallOptions = {}): Promise<Response> {
  const token = options.token ?? (options.anonymous === true ? undefined : currentSession()?.token);
  const headers: Record<string, string> = { accept: options.accept ?? 'application/json' };
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
  if (options.body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(path, {
    method: options.method ?? (options.body !== undefined ? 'POST' : 'GET'),
    headers,
    credentials: 'omit',
    cache: 'no-store',
    ...(options.body !== undefined ? { body: JSON.stringify(options.body) } : {}),
  });
  if (res.ok) return res;
  const err = await errorOf(res);
  if (res.status === 401 && token !== undefined && options.token === undefined) {
    clearSession();
    onSessionEnded(err.message);
  }
  throw err;
}

/** A JSON request; undefined for 204. */
export async function call<T>(path: string, options: CallOptions = {}): Promise<T> {
  const res = await request(path, options);
  if (res.status === 204) return undefined as T;
  return (await res.json()) as T;
}
