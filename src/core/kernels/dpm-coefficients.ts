/**
 * A DPM-Solver++ step's scalars as the stage-1 unit kernel takes them (kernels.wat unitStep, kinds 7 to 12; the
 * arithmetic of src/core/schedulers/dpm-solver.ts stepPart). Portable: no Node APIs.
 */
export interface DpmCoefficients {
  /** 7 to 9: first order, 10 to 12: second order (reads the x0 predictions of the step before); by prediction type, epsilon, v, sample. */
  kind: number;
  /** alpha and sigma at the step (x = alpha x0 + sigma eps). */
  alpha: number;
  sigma: number;
  /** The update ratio x - c0 x0 (+ c1 invR0 (x0 - x0 before), second order). */
  ratio: number;
  c0: number;
  c1: number;
  invR0: number;
  /** Whether the state after the step keeps this step's x0 predictions as its history (solver order 2). */
  keeps: boolean;
  /** The state after the step's scalars (SchedulerState.extra). */
  extra: Readonly<Record<string, number>>;
}

/** A DPM-Solver++ step of the whole latent taken in the kernels (MethodContext.historyStep). */
export interface HistoryKernelStep {
  coefficients: DpmCoefficients;
  /** The history the step reads (the whole latent's x0 predictions of the step before, in the latent's layout), or null where it reads none. */
  before: Float32Array | null;
  /**
   * Once every position of the latent took the step: the history after it (this step's x0 predictions, in the
   * latent's layout; null where the state after keeps none, coefficients.keeps false). Once per step.
   */
  commit(after: Float32Array | null): void;
}
