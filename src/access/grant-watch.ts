// A response that rests on grants stops when one of them does: at once when a grant is revoked
// (the patient's "revoke" takes effect on a WADO stream already running, within the second), and
// at the grant's end. The connection is destroyed: the only honest signal once headers are out;
// the client sees a broken transfer, and the audit records the access as not complete.
// A revocation made in this process is heard at once (onRevoked); one made elsewhere (the CLI, or
// another node on the same database) is found by a poll of the watched grants, every `pollMs`.
import type { GrantsForAccess } from '../grants/model.ts';

/** How often running responses' grants are looked up again, ms: a revocation from another process cuts within this. */
export const DEFAULT_GRANT_POLL_MS = 250;

interface Cuttable {
  raw: { destroyed: boolean; destroy(err?: Error): void; once(event: 'close', fn: () => void): unknown };
}

export class GrantWatch {
  readonly #byGrant = new Map<string, Set<Cuttable>>();
  readonly #unsubscribe: () => void;
  readonly #grants: Pick<GrantsForAccess, 'onRevoked' | 'activeById'>;
  readonly #pollMs: number;
  #poll: NodeJS.Timeout | undefined;

  constructor(grants: Pick<GrantsForAccess, 'onRevoked' | 'activeById'>, options: { pollMs?: number } = {}) {
    this.#grants = grants;
    this.#pollMs = options.pollMs ?? DEFAULT_GRANT_POLL_MS;
    this.#unsubscribe = grants.onRevoked((id) => this.#cutAll(id, `grant ${id} was revoked`));
  }

  #cutAll(id: string, why: string): void {
    for (const reply of this.#byGrant.get(id) ?? []) cut(reply, why);
  }

  /** Looks up every watched grant again: one no longer in force (revoked elsewhere, no longer verifying) cuts its responses. */
  #check(): void {
    const now = new Date();
    for (const id of [...this.#byGrant.keys()]) {
      if (this.#grants.activeById(id, now) === undefined) this.#cutAll(id, `grant ${id} is no longer in force`);
    }
  }

  #schedule(): void {
    if (this.#byGrant.size === 0) {
      if (this.#poll !== undefined) clearInterval(this.#poll);
      this.#poll = undefined;
    } else if (this.#poll === undefined) {
      this.#poll = setInterval(() => this.#check(), this.#pollMs);
      this.#poll.unref();
    }
  }

  /** Cuts `reply` when any of `grants` is revoked, or at the earliest end among them. */
  watch(grants: ReadonlyArray<{ id: string; notAfter: Date | null }>, reply: Cuttable): void {
    for (const g of grants) {
      let set = this.#byGrant.get(g.id);
      if (set === undefined) this.#byGrant.set(g.id, (set = new Set()));
      set.add(reply);
    }
    this.#schedule();
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
      this.#schedule();
    });
  }

  close(): void {
    this.#unsubscribe();
    if (this.#poll !== undefined) clearInterval(this.#poll);
    this.#poll = undefined;
  }
}

function cut(reply: Cuttable, why: string): void {
  if (!reply.raw.destroyed) reply.raw.destroy(new Error(why));
}
