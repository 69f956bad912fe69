// The patient's audit log on the page: every row checked in this browser (common/audit-verify.ts:
// its leaf re-hashed, its inclusion proof followed to a head signed under the node key the patient
// pinned, that head's anchor read from the chain itself) and marked verified, waiting for the
// chain, or failed with the reason; one line above the rows says where the whole log stands.
//
// What is pinned, in localStorage on first use (trust on first use, as SSH does): the node's audit
// key and the chain and contract the node anchors on (GET /web/chain.json seeds them). A later
// mismatch is shown as a warning, never silently re-pinned: a patient who moved to a new node
// clears it with the "forget" button, knowingly.
import { currentSession } from '../common/api.ts';
import { type AuditVerification, type ChainPin, type EntryResult, verifyPatientAudit } from '../common/audit-verify.ts';
import { h, replace } from '../common/dom.ts';
import type { Strings } from '../common/strings.ts';

const KEY_PIN = 'dicom-vault.audit-key';
const CHAIN_PIN = 'dicom-vault.audit-chain';

/** What the node says about its chain (src/shell/web.ts, GET /web/chain.json). */
interface ChainConfig {
  rpcUrl: string;
  pin?: ChainPin;
}

async function chainConfig(): Promise<ChainConfig | undefined> {
  const pinned = localStorage.getItem(CHAIN_PIN);
  if (pinned !== null) return JSON.parse(pinned) as ChainConfig;
  const res = await fetch('/web/chain.json', { headers: { accept: 'application/json' } });
  if (res.status !== 200) return undefined;
  const seeded = (await res.json()) as ChainConfig;
  if (seeded.pin !== undefined) localStorage.setItem(CHAIN_PIN, JSON.stringify(seeded));
  return seeded;
}

function record(e: EntryResult): string {
  const r = e.record as { kind?: string; who?: { id?: string }; what?: { action?: string; status?: number } } | null;
  if (r === null) return '';
  return [r.who?.id, r.kind, r.what?.action, r.what?.status].filter((x) => x !== undefined).join(' · ');
}

function statusOf(t: Strings, e: EntryResult): HTMLElement {
  if (e.status === 'verified') return h('span', { class: 'verify ok' }, t.auditVerified);
  if (e.status === 'pending-anchor') return h('span', { class: 'verify pending' }, t.auditPending);
  return h('span', { class: 'verify failed', role: 'alert' }, t.auditFailed(e.reason));
}

function rows(t: Strings, when: (iso: string) => string, v: AuditVerification): HTMLElement {
  if (v.entries.length === 0) return h('p', {}, t.auditEmpty);
  return h(
    'ul',
    { class: 'audit' },
    ...v.entries.map((e) =>
      h(
        'li',
        { 'data-index': e.index, 'data-status': e.status },
        h('span', { class: 'when' }, when(e.time)),
        ' ',
        e.record === null ? t.auditSealed : record(e),
        ' ',
        statusOf(t, e),
      ),
    ),
  );
}

/** The audit log section's body: rows appear once checked; `reasonOf` words a failure. */
export function auditList(t: Strings, when: (iso: string) => string, reasonOf: (err: unknown) => string): HTMLElement {
  const box = h('div', {}, h('p', {}, t.auditHelp), h('p', { role: 'status' }, t.auditChecking));
  const run = async (): Promise<void> => {
    const session = currentSession();
    if (session === undefined) return;
    const chain = await chainConfig();
    const pinnedKey = localStorage.getItem(KEY_PIN) ?? undefined;
    const v = await verifyPatientAudit({
      baseUrl: location.origin,
      token: session.token,
      ...(pinnedKey !== undefined ? { nodeKey: pinnedKey } : {}),
      chain: chain ?? { rpcUrl: `${location.origin}/no-chain` },
      query: { limit: 200 },
    });
    if (v.firstUse) localStorage.setItem(KEY_PIN, v.nodeKey);
    const overall = v.status === 'verified' ? 'ok' : v.status === 'pending-anchor' ? 'pending' : 'failed';
    const forget = h('button', { type: 'button', class: 'secondary' }, t.auditForgetPins);
    forget.addEventListener('click', () => {
      localStorage.removeItem(KEY_PIN);
      localStorage.removeItem(CHAIN_PIN);
      void run();
    });
    replace(
      box,
      h('p', {}, t.auditHelp),
      h(
        'p',
        { class: `audit-status ${overall}`, role: v.status === 'warning' ? 'alert' : 'status', 'data-status': v.status },
        chain === undefined ? `${v.summary} ${t.auditNoChain}` : v.summary,
      ),
      ...v.problems.map((p) => h('p', { class: 'error' }, p)),
      rows(t, when, v),
      v.keyMismatch !== undefined ? h('p', {}, t.auditPinsHelp, ' ', forget) : null,
    );
  };
  void run().catch((err: unknown) => replace(box, h('p', { class: 'error', role: 'alert' }, t.failed(reasonOf(err)))));
  return box;
}
