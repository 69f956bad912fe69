// The patient's erasure requests (issue 25): what erasure does and does not do, a study or
// everything, a confirmation box, and the requests made so far with where each stands.
import { call } from '../common/api.ts';
import { h, replace, uniqueId } from '../common/dom.ts';
import { act, labelled, radio, t, when } from './forms.ts';

interface ErasureRequest {
  id: string;
  scope: 'patient' | 'study';
  study: string | null;
  state: string;
  reason: string | null;
  createdAt: string;
}

/** What the form needs of a study. */
interface StudyRef {
  uid: string;
  date: string | undefined;
  description: string | undefined;
}

export function erasureForm(studies: StudyRef[]): HTMLElement {
  const all = radio('erase', 'patient', t.erasureAll, true);
  const one = radio('erase', 'study', t.erasureStudy);
  const studySelect = h(
    'select',
    { id: uniqueId('erase-study') },
    ...studies.map((s) => h('option', { value: s.uid }, `${s.date ?? ''} ${s.description ?? t.noDescription}`.trim())),
  );
  const confirmId = uniqueId('confirm');
  const confirm = h('input', { type: 'checkbox', id: confirmId });
  const submit = h('button', { type: 'submit', class: 'danger' }, t.erasureButton);
  const out = h('div');
  const requests = h('div');
  const studyName = (uid: string | null) => (uid === null ? t.erasureEverything : (studies.find((s) => s.uid === uid)?.description ?? uid));
  const list = async (): Promise<void> => {
    const rows = await call<{ requests: ErasureRequest[] }>('/api/patient/erasure-requests').then(
      (r) => r.requests,
      () => [] as ErasureRequest[],
    );
    replace(
      requests,
      rows.length === 0
        ? null
        : h(
            'div',
            {},
            h('h3', {}, t.erasureRequests),
            h(
              'ul',
              {},
              ...rows.map((r) =>
                h(
                  'li',
                  {},
                  t.erasureRow(r.scope === 'patient' ? t.erasureEverything : studyName(r.study), t.erasureStates[r.state] ?? r.state, when(r.createdAt)),
                  r.reason !== null ? h('span', {}, ` ${t.erasureReason(r.reason)}`) : null,
                ),
              ),
            ),
          ),
    );
  };
  void list();
  const form = h(
    'form',
    {},
    h('p', {}, t.erasureWhat),
    h('p', {}, t.erasureNot),
    h('fieldset', {}, h('legend', {}, t.erasureScope), all.row, one.row, labelled(t.grantPickStudy, studySelect)),
    h('div', { class: 'choice' }, confirm, h('label', { for: confirmId }, t.erasureConfirm)),
    submit,
    out,
    requests,
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    void act(submit, out, async () => {
      if (!confirm.checked) throw new Error(t.erasureNeedsConfirm);
      await call('/api/patient/erasure-requests', { body: one.input.checked ? { study: studySelect.value } : {} });
      replace(out, h('p', { class: 'notice', role: 'status' }, t.erasureSent));
      confirm.checked = false;
      await list();
    });
  });
  return form;
}
