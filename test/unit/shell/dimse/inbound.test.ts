// The queue between the socket and the ingest: pieces come out as they went in, the socket is
// paused while a high-water mark's worth waits and resumed as the reader catches up, and an
// association that breaks off fails the reader.
import { describe, expect, it } from 'vitest';
import { InstanceInbound } from '../../../../src/shell/dimse/inbound.ts';

function flowLog(): { log: string[]; flow: { pause(): void; resume(): void } } {
  const log: string[] = [];
  return { log, flow: { pause: () => log.push('pause'), resume: () => log.push('resume') } };
}

describe('InstanceInbound', () => {
  it('hands on the pieces in order, then null at the end; the same buffers, not copies', async () => {
    const { flow } = flowLog();
    const inbound = new InstanceInbound(1000, flow);
    const pieces = Array.from({ length: 3000 }, (_, i) => Buffer.alloc(1 + (i % 7), i));
    const taken: Buffer[] = [];
    // The reader takes some as they come, some after a backlog has built up.
    for (const [i, p] of pieces.entries()) {
      inbound.push(p);
      if (i % 3 !== 0) taken.push((await inbound.take())!);
    }
    inbound.end();
    for (let piece = await inbound.take(); piece !== null; piece = await inbound.take()) taken.push(piece);
    expect(taken).toHaveLength(pieces.length);
    for (const [i, t] of taken.entries()) expect(t).toBe(pieces[i]);
    expect(inbound.complete).toBe(true);
    expect(inbound.received).toBe(inbound.taken);
  });

  it('pauses the socket at the high-water mark and resumes it once half of that is taken', async () => {
    const { log, flow } = flowLog();
    const inbound = new InstanceInbound(1000, flow);
    for (let i = 0; i < 9; i++) inbound.push(Buffer.alloc(100));
    expect(log).toEqual([]);
    inbound.push(Buffer.alloc(100));
    expect(log).toEqual(['pause']);
    // More pushed meanwhile (the rest of a socket read) is kept, and pauses nothing again.
    inbound.push(Buffer.alloc(100));
    expect(log).toEqual(['pause']);
    for (let i = 0; i < 5; i++) await inbound.take();
    expect(log).toEqual(['pause']);
    await inbound.take();
    expect(log).toEqual(['pause', 'resume']);
  });

  it('wakes a waiting reader with the next piece', async () => {
    const inbound = new InstanceInbound(1000, flowLog().flow);
    const next = inbound.take();
    setTimeout(() => inbound.push(Buffer.from('late')), 5);
    expect((await next)!.toString()).toBe('late');
  });

  it('fails the reader when the association breaks off, drops what comes after, and lets the socket flow', async () => {
    const { log, flow } = flowLog();
    const inbound = new InstanceInbound(100, flow);
    inbound.push(Buffer.alloc(150));
    expect(log).toEqual(['pause']);
    const waiting = inbound.take();
    await waiting;
    const next = inbound.take();
    inbound.fail(new Error('association gone'));
    await expect(next).rejects.toThrow('association gone');
    inbound.push(Buffer.alloc(500));
    expect(log).toEqual(['pause', 'resume']);
    await expect(inbound.take()).rejects.toThrow('association gone');
    expect(inbound.complete).toBe(false);
    expect(inbound.received).toBe(650);
  });

  it('once discarded, receives and drops the rest without pausing', () => {
    const { log, flow } = flowLog();
    const inbound = new InstanceInbound(100, flow);
    inbound.push(Buffer.alloc(100));
    inbound.discard();
    expect(log).toEqual(['pause', 'resume']);
    for (let i = 0; i < 10; i++) inbound.push(Buffer.alloc(100));
    inbound.end();
    expect(log).toEqual(['pause', 'resume']);
    expect(inbound.received).toBe(1100);
    expect(inbound.complete).toBe(false);
  });
});
