// The doctor's page (/doctor/): sign in with the hospital's OpenID provider (oidc.ts, when the node
// names one in /doctor/config.json) or a node account's bearer token, then the studies the
// caller may open (QIDO-RS /studies with their token, so the node's access seam decides), each with
// the grant that opens it and until when (GET /api/grantee/grants), and a link into the viewer.
// The token lives in sessionStorage['dicom-vault.token']: this tab only, same origin, which is where
// the viewer's boot script (src/shell/viewer/boot.js) reads it. No cookie, so no CSRF.
// Plain DOM: a page this small needs no framework. Every text node is set with textContent (a study
// description with markup is shown as text).
import { finishSignIn, type OidcConfig, startSignIn } from './oidc.ts';
import { stringsFor } from '../common/strings.ts';

const strings = stringsFor(document.documentElement.lang).doctor;

const TOKEN_KEY = 'dicom-vault.token';
const DICOMWEB = '/dicom-web';
const GRANTS = '/api/grantee/grants';
const VIEWER = '/viewer/';

interface Grant {
  id: string;
  status: 'active' | 'pending' | 'expired' | 'revoked';
  scope: { studies?: string[]; series?: Array<{ study: string; series: string }>; modalities?: string[] };
  notAfter: string | null;
  revokedAt: string | null;
}
type DicomJson = Record<string, { vr: string; Value?: unknown[] } | undefined>;

const app = document.getElementById('app') as HTMLElement;
document.title = `${strings.title} · dicom-vault`;
(document.getElementById('title') as HTMLElement).textContent = strings.title;

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Partial<HTMLElementTagNameMap[K]> = {},
  ...children: Array<Node | string>
): HTMLElementTagNameMap[K] {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

async function api(path: string, token: string, accept = 'application/json'): Promise<Response> {
  return fetch(path, { headers: { authorization: `Bearer ${token}`, accept } });
}

async function reasonOf(res: Response): Promise<string> {
  try {
    const body = (await res.json()) as { message?: string };
    return body.message ?? `${res.status} ${res.statusText}`;
  } catch {
    return `${res.status} ${res.statusText}`;
  }
}

let oidc: OidcConfig | null = null;

function showSignIn(error?: string): void {
  const input = el('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'off', required: true, spellcheck: false });
  input.setAttribute('aria-describedby', error ? 'token-hint token-error' : 'token-hint');
  if (error) input.setAttribute('aria-invalid', 'true');
  const status = el('p', { id: 'token-error', className: 'error' }, error ?? '');
  status.setAttribute('role', 'alert');
  const form = el(
    'form',
    {},
    el('label', { htmlFor: 'token' }, strings.tokenLabel),
    input,
    el('p', { id: 'token-hint', className: 'hint' }, strings.tokenHint),
    status,
    el('button', { type: 'submit', className: 'primary' }, strings.signIn),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    void signIn(input.value.trim(), status);
  });
  const parts: Node[] = [el('h2', { id: 'sign-in' }, strings.signInHeading)];
  if (oidc !== null) {
    const config = oidc;
    const button = el('button', { type: 'button', className: 'primary' }, strings.oidcSignIn);
    button.addEventListener('click', () => {
      status.textContent = strings.redirecting;
      startSignIn(config).catch((err: Error) => showSignIn(strings.oidcFailed(err.message)));
    });
    parts.push(el('p', {}, button), el('h3', {}, strings.orToken));
  }
  app.replaceChildren(...parts, form);
  if (oidc === null || error) input.focus();
}

async function signIn(token: string, status: HTMLElement): Promise<void> {
  status.textContent = strings.signingIn;
  let res: Response;
  try {
    res = await api(GRANTS, token);
  } catch {
    return showSignIn(strings.unreachable);
  }
  if (!res.ok) return showSignIn(strings.tokenRefused(await reasonOf(res)));
  sessionStorage.setItem(TOKEN_KEY, token);
  await showStudies(token);
}

function signOut(): void {
  sessionStorage.removeItem(TOKEN_KEY);
  showSignIn();
}

const first = (ds: DicomJson, tag: string): unknown => ds[tag]?.Value?.[0];
const text = (ds: DicomJson, tag: string): string => {
  const v = first(ds, tag);
  if (v === undefined || v === null) return '';
  if (typeof v === 'object' && 'Alphabetic' in v) return String((v as { Alphabetic: string }).Alphabetic).replaceAll('^', ' ');
  return String(v);
};
const dicomDate = (da: string): string => {
  const m = /^(\d{4})(\d{2})(\d{2})$/.exec(da);
  return m ? new Intl.DateTimeFormat(undefined, { dateStyle: 'medium' }).format(new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3]))) : da;
};
const when = (iso: string): string => new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' }).format(new Date(iso));

function whyLine(study: string, grants: Grant[], staff: boolean): string {
  const covering = grants.filter(
    (g) =>
      g.status === 'active' &&
      (g.scope.studies?.includes(study) || g.scope.series?.some((s) => s.study === study) || (g.scope.studies === undefined && g.scope.series === undefined)),
  );
  if (covering.length === 0) return staff ? strings.staff : '';
  return covering
    .map((g) => {
      const series = g.scope.series?.filter((s) => s.study === study).length ?? 0;
      const scope = g.scope.studies?.includes(study) ? strings.wholeStudy : series > 0 ? strings.seriesOnly(series) : strings.allStudies;
      return `${strings.grantLine(scope, g.notAfter === null ? strings.untilRevoked : strings.untilDate(when(g.notAfter)))} (${g.id})`;
    })
    .join(' ');
}

async function showStudies(token: string): Promise<void> {
  const loading = el('p', {}, strings.loading);
  loading.setAttribute('role', 'status');
  const signOutButton = el('button', { type: 'button', className: 'secondary' }, strings.signOut);
  signOutButton.addEventListener('click', signOut);
  app.replaceChildren(el('div', { className: 'bar' }, el('p', {}, strings.signedInAs), signOutButton), loading);
  let grants: Grant[];
  let studies: DicomJson[];
  try {
    const [g, q] = await Promise.all([api(GRANTS, token), api(`${DICOMWEB}/studies?includefield=all`, token, 'application/dicom+json')]);
    if (g.status === 401) return showSignIn(strings.tokenRefused(await reasonOf(g)));
    if (!g.ok) throw new Error(await reasonOf(g));
    if (!q.ok) throw new Error(await reasonOf(q));
    grants = ((await g.json()) as { grants: Grant[] }).grants;
    studies = q.status === 204 ? [] : ((await q.json()) as DicomJson[]);
  } catch (err) {
    const failed = el('p', { className: 'error' }, strings.failed((err as Error).message || strings.unreachable));
    failed.setAttribute('role', 'alert');
    loading.replaceWith(failed);
    return;
  }
  // A study opened by no grant is the staff's (their role reads everything); none of a grantee's.
  const staff = studies.some((s) => whyLine(text(s, '0020000D'), grants, false) === '');
  if (studies.length === 0) {
    loading.replaceWith(el('p', {}, strings.none));
    return;
  }
  const list = el('ul', { className: 'studies' });
  for (const s of studies) {
    const uid = text(s, '0020000D');
    const description = text(s, '00081030') || strings.untitled;
    const modalities = ((s['00080061']?.Value ?? []) as string[]).join(', ');
    const link = el('a', { className: 'open', href: `${VIEWER}?StudyInstanceUIDs=${encodeURIComponent(uid)}` }, strings.open);
    link.setAttribute('aria-label', strings.openLabel(description));
    const details = el('dl');
    for (const [label, value] of [
      [strings.patient, text(s, '00100010')],
      [strings.date, dicomDate(text(s, '00080020'))],
      [strings.modalities, modalities],
      [strings.images, text(s, '00201208')],
    ] as const) {
      if (value) details.append(el('dt', {}, label), el('dd', {}, value));
    }
    list.append(el('li', {}, el('h3', {}, description), details, el('p', { className: 'why' }, whyLine(uid, grants, staff)), el('div', {}, link)));
  }
  loading.replaceWith(el('h2', {}, strings.studiesHeading(studies.length)), list);
}

async function start(): Promise<void> {
  try {
    oidc = ((await (await fetch('./config.json')).json()) as { oidc: OidcConfig | null }).oidc;
  } catch {
    oidc = null;
  }
  if (oidc !== null) {
    let token: string | undefined;
    try {
      token = await finishSignIn(oidc);
    } catch (err) {
      return showSignIn(strings.oidcFailed((err as Error).message));
    }
    if (token !== undefined) {
      const status = el('p', {}, strings.signingIn);
      app.replaceChildren(status);
      return signIn(token, status);
    }
  }
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) return showStudies(saved);
  showSignIn();
}

void start();
