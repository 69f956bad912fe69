// The share page (/share, issue 26): whoever holds a patient's share link lands here. The link's
// single-use code is in the fragment (#code=…), which no request line, log or Referer carries; the
// page takes it out of the address bar at once (so that neither history nor a reload tries it
// again), exchanges it once at POST /api/token (RFC 8693) for a bearer token bound to the grant,
// and keeps that token in sessionStorage['dicom-vault.token']: this tab only, and where the
// viewer's boot script (src/shell/viewer/boot.js) reads it. Then: what the link gives (the grant's
// scope, kinds of data and until when: GET /api/grantee/grants), the studies it opens (QIDO-RS with
// the token, so the node's access seam decides) and a link into the viewer for each. A used,
// expired or unknown code, or a grant no longer in force, is said in plain words.
import { ApiError, call, request } from '../common/api.ts';
import { type DicomJson, all, dicomDate, first, personName } from '../common/dicom-json.ts';
import { h, replace } from '../common/dom.ts';
import { stringsFor } from '../common/strings.ts';

const t = stringsFor(document.documentElement.lang);
const main = document.getElementById('main')!;

const TOKEN_KEY = 'dicom-vault.token';
/** When the token the exchange gave ends (it may end before the grant: 12 hours at most). */
const EXPIRES_KEY = 'dicom-vault.token-expires';
const VIEWER = '/viewer/';
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const SHARE_CODE = 'urn:dicom-vault:params:share-code';
const STUDY_FIELDS = ['00080020', '00081030', '00100010', '00201208', '00080061'].map((f) => `includefield=${f}`).join('&');

/** A grant as GET /api/grantee/grants shows it to its grantee. */
interface Grant {
  id: string;
  status: 'active' | 'pending' | 'expired' | 'revoked';
  scope: { studies?: string[]; series?: Array<{ study: string; series: string }>; modalities?: string[] };
  dataTypes: string[];
  notAfter: string | null;
}

const when = (iso: string): string => new Date(iso).toLocaleString(document.documentElement.lang, { dateStyle: 'medium', timeStyle: 'short' });

function message(text: string, kind: 'error' | 'notice' = 'error'): void {
  replace(main, h('p', { class: kind, role: kind === 'error' ? 'alert' : 'status' }, text));
  main.focus();
}

/** Why /api/token refused, in the page's words; `share_code` names the kind (src/grants/service.ts SHARE_CODE_REFUSALS). */
function refusalText(body: { error?: string; error_description?: string; share_code?: string }): string {
  switch (body.share_code) {
    case 'used':
      return t.shareUsed;
    case 'expired':
      return t.shareExpired;
    case 'unknown':
    case 'not-a-link':
      return t.shareUnknown;
    case 'not-in-force':
      return t.shareEnded;
    default:
      return t.shareFailed(body.error_description ?? body.error ?? 'unknown error');
  }
}

/** The one exchange of the code; false (and the reason shown) when the node refused it. */
async function exchange(code: string): Promise<boolean> {
  let res: Response;
  try {
    res = await fetch('/api/token', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body: new URLSearchParams({ grant_type: TOKEN_EXCHANGE, subject_token: code, subject_token_type: SHARE_CODE }),
      credentials: 'omit',
      cache: 'no-store',
    });
  } catch (err) {
    message(t.shareFailed(err instanceof Error ? err.message : String(err)));
    return false;
  }
  const body = (await res.json().catch(() => ({}))) as { access_token?: string; expires_in?: number; error?: string; error_description?: string };
  if (!res.ok || body.access_token === undefined) {
    message(refusalText(body));
    return false;
  }
  sessionStorage.setItem(TOKEN_KEY, body.access_token);
  sessionStorage.setItem(EXPIRES_KEY, new Date(Date.now() + (body.expires_in ?? 0) * 1000).toISOString());
  return true;
}

function endAccess(text: string, kind: 'error' | 'notice'): void {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(EXPIRES_KEY);
  message(text, kind);
}

function scopeText(scope: Grant['scope'], studies: DicomJson[]): string {
  const name = (uid: string): string => first(studies.find((s) => first(s, '0020000D') === uid) ?? {}, '00081030') ?? t.noDescription;
  const parts: string[] = [];
  if (scope.studies !== undefined) parts.push(t.scopeStudies(scope.studies.map(name).join(', ')));
  if (scope.series !== undefined) {
    const byStudy = new Map<string, number>();
    for (const s of scope.series) byStudy.set(s.study, (byStudy.get(s.study) ?? 0) + 1);
    parts.push([...byStudy].map(([study, n]) => t.shareSeriesOf(n, name(study))).join('; '));
  }
  if (scope.modalities !== undefined) parts.push(t.shareModalities(scope.modalities.join(', ')));
  return parts.length === 0 ? t.shareEverything : parts.join('; ');
}

function grantBox(grant: Grant, studies: DicomJson[]): HTMLElement {
  // Whichever ends first: the grant, or the token the link was exchanged for.
  const tokenEnds = sessionStorage.getItem(EXPIRES_KEY);
  const ends = [grant.notAfter, tokenEnds]
    .filter((x): x is string => x !== null && !Number.isNaN(Date.parse(x)))
    .sort((a, b) => Date.parse(a) - Date.parse(b))[0];
  return h(
    'section',
    { 'aria-labelledby': 'what-h', class: 'what' },
    h('h2', { id: 'what-h' }, t.shareWhatTitle),
    h(
      'dl',
      {},
      h('dt', {}, t.shareScope),
      h('dd', {}, scopeText(grant.scope, studies)),
      h('dt', {}, t.shareKinds),
      h('dd', {}, grant.dataTypes.map((d) => t.dataTypeNames[d] ?? d).join(', ')),
      h('dt', {}, t.shareUntil),
      h('dd', { class: 'until' }, ends === undefined ? t.willSeeForever : t.shareUntilTime(when(ends))),
    ),
    h('p', { class: 'help' }, t.shareTabOnly),
  );
}

function studyList(studies: DicomJson[]): HTMLElement {
  if (studies.length === 0) return h('p', {}, t.shareNoStudies);
  return h(
    'ul',
    { class: 'studies' },
    ...studies.map((s) => {
      const uid = first(s, '0020000D') ?? '';
      const title = first(s, '00081030') ?? t.noDescription;
      const patient = personName(first(s, '00100010'));
      return h(
        'li',
        { class: 'study' },
        h('h3', {}, title),
        h(
          'dl',
          {},
          patient !== undefined ? h('dt', {}, t.sharePatient) : null,
          patient !== undefined ? h('dd', {}, patient) : null,
          h('dt', {}, t.studyDate),
          h('dd', {}, dicomDate(first(s, '00080020')) ?? t.unknown),
          h('dt', {}, t.modality),
          h('dd', {}, all(s, '00080061').join(', ') || t.unknown),
          h('dt', {}, t.images),
          h('dd', {}, first(s, '00201208') ?? t.unknown),
        ),
        h('a', { class: 'open', href: `${VIEWER}?StudyInstanceUIDs=${encodeURIComponent(uid)}`, 'aria-label': t.shareOpenLabel(title) }, t.shareOpen),
      );
    }),
  );
}

async function show(token: string): Promise<void> {
  replace(main, h('p', { role: 'status' }, t.loading));
  let grants: Grant[];
  let studies: DicomJson[];
  try {
    const [g, q] = await Promise.all([
      call<{ grants: Grant[] }>('/api/grantee/grants', { token }),
      request(`/dicom-web/studies?${STUDY_FIELDS}`, { token, accept: 'application/dicom+json' }),
    ]);
    grants = g.grants;
    studies = q.status === 204 ? [] : ((await q.json()) as DicomJson[]);
  } catch (err) {
    // The node no longer takes the token: the grant was revoked or has ended.
    if (err instanceof ApiError && err.status === 401) return endAccess(t.shareEnded, 'error');
    return message(t.shareFailed(err instanceof Error ? err.message : String(err)));
  }
  const grant = grants.find((g) => g.status === 'active');
  if (grant === undefined) return endAccess(t.shareEnded, 'error');
  const end = h('button', { type: 'button', class: 'secondary' }, t.shareEnd);
  end.addEventListener('click', () => endAccess(t.shareEndedByYou, 'notice'));
  replace(
    main,
    grantBox(grant, studies),
    h('section', { 'aria-labelledby': 'studies-h' }, h('h2', { id: 'studies-h' }, t.shareStudiesTitle(studies.length)), studyList(studies)),
    end,
  );
  main.focus();
}

async function start(): Promise<void> {
  document.title = `${t.sharePageTitle} · ${t.appName}`;
  replace(document.getElementById('title')!, t.sharePageTitle);
  const skip = document.querySelector('a.skip');
  if (skip !== null) replace(skip, t.skipToContent);
  const code = new URLSearchParams(location.hash.slice(1)).get('code');
  if (code !== null && code !== '') {
    // Out of the address bar, history and bookmarks before anything else: the code is tried once.
    history.replaceState(null, '', location.pathname);
    replace(main, h('p', { role: 'status' }, t.shareOpening));
    if (!(await exchange(code))) return;
  }
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token === null) return message(t.shareNoCode, 'notice');
  await show(token);
}

void start();
