// Memory and CPU of a process (the server under test) from procfs, the way the Orthanc peer was
// measured, so figures compare: VmHWM after a clear_refs reset is the kernel's exact peak; VmRSS
// polled every 20 ms backs it up where the reset is not permitted (another user's process).
// Linux only.

import { readFileSync, writeFileSync } from 'node:fs';

export const DEFAULT_RSS_INTERVAL_MS = 20;
// /proc reports CPU times in USER_HZ ticks, which the kernel ABI fixes at 100 per second.
const USER_HZ = 100;
const MiB = 1 << 20;

export interface ProcMemory {
  rssBytes: number;
  /** Peak RSS since process start or the last clear_refs reset. */
  hwmBytes: number;
}

export function readProcMemory(pid: number): ProcMemory {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (key: string): number => {
    const m = new RegExp(`^${key}:\\s+(\\d+)\\s+kB`, 'm').exec(status);
    if (!m) throw new Error(`no ${key} in /proc/${pid}/status`);
    return Number(m[1]) * 1024;
  };
  return { rssBytes: kib('VmRSS'), hwmBytes: kib('VmHWM') };
}

/** utime + stime of a process, in seconds. */
export function readCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) may contain spaces and ')'; fields are counted after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / USER_HZ;
}

/** Busy and total CPU seconds of the whole machine, summed over cores. */
export function readMachineCpu(): { busySeconds: number; totalSeconds: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
  const f = line.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  const idle = (f[3] ?? 0) + (f[4] ?? 0); // idle + iowait
  return { busySeconds: (total - idle) / USER_HZ, totalSeconds: total / USER_HZ };
}

/** Resets VmHWM to the current RSS; false where not permitted. */
export function resetHwm(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

export interface RssReport {
  /** Highest VmRSS seen by polling (misses spikes shorter than the interval). */
  peakRssMiB: number;
  /** Kernel peak since start(); null when clear_refs was not permitted (VmHWM would be the lifetime peak). */
  hwmMiB: number | null;
  rssBeforeMiB: number;
  /** null when the process had exited by stop(). */
  rssAfterMiB: number | null;
  /** CPU seconds the process used between start and stop; null when it had exited. */
  cpuSeconds: number | null;
  /** Busy CPU seconds of the whole machine (all processes, kernel included). */
  machineBusyCpuSeconds: number;
  samples: number;
}

export interface RssSampler {
  stop(): RssReport;
}

export function startRssSampler(pid: number, opts: { intervalMs?: number } = {}): RssSampler {
  const hwmReset = resetHwm(pid);
  const before = readProcMemory(pid);
  const cpu0 = readCpuSeconds(pid);
  const machine0 = readMachineCpu();
  let peak = before.rssBytes;
  let samples = 1;
  const timer = setInterval(() => {
    try {
      peak = Math.max(peak, readProcMemory(pid).rssBytes);
      samples++;
    } catch {
      // the process exited; stop() reports what was seen
    }
  }, opts.intervalMs ?? DEFAULT_RSS_INTERVAL_MS);
  timer.unref(); // a forgotten sampler must not keep the benchmark alive
  let stopped = false;
  return {
    stop(): RssReport {
      if (stopped) throw new Error('sampler already stopped');
      stopped = true;
      clearInterval(timer);
      let after: ProcMemory | null = null;
      let cpu: number | null = null;
      try {
        after = readProcMemory(pid);
        cpu = readCpuSeconds(pid) - cpu0;
        peak = Math.max(peak, after.rssBytes);
        samples++;
      } catch {
        // exited
      }
      const round = (b: number): number => Math.round((b / MiB) * 10) / 10;
      return {
        peakRssMiB: round(peak),
        hwmMiB: hwmReset && after ? round(after.hwmBytes) : null,
        rssBeforeMiB: round(before.rssBytes),
        rssAfterMiB: after ? round(after.rssBytes) : null,
        cpuSeconds: cpu === null ? null : Math.round(cpu * 100) / 100,
        machineBusyCpuSeconds: Math.round((readMachineCpu().busySeconds - machine0.busySeconds) * 100) / 100,
        samples,
      };
    },
  };
}
