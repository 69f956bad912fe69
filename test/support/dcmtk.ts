// dcmtk's own tools (storescu, echoscu), as a modality or PACS runs them against the node's DIMSE
// Storage SCP, and the Part 10 layout helpers the DIMSE suites compare with.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';

export const STORESCU = '/usr/bin/storescu';
export const ECHOSCU = '/usr/bin/echoscu';

export interface ToolResult {
  code: number | null;
  output: string;
}

// dcmtk as built by Debian keeps Nagle's algorithm on unless TCP_NODELAY=1: every C-STORE's last
// segment then waits for the SCP's delayed ACK, ~40 ms an instance whatever the SCP does
// (storescu to dcmtk's own storescp: 20 instances/s with it, 300 without).
export const DCMTK_ENV = { ...process.env, TCP_NODELAY: '1' };

export function runTool(cmd: string, args: string[], timeoutMs = 120_000): Promise<ToolResult> {
  return startTool(cmd, args, timeoutMs).result;
}

export function startTool(cmd: string, args: string[], timeoutMs = 120_000): { child: ChildProcess; result: Promise<ToolResult> } {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: DCMTK_ENV });
  return { child, result: collect(child, timeoutMs) };
}

/** Bytes a process has read so far (files and sockets alike), from procfs. */
export function bytesRead(pid: number): number {
  return Number(/^rchar: (\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))![1]);
}

export function collect(child: ChildProcess, timeoutMs = 120_000): Promise<ToolResult> {
  let output = '';
  child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  return new Promise((resolve) =>
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    }),
  );
}

/** storescu to the SCP at 127.0.0.1:`port`, called AE `aeTitle`. */
export function storescu(port: number, files: string[], extra: string[] = [], aeTitle = 'DICOMVAULT'): Promise<ToolResult> {
  return runTool(STORESCU, ['-v', '-aec', aeTitle, ...extra, '127.0.0.1', String(port), ...files]);
}

/** Offset of the data set in a Part 10 file: after preamble, "DICM" and the group 0002 elements. */
export function dataSetOffset(head: Buffer): number {
  if (head.toString('latin1', 128, 132) !== 'DICM') throw new Error('not a Part 10 file');
  let at = 132;
  // File Meta is Explicit VR Little Endian (PS3.10 7.1).
  while (head.readUInt16LE(at) === 0x0002) {
    const vr = head.toString('latin1', at + 4, at + 6);
    const long = ['OB', 'OD', 'OF', 'OL', 'OV', 'OW', 'SQ', 'UC', 'UN', 'UR', 'UT', 'SV', 'UV'].includes(vr);
    at += long ? 12 + head.readUInt32LE(at + 8) : 8 + head.readUInt16LE(at + 6);
  }
  return at;
}
