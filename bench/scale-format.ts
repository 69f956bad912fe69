// How "scale on paper" (scale.ts) writes quantities: bytes in binary or decimal units, MiB,
// counts and durations, '?' for what is not a finite number. Apart from scale.ts because other
// bench reports write bytes the same way (scenarios.ts).

/** Binary units (KiB...PiB) unless `decimal` (kB...PB). */
export function bytes(n: number, decimal = false): string {
  if (!Number.isFinite(n)) return '?';
  const base = decimal ? 1000 : 1024;
  const units = decimal ? ['B', 'kB', 'MB', 'GB', 'TB', 'PB', 'EB'] : ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  let u = 0;
  let v = n;
  while (Math.abs(v) >= base && u < units.length - 1) {
    v /= base;
    u++;
  }
  const digits = u === 0 || v >= 100 ? 0 : v >= 10 ? 1 : 2;
  return `${Number(v.toFixed(digits))} ${units[u]}`;
}

export function mib(n: number): string {
  return Number.isFinite(n) ? `${n < 10 ? n.toFixed(1) : Math.round(n).toLocaleString('en-US')} MiB` : '?';
}

export function count(n: number): string {
  return Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '?';
}

export function duration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 48 * 3600) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} days`;
}
