// What the patient page's forms share: its strings, how a time and a failure are worded, a button
// that runs an action (busy meanwhile, the failure shown beside it), radio rows and labelled fields.
import { ApiError, currentSession } from '../common/api.ts';
import { h, replace, uniqueId } from '../common/dom.ts';
import { stringsFor } from '../common/strings.ts';
import { PasskeyUnsupported } from '../common/webauthn.ts';

export const t = stringsFor(document.documentElement.lang);

export const when = (iso: string): string => new Date(iso).toLocaleString(document.documentElement.lang, { dateStyle: 'medium', timeStyle: 'short' });

/** A failure in the patient's words: a passkey refused or cancelled, or the node's reason. */
export function reasonOf(err: unknown): string {
  if (err instanceof PasskeyUnsupported) return t.passkeyUnsupported;
  if (err instanceof DOMException && (err.name === 'NotAllowedError' || err.name === 'AbortError')) return t.passkeyCancelled;
  if (err instanceof ApiError) return err.message;
  return err instanceof Error ? err.message : String(err);
}

/** Runs a button's action: the button is busy meanwhile, a failure shows in `out` (an alert). */
export async function act(button: HTMLButtonElement, out: HTMLElement, action: () => Promise<void>): Promise<void> {
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  replace(out);
  try {
    await action();
  } catch (err) {
    // A refused session has sent the page to sign-in already.
    if (err instanceof ApiError && err.status === 401 && currentSession() === undefined) return;
    replace(out, h('p', { class: 'error', role: 'alert' }, t.failed(reasonOf(err))));
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
  }
}

export function radio(name: string, value: string, label: string, checked = false): { input: HTMLInputElement; row: HTMLElement } {
  const id = uniqueId(name);
  const input = h('input', { type: 'radio', name, value, id, checked });
  return { input, row: h('div', { class: 'choice' }, input, h('label', { for: id }, label)) };
}

export function labelled(label: string, control: HTMLElement & { id: string }, help?: string): HTMLElement {
  const helpId = help !== undefined ? uniqueId('help') : undefined;
  if (helpId !== undefined) control.setAttribute('aria-describedby', helpId);
  return h('div', { class: 'field' }, h('label', { for: control.id }, label), help !== undefined ? h('p', { id: helpId, class: 'help' }, help) : null, control);
}
