/** Summary of measured call times (ms) that the benchmarks report: median (of an even count, the mean of the middle two), min and max. */
export interface Timing {
  medianMs: number;
  minMs: number;
  maxMs: number;
}

export function timingStats(times: readonly number[]): Timing {
  if (times.length === 0) throw new Error('timingStats: no times measured');
  const s = [...times].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return { medianMs: s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2, minMs: s[0]!, maxMs: s[s.length - 1]! };
}
