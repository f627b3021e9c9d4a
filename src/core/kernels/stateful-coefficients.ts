/**
 * Scheduler steps that read a whole-latent array at each position, as the stage-1 unit kernel takes them
 * (kernels.wat unitStep): DPM-Solver++'s, whose history is the x0 predictions of the step before (kinds 7 to 12; the
 * arithmetic of src/core/schedulers/dpm-solver.ts stepPart), and Euler ancestral's, whose noise is drawn for the
 * whole latent each step (kinds 13 and 14; src/core/schedulers/euler-ancestral.ts stepPart). Portable: no Node APIs.
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

/** Euler ancestral's step: x + (x - x0) / sigma dt + noise up, x0 as the Euler kinds 0 and 1 take it. */
export interface AncestralCoefficients {
  /** 13 epsilon, 14 v. */
  kind: number;
  sigma: number;
  /** sigma_down - sigma. */
  dt: number;
  /** -sigma / sqrt(sigma^2 + 1) and sigma^2 + 1, for v prediction. */
  cOut: number;
  s2p1: number;
  /** The noise's standard deviation, sigma_up. */
  up: number;
  keeps: false;
}

export type StatefulCoefficients = DpmCoefficients | AncestralCoefficients;

/** A step of the whole latent that reads a whole-latent array per position, taken in the kernels (MethodContext.statefulStep). */
export interface StatefulKernelStep {
  coefficients: StatefulCoefficients;
  /**
   * What the step reads at each position, in the latent's layout: DPM-Solver++'s x0 predictions of the step before
   * (null where it reads none, at first order), Euler ancestral's noise of the step.
   */
  input: Float32Array | null;
  /**
   * Once every position of the latent took the step: the history after it (DPM-Solver++'s x0 predictions of this
   * step, in the latent's layout; null where the state after keeps none, coefficients.keeps false). Once per step.
   */
  commit(after: Float32Array | null): void;
}
