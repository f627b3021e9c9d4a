/** The progress bar on stderr (only when it is a terminal): steps, units, stage and ETA. */
import cliProgress from 'cli-progress';
import type { GenerationProgress } from '../node/pipeline.ts';

export interface ProgressView {
  update(p: GenerationProgress): void;
  stop(): void;
}

export function createProgressView(enabled: boolean): ProgressView {
  if (!enabled || !process.stderr.isTTY) return { update() {}, stop() {} };
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: '{phase} |{bar}| {percentage}% | step {step}/{steps} | units {value}/{total} | ETA {eta_formatted}',
      hideCursor: true,
      clearOnComplete: false,
      etaBuffer: 20,
    },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return {
    update(p) {
      const payload = {
        phase: p.phase === 'decode' || p.phase === 'encode' ? `${p.phase} ${p.tilesDone ?? 0}/${p.tilesTotal ?? 1}` : p.phase === 'text' ? 'prompt' : `stage ${p.stage}`,
        step: p.step,
        steps: p.totalSteps,
      };
      if (!started) {
        bar.start(Math.max(1, p.unitsTotal), p.unitsDone, payload);
        started = true;
      } else {
        bar.setTotal(Math.max(1, p.unitsTotal));
        bar.update(p.unitsDone, payload);
      }
    },
    stop() {
      if (started) bar.stop();
    },
  };
}
