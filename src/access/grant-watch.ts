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
  /** Each running response, and the grants that allow it (any one of them suffices). */
  readonly #replies = new Map<Cuttable, string[]>();
  readonly #byGrant = new Map<string, Set<Cuttable>>();
  readonly #unsubscribe: () => void;
  readonly #grants: Pick<GrantsForAccess, 'onRevoked' | 'activeById'>;
  readonly #pollMs: number;
  #poll: NodeJS.Timeout | undefined;

  constructor(grants: Pick<GrantsForAccess, 'onRevoked' | 'activeById'>, options: { pollMs?: number } = {}) {
    this.#grants = grants;
    this.#pollMs = options.pollMs ?? DEFAULT_GRANT_POLL_MS;
    this.#unsubscribe = grants.onRevoked((id) => this.#recheck(this.#byGrant.get(id) ?? [], `grant ${id} was revoked`));
  }

  /** Cuts each of `replies` that no grant of its own allows any more. */
  #recheck(replies: Iterable<Cuttable>, why: string): void {
    const now = new Date();
    const inForce = new Map<string, boolean>();
    const active = (id: string) => {
      let yes = inForce.get(id);
      if (yes === undefined) {
        yes = this.#grants.activeById(id, now) !== undefined;
        inForce.set(id, yes);
      }
      return yes;
    };
    for (const reply of [...replies]) {
      const ids = this.#replies.get(reply);
      if (ids !== undefined && !ids.some(active)) cut(reply, why);
    }
  }

  #schedule(): void {
    if (this.#replies.size === 0) {
      if (this.#poll !== undefined) clearInterval(this.#poll);
      this.#poll = undefined;
    } else if (this.#poll === undefined) {
      // The poll finds revocations made elsewhere, grants that stopped verifying, and ends.
      this.#poll = setInterval(() => this.#recheck(this.#replies.keys(), 'the grant is no longer in force'), this.#pollMs);
      this.#poll.unref();
    }
  }

  /** Cuts `reply` once none of `grants` allows it: when revoked (here or elsewhere), or at the last one's end. */
  watch(grants: ReadonlyArray<{ id: string; notAfter: Date | null }>, reply: Cuttable): void {
    // A client gone while its access was checked (the audit write is awaited first): its 'close'
    // has been emitted already and would never come again, so the reply would stay in the maps
    // and keep the poll running for the life of the process. There is nothing left to cut.
    if (reply.raw.destroyed) return;
    const ids = grants.map((g) => g.id);
    this.#replies.set(reply, ids);
    for (const id of ids) {
      const set = this.#byGrant.get(id) ?? new Set();
      this.#byGrant.set(id, set);
      set.add(reply);
    }
    this.#schedule();
    const ends = grants.map((g) => g.notAfter?.getTime()).filter((t): t is number => t !== undefined);
    // Any grant of the set allows the access, so the response stands until the last one ends. A
    // timer cuts at that moment to the millisecond; one beyond setTimeout's range (24.8 days) is
    // left to the poll, which sees the end as well.
    const end = ends.length === grants.length && ends.length > 0 ? Math.max(...ends) : undefined;
    const delay = end === undefined ? undefined : Math.max(0, end - Date.now());
    const timer = delay === undefined || delay > MAX_TIMEOUT_MS ? undefined : setTimeout(() => cut(reply, 'the grant ended'), delay);
    timer?.unref();
    reply.raw.once('close', () => {
      if (timer !== undefined) clearTimeout(timer);
      this.#replies.delete(reply);
      for (const id of ids) {
        const set = this.#byGrant.get(id);
        set?.delete(reply);
        if (set?.size === 0) this.#byGrant.delete(id);
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

/** The longest delay setTimeout keeps (a signed 32-bit count of ms); a longer one fires at once. */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

function cut(reply: Cuttable, why: string): void {
  if (!reply.raw.destroyed) reply.raw.destroy(new Error(why));
}
