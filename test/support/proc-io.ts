// I/O counters of a process (the node under test) from /proc/<pid>/io. Linux only.
//
// `rchar` counts every byte the process read through read()/pread() — block files, the
// catalog, sockets — whether it came from the page cache or the disk; `readBytes` counts only
// what was fetched from the storage device. Blocks just written sit in the page cache, so
// `rchar` is the one that shows how much of an instance a request read.
import { readFileSync } from 'node:fs';

export interface ProcIo {
  rchar: number;
  readBytes: number;
}

export function readProcIo(pid: number): ProcIo {
  const text = readFileSync(`/proc/${pid}/io`, 'utf8');
  const field = (name: string): number => {
    const m = new RegExp(`^${name}:\\s+(\\d+)$`, 'm').exec(text);
    if (!m) throw new Error(`no ${name} in /proc/${pid}/io`);
    return Number(m[1]);
  };
  return { rchar: field('rchar'), readBytes: field('read_bytes') };
}

/** Bytes `pid` read while `fn` ran (nothing else should be asking the process for work). */
export async function ioDuring<T>(pid: number, fn: () => Promise<T>): Promise<{ result: T; io: ProcIo }> {
  const before = readProcIo(pid);
  const result = await fn();
  const after = readProcIo(pid);
  return { result, io: { rchar: after.rchar - before.rchar, readBytes: after.readBytes - before.readBytes } };
}
