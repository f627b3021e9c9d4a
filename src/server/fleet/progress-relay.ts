/** Throttled progress of one job, from the engine to BullMQ (and so to the server's event stream). */
import type { EngineProgress } from '../engine.ts';
import type { JobProgress } from '../queue.ts';

/**
 * A job's progress to BullMQ (and so to the server's event stream): at most one update per `intervalMs`, but a
 * new phase or stage and each preview at once; updates are sent in order, and the last one is flushed before the
 * job completes. `check` runs with each update (the cancel key).
 */
export function progressRelay(job: { updateProgress(p: object): Promise<unknown> }, intervalMs: number, check: () => Promise<void>) {
  let sent = 0;
  let chain: Promise<unknown> = Promise.resolve();
  let pending: JobProgress | undefined;
  let timer: NodeJS.Timeout | undefined;
  let current: JobProgress | undefined;
  let revision = 0;
  let firstUnits: { t: number; units: number } | undefined;
  const send = (p: JobProgress) => {
    sent = performance.now();
    pending = undefined;
    clearTimeout(timer);
    timer = undefined;
    chain = chain.then(() => job.updateProgress(p as unknown as object)).then(check).catch(() => undefined);
  };
  return {
    report(p: EngineProgress) {
      const now = performance.now();
      let eta: number | undefined;
      if (p.unitsDone > 0) {
        firstUnits ??= { t: now, units: p.unitsDone };
        const done = p.unitsDone - firstUnits.units;
        if (done > 0) eta = Math.round((((p.unitsTotal - p.unitsDone) * (now - firstUnits.t)) / 1000 / done) * 10) / 10;
      }
      const next: JobProgress = { ...p, ...(eta !== undefined ? { etaSeconds: eta } : {}), previewRevision: revision };
      const changed = !current || current.phase !== p.phase || current.stage !== p.stage;
      current = next;
      if (changed || now - sent >= intervalMs) send(next);
      else {
        pending = next;
        timer ??= setTimeout(() => pending && send(pending), Math.max(0, intervalMs - (now - sent)));
      }
    },
    preview() {
      revision += 1;
      if (current) send({ ...current, previewRevision: revision });
    },
    async flush() {
      if (pending) send(pending);
      clearTimeout(timer);
      await chain;
    },
  };
}
