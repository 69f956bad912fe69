// Everything for another provider (GDPR Art. 20, issue 25) on the patient's page: what the export
// gives and does not do, the receiving node's public key, then POST /api/patient/exports; the page
// follows GET /api/patient/exports/{id} while the node prepares the archive, then fetches it with
// the session's bearer token (an <a href> could not send it) and offers it as a blob: URL.
//
// The export's id is kept in sessionStorage, so a reload in the same tab picks the export up again;
// the node keeps exports for its process's life only, and the page says so when one is gone.
import { ApiError, call, request } from '../common/api.ts';
import { h, replace, uniqueId } from '../common/dom.ts';
import { act, t } from './forms.ts';

/** An export as GET /api/patient/exports/{id} shows it. */
interface ExportJob {
  id: string;
  state: 'preparing' | 'ready' | 'failed';
  studies: number | null;
  bytes: number | null;
  reason: string | null;
}

const EXPORT_KEY = 'dicom-vault.export';
const POLL_MS = 1_000;

function size(bytes: number): string {
  const units = ['bytes', 'KB', 'MB', 'GB'];
  let v = bytes;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}

export function exportForm(): HTMLElement {
  const keyId = uniqueId('recipient-key');
  const helpId = uniqueId('recipient-key-help');
  const key = h('textarea', { id: keyId, name: 'recipient-key', rows: 5, spellcheck: 'false', autocomplete: 'off', class: 'pem', 'aria-describedby': helpId });
  const submit = h('button', { type: 'submit', class: 'primary' }, t.exportButton);
  const out = h('div');
  const state = h('div', { class: 'export-state' });
  let url: string | undefined;

  const follow = async (id: string): Promise<void> => {
    sessionStorage.setItem(EXPORT_KEY, id);
    replace(state, h('p', { role: 'status', 'aria-busy': 'true' }, t.exportPreparing));
    try {
      let job = await call<ExportJob>(`/api/patient/exports/${id}`);
      while (job.state === 'preparing') {
        await new Promise((r) => setTimeout(r, POLL_MS));
        job = await call<ExportJob>(`/api/patient/exports/${id}`);
      }
      if (job.state === 'failed') {
        sessionStorage.removeItem(EXPORT_KEY);
        replace(state, h('p', { class: 'error', role: 'alert' }, t.exportFailed(job.reason ?? t.unknown)));
        return;
      }
      replace(state, h('p', { role: 'status', 'aria-busy': 'true' }, t.exportFetching));
      const res = await request(`/api/patient/exports/${id}/archive`, { accept: 'application/vnd.ipld.car' });
      const blob = await res.blob();
      if (url !== undefined) URL.revokeObjectURL(url);
      url = URL.createObjectURL(blob);
      replace(
        state,
        h('p', { class: 'notice', role: 'status' }, t.exportReady(job.studies ?? 0, size(job.bytes ?? blob.size))),
        h('a', { class: 'download', href: url, download: `patient-export-${id}.car`, type: 'application/vnd.ipld.car' }, t.exportDownload),
        h('p', { class: 'help' }, t.exportHandOver),
      );
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        sessionStorage.removeItem(EXPORT_KEY);
        replace(state, h('p', { class: 'error', role: 'alert' }, t.exportGone));
      } else if (!(err instanceof ApiError && err.status === 401)) {
        replace(state, h('p', { class: 'error', role: 'alert' }, t.exportFailed(err instanceof Error ? err.message : String(err))));
      }
    }
  };

  const form = h(
    'form',
    {},
    h('p', {}, t.exportWhat),
    h('p', {}, t.exportSealed),
    h('p', {}, t.exportNot),
    h('label', { for: keyId }, t.exportKey),
    h('p', { id: helpId, class: 'help' }, t.exportKeyHelp),
    key,
    submit,
    out,
    state,
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    void act(submit, out, async () => {
      const pem = key.value.trim();
      if (pem === '') throw new Error(t.exportNeedsKey);
      const job = await call<ExportJob>('/api/patient/exports', { body: { recipientKey: pem } });
      // The button stays busy while the node prepares it: one export at a time from this page.
      await follow(job.id);
    });
  });
  const pending = sessionStorage.getItem(EXPORT_KEY);
  if (pending !== null) {
    submit.disabled = true;
    void follow(pending).finally(() => {
      submit.disabled = false;
    });
  }
  return form;
}
