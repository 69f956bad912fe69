// GrantWatch: a response resting on grants stops when none of them allows it any more, and not before.
import { EventEmitter } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { GrantWatch } from '../../../src/access/grant-watch.ts';
import type { EnforcedGrant } from '../../../src/grants/model.ts';

/** A response stand-in: destroy() closes it, as a socket's would. */
class Reply extends EventEmitter {
  destroyed = false;
  reason: string | undefined;
  readonly raw = this;
  destroy(err?: Error): void {
    this.destroyed = true;
    this.reason = err?.message;
    this.emit('close');
  }
}

/** Grants in force unless revoked; revocations here are announced, `revokeElsewhere` ones are not. */
function grants() {
  const revoked = new Set<string>();
  const listeners = new Set<(id: string) => void>();
  return {
    activeById: (id: string) => (revoked.has(id) ? undefined : ({ id } as unknown as EnforcedGrant)),
    onRevoked(fn: (id: string) => void) {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
    revoke(id: string) {
      revoked.add(id);
      for (const fn of listeners) fn(id);
    },
    revokeElsewhere: (id: string) => revoked.add(id),
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const inDays = (d: number) => new Date(Date.now() + d * 86_400_000);

describe('GrantWatch', () => {
  let watch: GrantWatch | undefined;
  afterEach(() => watch?.close());

  it('leaves a response alone whose grant ends beyond the range of a timer (30 days)', async () => {
    const g = grants();
    watch = new GrantWatch(g, { pollMs: 20 });
    const reply = new Reply();
    watch.watch([{ id: 'a', notAfter: inDays(30) }], reply);
    await sleep(100);
    expect(reply.destroyed).toBe(false);
  });

  it('cuts at once on a revocation in this process', () => {
    const g = grants();
    watch = new GrantWatch(g, { pollMs: 60_000 });
    const reply = new Reply();
    watch.watch([{ id: 'a', notAfter: null }], reply);
    g.revoke('a');
    expect(reply.destroyed).toBe(true);
    expect(reply.reason).toContain('revoked');
  });

  it('finds a revocation made elsewhere by its poll', async () => {
    const g = grants();
    watch = new GrantWatch(g, { pollMs: 20 });
    const reply = new Reply();
    watch.watch([{ id: 'a', notAfter: null }], reply);
    g.revokeElsewhere('a');
    await sleep(100);
    expect(reply.destroyed).toBe(true);
  });

  it('keeps a response that another of its grants still allows, and cuts it when that one goes too', () => {
    const g = grants();
    watch = new GrantWatch(g, { pollMs: 60_000 });
    const reply = new Reply();
    const other = new Reply();
    watch.watch(
      [
        { id: 'a', notAfter: null },
        { id: 'b', notAfter: null },
      ],
      reply,
    );
    watch.watch([{ id: 'a', notAfter: null }], other);
    g.revoke('a');
    expect(other.destroyed).toBe(true);
    expect(reply.destroyed).toBe(false);
    g.revoke('b');
    expect(reply.destroyed).toBe(true);
  });

  it("cuts at the last grant's end, to the timer", async () => {
    const g = grants();
    watch = new GrantWatch(g, { pollMs: 60_000 });
    const reply = new Reply();
    watch.watch(
      [
        { id: 'a', notAfter: new Date(Date.now() + 30) },
        { id: 'b', notAfter: new Date(Date.now() + 80) },
      ],
      reply,
    );
    await sleep(55);
    expect(reply.destroyed).toBe(false);
    await sleep(80);
    expect(reply.destroyed).toBe(true);
    expect(reply.reason).toContain('ended');
  });

  it('keeps nothing of a response whose client left before it was watched, and stops polling', async () => {
    // The access check awaits the audit write before watch(): a client may be gone by then,
    // its 'close' already emitted. Held, it stayed in the maps and the poll ran for good.
    const g = grants();
    let lookups = 0;
    watch = new GrantWatch(
      {
        onRevoked: g.onRevoked,
        activeById: (id) => {
          lookups++;
          return g.activeById(id);
        },
      },
      { pollMs: 10 },
    );
    const gone = new Reply();
    gone.destroy();
    watch.watch([{ id: 'a', notAfter: null }], gone);
    const live = new Reply();
    watch.watch([{ id: 'b', notAfter: null }], live);
    live.destroy(); // a response that ends while watched is forgotten on its close
    await sleep(100);
    expect(lookups).toBe(0);
  });
});
