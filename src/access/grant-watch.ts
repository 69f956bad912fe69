// A response that rests on grants stops when one of them does: at once when a grant is revoked
// (the patient's "revoke" takes effect on a WADO stream already running, within the second), and
// at the grant's end. The connection is destroyed: the only honest signal once headers are out;
// the client sees a broken transfer, and the audit records the access as not complete.
import type { GrantsForAccess } from '../grants/model.ts';

interface Cuttable {
  raw: { destroyed: boolean; destroy(err?: Error): void; once(event: 'close', fn: () => void): unknown };
}

export class GrantWatch {
  readonly #byGrant = new Map<string, Set<Cuttable>>();
  readonly #unsubscribe: () => void;

  constructor(grants: Pick<GrantsForAccess, 'onRevoked'>) {
    this.#unsubscribe = grants.onRevoked((id) => {
      for (const reply of this.#byGrant.get(id) ?? []) cut(reply, `grant ${id} was revoked`);
    });
  }

  /** Cuts `reply` when any of `grants` is revoked, or at the earliest end among them. */
  watch(grants: ReadonlyArray<{ id: string; notAfter: Date | null }>, reply: Cuttable): void {
    for (const g of grants) {
      let set = this.#byGrant.get(g.id);
      if (set === undefined) this.#byGrant.set(g.id, (set = new Set()));
      set.add(reply);
    }
    const ends = grants.map((g) => g.notAfter?.getTime()).filter((t): t is number => t !== undefined);
    // Any grant of the set allows the access, so the response stands until the last one ends.
    const end = ends.length === grants.length && ends.length > 0 ? Math.max(...ends) : undefined;
    const timer = end === undefined ? undefined : setTimeout(() => cut(reply, 'the grant ended'), Math.max(0, end - Date.now()));
    timer?.unref();
    reply.raw.once('close', () => {
      if (timer !== undefined) clearTimeout(timer);
      for (const g of grants) {
        const set = this.#byGrant.get(g.id);
        set?.delete(reply);
        if (set?.size === 0) this.#byGrant.delete(g.id);
      }
    });
  }

  close(): void {
    this.#unsubscribe();
  }
}

function cut(reply: Cuttable, why: string): void {
  if (!reply.raw.destroyed) reply.raw.destroy(new Error(why));
}
