// The patient's page (issue 26): enroll with the hospital's code and a passkey, sign in, see the
// studies, who can see what, give access (signed with the passkey), share by link and QR code,
// revoke, ask for erasure (erasure.ts), export everything for another provider (export.ts), read the
// audit log (audit.ts). Every call goes to the node's API with the session's
// bearer token (common/api.ts); every text comes from common/strings.ts; every value from the
// node is put on the page as text (common/dom.ts).
import { encode } from 'uqr';
import { ApiError, call, clearSession, currentSession, request, saveSession, whenSessionEnds } from '../common/api.ts';
import { type DicomJson, dicomDate, first, personName } from '../common/dicom-json.ts';
import { h, replace, uniqueId } from '../common/dom.ts';
import { createPasskey, usePasskey } from '../common/webauthn.ts';
import { auditList } from './audit.ts';
import { erasureForm } from './erasure.ts';
import { exportForm } from './export.ts';
import { act, labelled, radio, reasonOf, t, when } from './forms.ts';

const main = document.getElementById('main')!;
const accountBar = document.getElementById('account')!;
const announcer = document.getElementById('announce')!;

// ---- what the node tells us ----

interface Series {
  uid: string;
  modality: string;
  description: string;
  bodyPart: string | undefined;
  count: string;
}
interface Study {
  uid: string;
  date: string | undefined;
  description: string | undefined;
  modalities: string;
  patientName: string | undefined;
  images: string;
  series: Series[];
}
interface Statement {
  id: string;
  grantee: { kind: 'user' | 'oidc' | 'link'; id?: string; issuer?: string; subject?: string };
  scope: { studies?: string[]; series?: Array<{ study: string; series: string }>; modalities?: string[] };
  dataTypes: string[];
  notBefore: string;
  notAfter: string | null;
}
interface GrantView {
  statement: Statement;
  status: string;
}
type Json = Record<string, unknown>;

const DICOM_JSON = 'application/dicom+json';
const STUDY_FIELDS = ['00080020', '00081030', '00100010', '00201208', '00080061'].map((f) => `includefield=${f}`).join('&');

async function qido(path: string): Promise<DicomJson[]> {
  const res = await request(path, { accept: DICOM_JSON });
  return res.status === 204 ? [] : ((await res.json()) as DicomJson[]);
}

async function loadStudies(): Promise<Study[]> {
  const found = await qido(`/dicom-web/studies?${STUDY_FIELDS}`);
  return Promise.all(
    found.map(async (s): Promise<Study> => {
      const uid = first(s, '0020000D')!;
      const series = (await qido(`/dicom-web/studies/${uid}/series?includefield=00180015&includefield=0008103E`)).map((r) => ({
        uid: first(r, '0020000E')!,
        modality: first(r, '00080060') ?? '',
        description: first(r, '0008103E') ?? '',
        bodyPart: first(r, '00180015'),
        count: first(r, '00201209') ?? '?',
      }));
      return {
        uid,
        date: dicomDate(first(s, '00080020')),
        description: first(s, '00081030'),
        modalities: (s['00080061']?.Value ?? []).map(String).join(', '),
        patientName: personName(first(s, '00100010')),
        images: first(s, '00201208') ?? '?',
        series,
      };
    }),
  );
}

// ---- small helpers ----

function announce(text: string): void {
  announcer.textContent = '';
  // A change the screen reader reads out (the region is polite: after what it is reading).
  setTimeout(() => {
    announcer.textContent = text;
  }, 50);
}

function section(id: string, title: string, ...children: Array<Node | string | null | undefined | false>): HTMLElement {
  return h('section', { 'aria-labelledby': `${id}-h`, id }, h('h2', { id: `${id}-h` }, title), ...children);
}

// ---- signing in ----

/** Ends the page's session when the node says it ends, without waiting for a refused request. */
let expiry: ReturnType<typeof setTimeout> | undefined;

function showSignIn(message?: string, kind: 'notice' | 'error' = 'notice'): void {
  clearTimeout(expiry);
  replace(accountBar);
  const signInOut = h('div');
  const signInButton = h('button', { type: 'button', class: 'primary' }, t.signInButton);
  signInButton.addEventListener('click', () =>
    act(signInButton, signInOut, async () => {
      const challenge = await call<{ webauthn?: Json }>('/api/patient/session/challenge', { method: 'POST', anonymous: true });
      if (challenge.webauthn === undefined) throw new Error(t.passkeysOff);
      const assertion = await usePasskey(challenge.webauthn);
      const session = await call<{ token: string; expiresAt: string }>('/api/patient/session', { body: { webauthn: assertion }, anonymous: true });
      saveSession({ token: session.token, expiresAt: session.expiresAt });
      await showHome();
    }),
  );

  const codeId = uniqueId('code');
  const helpId = uniqueId('code-help');
  const code = h('input', {
    id: codeId,
    name: 'code',
    type: 'text',
    autocomplete: 'one-time-code',
    required: true,
    'aria-describedby': helpId,
    spellcheck: 'false',
  });
  const enrollOut = h('div');
  const enrollButton = h('button', { type: 'submit' }, t.enrollButton);
  const form = h('form', {}, h('p', { id: helpId }, t.enrollHelp), h('label', { for: codeId }, t.enrollCode), code, enrollButton, enrollOut);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    void act(enrollButton, enrollOut, async () => {
      const enrolled = await call<{ token: string }>('/api/patient/enrollment', { body: { code: code.value.trim() }, anonymous: true });
      const options = await call<Json>('/api/patient/keys/options', { method: 'POST', token: enrolled.token });
      const credential = await createPasskey(options);
      await call('/api/patient/keys', { body: { webauthn: credential }, token: enrolled.token });
      showSignIn(t.enrolled);
    });
  });

  replace(
    main,
    section(
      'signin',
      t.signInTitle,
      message !== undefined ? h('p', { class: kind, role: kind === 'error' ? 'alert' : 'status' }, message) : null,
      h('p', {}, t.signInHelp),
      signInButton,
      signInOut,
    ),
    section('enroll', t.enrollTitle, form),
  );
  main.focus();
}

// ---- signed in ----

async function showHome(): Promise<void> {
  replace(main, h('p', { role: 'status' }, t.loading));
  clearTimeout(expiry);
  const left = Date.parse(currentSession()?.expiresAt ?? '') - Date.now();
  if (left > 0 && left < 2 ** 31 - 1) {
    expiry = setTimeout(() => {
      clearSession();
      showSignIn(t.sessionExpired, 'error');
    }, left);
  }
  const signOut = h('button', { type: 'button', class: 'link' }, t.signOut);
  signOut.addEventListener('click', async () => {
    try {
      await call('/api/patient/session', { method: 'DELETE' });
    } catch {}
    clearSession();
    showSignIn(t.signedOut);
  });
  replace(accountBar, signOut);

  let studies: Study[];
  let grants: GrantView[];
  try {
    [studies, grants] = await Promise.all([loadStudies(), call<GrantView[]>('/api/patient/grants')]);
  } catch (err) {
    if (currentSession() === undefined) return;
    replace(main, h('p', { class: 'error', role: 'alert' }, t.failed(reasonOf(err))));
    return;
  }
  const grantsList = h('div');
  const renderGrants = async (fresh?: GrantView[]): Promise<void> => {
    replace(grantsList, grantList(fresh ?? (await call<GrantView[]>('/api/patient/grants')), studies, renderGrants));
  };
  await renderGrants(grants);

  replace(
    main,
    section('studies', t.studiesTitle, studyList(studies)),
    section('access', t.accessTitle, h('p', { class: 'staff' }, t.staffAccess), grantsList),
    section('grant', t.grantTitle, grantForm(studies, renderGrants)),
    section('erasure', t.erasureTitle, erasureForm(studies)),
    section('export', t.exportTitle, exportForm()),
    section('audit', t.auditTitle, auditList(t, when, reasonOf)),
  );
  main.focus();
}

function studyList(studies: Study[]): Node {
  if (studies.length === 0) return h('p', {}, t.noStudies);
  const name = studies.find((s) => s.patientName !== undefined)?.patientName;
  const list = h('ul', { class: 'studies' });
  for (const s of studies) {
    const title = s.description ?? t.noDescription;
    const figure = h('div', { class: 'thumb' }, h('span', { class: 'placeholder' }, t.noThumbnail));
    void thumbnail(s.uid, title).then((img) => {
      if (img !== undefined) replace(figure, img);
    });
    const anchor = h('dd', {}, t.loading);
    void anchorState(s.uid).then((text) => replace(anchor, text));
    const bodyParts = [...new Set(s.series.map((x) => x.bodyPart).filter((b): b is string => b !== undefined && b !== ''))].join(', ');
    list.append(
      h(
        'li',
        { class: 'study' },
        figure,
        h(
          'div',
          { class: 'study-text' },
          h('h3', {}, title),
          h(
            'dl',
            {},
            h('dt', {}, t.studyDate),
            h('dd', {}, s.date ?? t.unknown),
            h('dt', {}, t.modality),
            h('dd', {}, s.modalities || t.unknown),
            h('dt', {}, t.bodyPart),
            h('dd', {}, bodyParts || t.unknown),
            h('dt', {}, t.images),
            h('dd', {}, s.images),
            h('dt', {}, t.anchor),
            anchor,
          ),
        ),
      ),
    );
  }
  return h('div', {}, name !== undefined ? h('p', { class: 'patient-name' }, t.patientName(name)) : null, list);
}

/** The study's thumbnail, fetched with the bearer token (an <img src> could not send it) and shown from a blob: URL. */
async function thumbnail(study: string, title: string): Promise<HTMLImageElement | undefined> {
  try {
    const res = await request(`/dicom-web/studies/${study}/thumbnail?viewport=192,192`, { accept: 'image/jpeg' });
    const url = URL.createObjectURL(await res.blob());
    const img = h('img', { src: url, alt: t.thumbnailOf(title), width: 96, height: 96 });
    img.addEventListener('load', () => URL.revokeObjectURL(url), { once: true });
    return img;
  } catch {
    return undefined;
  }
}

/** Each version's anchor, newest first: confirmed (a receipt) or on its way. Asked version by version (1, 2, ...) until the study has no more. */
const MAX_VERSIONS_SHOWN = 8;
async function anchorState(study: string): Promise<string> {
  const texts: string[] = [];
  for (let v = 1; v <= MAX_VERSIONS_SHOWN; v++) {
    try {
      const res = await request(`/dicom-web/studies/${study}/receipt?version=${v}`);
      texts.unshift(res.status === 202 ? t.anchorPending(v) : t.anchorConfirmed(v));
    } catch (err) {
      if (err instanceof ApiError && err.code === 'ANCHOR_DISABLED') return t.anchorOff;
      if (err instanceof ApiError && err.code === 'RECEIPT_NOT_FOUND' && v > 1) break;
      texts.unshift(t.anchorUnknown);
      break;
    }
  }
  return texts.join('; ');
}

function granteeName(g: Statement['grantee']): string {
  if (g.kind === 'user') return t.granteeUser(g.id ?? '?');
  if (g.kind === 'oidc') return t.granteeOidc(g.subject ?? '?', g.issuer ?? '?');
  return t.granteeLink;
}

function scopeText(scope: Statement['scope'], studies: Study[]): string {
  const studyName = (uid: string) => studies.find((s) => s.uid === uid)?.description ?? uid;
  const parts: string[] = [];
  if (scope.studies !== undefined) parts.push(t.scopeStudies(scope.studies.map(studyName).join(', ')));
  if (scope.series !== undefined) {
    const names = scope.series.map(({ study, series }) => {
      const x = studies.find((s) => s.uid === study)?.series.find((r) => r.uid === series);
      return x === undefined ? series : `${studyName(study)} › ${x.modality} ${x.description}`.trim();
    });
    parts.push(t.scopeSeries(names.join(', ')));
  }
  if (scope.modalities !== undefined) parts.push(t.scopeModalities(scope.modalities.join(', ')));
  return parts.length === 0 ? t.scopeEverything : parts.join('; ');
}

function grantList(grants: GrantView[], studies: Study[], refresh: () => Promise<void>): Node {
  if (grants.length === 0) return h('p', {}, t.noGrants);
  const list = h('ul', { class: 'grants' });
  for (const g of grants) {
    const s = g.statement;
    const who = granteeName(s.grantee);
    const out = h('div');
    const live = g.status === 'active' || g.status === 'pending';
    let revoke: HTMLButtonElement | null = null;
    if (live) {
      revoke = h('button', { type: 'button', class: 'danger', 'aria-label': t.revokeFor(who) }, t.revoke);
      const button = revoke;
      button.addEventListener('click', () =>
        act(button, out, async () => {
          await call(`/api/patient/grants/${s.id}/revoke`, { method: 'POST' });
          announce(t.revoked(who));
          await refresh();
        }),
      );
    }
    list.append(
      h(
        'li',
        { class: `grant ${g.status}`, 'data-grant': s.id },
        h('h3', {}, who),
        h(
          'dl',
          {},
          h('dt', {}, t.scope),
          h('dd', {}, scopeText(s.scope, studies)),
          h('dt', {}, t.dataTypes),
          h('dd', {}, s.dataTypes.map((d) => t.dataTypeNames[d] ?? d).join(', ')),
          h('dt', {}, t.window),
          h('dd', {}, s.notAfter === null ? t.windowOpen(when(s.notBefore)) : t.windowFrom(when(s.notBefore), when(s.notAfter))),
          h('dt', {}, t.status),
          h('dd', { class: 'status' }, t.statusNames[g.status] ?? g.status),
        ),
        revoke,
        out,
      ),
    );
  }
  return list;
}

// ---- giving access ----

const DURATIONS = { visit: '+1h', week: '+7d', month: '+30d', forever: null } as const;
type Duration = keyof typeof DURATIONS;
const DATA_TYPES = ['images', 'metadata', 'reports', 'key-images'] as const;

function grantForm(studies: Study[], refresh: () => Promise<void>): HTMLElement {
  const toUser = radio('grantee', 'user', t.grantToUser, true);
  const toLink = radio('grantee', 'link', t.grantToLink);
  // The hospital's doctors and institutions to pick from (typing a name still works): a datalist
  // filled from GET /api/patient/grantees.
  const known = h('datalist', { id: uniqueId('grantees') });
  const account = h('input', { id: uniqueId('account'), type: 'text', name: 'account', autocomplete: 'off', spellcheck: 'false', list: known.id });
  void call<{ grantees: Array<{ name: string }> }>('/api/patient/grantees')
    .then(({ grantees }) => replace(known, ...grantees.map((g) => h('option', { value: g.name }))))
    .catch(() => undefined);

  const everything = radio('scope', 'everything', t.grantEverything, true);
  const oneStudy = radio('scope', 'study', t.grantStudy);
  const oneSeries = radio('scope', 'series', t.grantSeries);
  const studySelect = h(
    'select',
    { id: uniqueId('study') },
    ...studies.map((s) => h('option', { value: s.uid }, `${s.date ?? ''} ${s.description ?? t.noDescription}`.trim())),
  );
  const seriesSelect = h(
    'select',
    { id: uniqueId('series') },
    ...studies.flatMap((s) =>
      s.series.map((x) =>
        h('option', { value: `${s.uid}|${x.uid}` }, `${s.description ?? t.noDescription} › ${t.seriesLabel(x.modality, x.description, x.count)}`.trim()),
      ),
    ),
  );
  const kinds = DATA_TYPES.map((d) => {
    const id = uniqueId('kind');
    const input = h('input', { type: 'checkbox', id, value: d, checked: d === 'images' });
    return { input, row: h('div', { class: 'choice' }, input, h('label', { for: id }, t.dataTypeNames[d] ?? d)) };
  });
  const durations = (Object.keys(DURATIONS) as Duration[]).map((d, i) =>
    radio('duration', d, { visit: t.durationVisit, week: t.durationWeek, month: t.durationMonth, forever: t.durationForever }[d], i === 0),
  );
  const summary = h('div', { class: 'summary', 'aria-live': 'polite' });
  const out = h('div');
  const share = h('div');
  const submit = h('button', { type: 'submit', class: 'primary' }, t.grantButton);

  const picked = <T extends string>(rows: Array<{ input: HTMLInputElement }>): T => rows.find((r) => r.input.checked)!.input.value as T;
  const state = () => {
    const scope = picked<'everything' | 'study' | 'series'>([everything, oneStudy, oneSeries]);
    const [study, series] = seriesSelect.value.split('|');
    return {
      to: toLink.input.checked ? 'link' : `user:${account.value.trim()}`,
      scope,
      study: scope === 'study' ? studySelect.value : undefined,
      series: scope === 'series' && study !== undefined && series !== undefined ? { study, series } : undefined,
      kinds: kinds.filter((k) => k.input.checked).map((k) => k.input.value),
      duration: picked<Duration>(durations),
    };
  };
  const describe = (): void => {
    const s = state();
    const who = s.to === 'link' ? t.whoLink : account.value.trim() !== '' ? t.whoUser(account.value.trim()) : t.whoNobody;
    const what =
      s.scope === 'everything'
        ? t.scopeEverything
        : s.scope === 'study'
          ? scopeText({ studies: [s.study!] }, studies)
          : s.series !== undefined
            ? scopeText({ series: [s.series] }, studies)
            : t.unknown;
    const kindNames = s.kinds.map((k) => t.dataTypeNames[k] ?? k).join(', ');
    const missing = DATA_TYPES.filter((d) => !s.kinds.includes(d)).map((d) => t.dataTypeNames[d] ?? d);
    const not = [...(s.scope !== 'everything' ? [t.notOtherStudies] : []), ...(missing.length > 0 ? [t.notKinds(missing.join(', '))] : [])];
    replace(
      summary,
      h('h3', {}, t.grantSummaryTitle),
      h(
        'ul',
        {},
        h('li', {}, t.willSee(who, what, kindNames || '—')),
        h('li', {}, s.duration === 'forever' ? t.willSeeForever : t.willSeeUntil(t.durationEnds[s.duration] ?? '')),
        not.length > 0 ? h('li', {}, t.willNotSee(not.join('; '))) : null,
        h('li', {}, t.willNotDownload),
      ),
    );
    account.disabled = s.to === 'link';
    studySelect.disabled = s.scope !== 'study';
    seriesSelect.disabled = s.scope !== 'series';
  };

  const form = h(
    'form',
    { class: 'grant-form' },
    h('fieldset', {}, h('legend', {}, t.grantWho), toUser.row, labelled(t.grantAccount, account, t.grantAccountHelp), known, toLink.row),
    h(
      'fieldset',
      {},
      h('legend', {}, t.grantWhat),
      everything.row,
      oneStudy.row,
      labelled(t.grantPickStudy, studySelect),
      oneSeries.row,
      labelled(t.grantPickSeries, seriesSelect),
    ),
    h('fieldset', {}, h('legend', {}, t.grantKinds), ...kinds.map((k) => k.row)),
    h('fieldset', {}, h('legend', {}, t.grantHowLong), ...durations.map((d) => d.row)),
    summary,
    submit,
    out,
    share,
  );
  form.addEventListener('change', describe);
  form.addEventListener('input', describe);
  describe();
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    void act(submit, out, async () => {
      const s = state();
      if (s.to === 'user:') throw new Error(t.grantNeedsAccount);
      if (s.kinds.length === 0) throw new Error(t.grantNeedsKind);
      const until = DURATIONS[s.duration];
      const draft = await call<{ statement: Statement; webauthn?: Json }>('/api/patient/grants/draft', {
        body: {
          to: s.to,
          ...(s.study !== undefined ? { studies: [s.study] } : {}),
          ...(s.series !== undefined ? { series: [s.series] } : {}),
          dataTypes: s.kinds,
          actions: ['search', 'view'],
          ...(until === null ? { openEnded: true } : { until }),
        },
      });
      if (draft.webauthn === undefined) throw new Error(t.passkeysOff);
      // The passkey signs the statement itself: its challenge is the statement's hash.
      const assertion = (await usePasskey(draft.webauthn)) as { id: string; response: Record<string, string> };
      const proof = {
        kind: 'webauthn',
        credentialId: assertion.id,
        authenticatorData: assertion.response.authenticatorData,
        clientDataJSON: assertion.response.clientDataJSON,
        signature: assertion.response.signature,
      };
      const added = await call<GrantView>('/api/patient/grants', { body: { statement: draft.statement, proof } });
      const who = granteeName(added.statement.grantee);
      replace(out, h('p', { class: 'notice', role: 'status' }, t.grantDone(who)));
      if (added.statement.grantee.kind === 'link') {
        const link = await call<{ url: string; expiresAt: string }>(`/api/patient/grants/${added.statement.id}/links`, { method: 'POST' });
        replace(share, shareBox(link.url, link.expiresAt));
      } else replace(share);
      await refresh();
    });
  });
  return form;
}

function shareBox(url: string, expiresAt: string): HTMLElement {
  const linkId = uniqueId('link');
  const field = h('input', { id: linkId, type: 'text', readonly: true, value: url, class: 'share-url' });
  const copied = h('p', { role: 'status' });
  const copy = h('button', { type: 'button' }, t.shareCopy);
  copy.addEventListener('click', async () => {
    await navigator.clipboard?.writeText(url).catch(() => field.select());
    replace(copied, t.shareCopied);
  });
  return h(
    'div',
    { class: 'share' },
    h('h3', {}, t.shareTitle),
    h('p', {}, t.shareHelp(when(expiresAt))),
    h('label', { for: linkId }, t.shareLinkLabel),
    field,
    copy,
    copied,
    qrCanvas(url),
  );
}

/** The link as a QR code (uqr's matrix) drawn on a canvas: no markup from a library's string. */
function qrCanvas(text: string): HTMLCanvasElement {
  const { data, size } = encode(text, { ecc: 'M', border: 2 });
  const scale = 6;
  const canvas = h('canvas', { width: size * scale, height: size * scale, role: 'img', 'aria-label': t.shareQr, class: 'qr' });
  const g = canvas.getContext('2d');
  if (g !== null) {
    g.fillStyle = '#fff';
    g.fillRect(0, 0, canvas.width, canvas.height);
    g.fillStyle = '#000';
    data.forEach((row, y) => {
      row.forEach((dark, x) => {
        if (dark) g.fillRect(x * scale, y * scale, scale, scale);
      });
    });
  }
  return canvas;
}

// ---- start ----

whenSessionEnds((reason) => showSignIn(t.sessionEnded(reason), 'error'));
// The static page's words, from the strings too.
document.title = `${t.patientTitle} · ${t.appName}`;
replace(document.getElementById('title')!, t.patientTitle);
const skip = document.querySelector('a.skip');
if (skip !== null) replace(skip, t.skipToContent);
document.getElementById('boot')?.remove();
if (currentSession() !== undefined) void showHome();
else showSignIn();
