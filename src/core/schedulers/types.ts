/**
 * Scheduler interface with diffusers' semantics (set_timesteps / scale_model_input / step), reshaped so
 * that all mutable state is an explicit value: a Scheduler is an immutable plan for a fixed number of
 * steps; a SchedulerState carries the step index and the multistep history. Patches that advance at
 * different times each carry their own state. Portable: no Node APIs.
 */
import type { StatefulCoefficients } from '../kernels/stateful-coefficients.ts';
import type { EulerCoefficients } from '../kernels/euler-range.ts';
import type { RandomSource } from '../random/types.ts';

/** 'flow': the velocity n - x0 of flow matching (x_t = (1 - sigma) x0 + sigma n; SD3). */
export type PredictionType = 'epsilon' | 'v_prediction' | 'sample' | 'flow';

/** scheduler/scheduler_config.json with diffusers' field names (all optional; defaults per scheduler). */
export interface SchedulerConfig {
  _class_name?: string;
  num_train_timesteps?: number;
  beta_start?: number;
  beta_end?: number;
  beta_schedule?: string;
  trained_betas?: number[] | null;
  prediction_type?: string;
  timestep_spacing?: string;
  steps_offset?: number;
  set_alpha_to_one?: boolean;
  clip_sample?: boolean;
  clip_sample_range?: number;
  skip_prk_steps?: boolean;
  use_karras_sigmas?: boolean;
  [key: string]: unknown;
}

export interface SchedulerState {
  /** Index into `timesteps` of the next step to take. */
  readonly stepIndex: number;
  /** Scheduler-specific history (previous model outputs for multistep solvers), never shared. */
  readonly history: readonly Float32Array[];
  /** Any further scheduler-specific scalars (e.g. PNDM counters). */
  readonly extra?: Readonly<Record<string, number>>;
}

export interface StepResult {
  prevSample: Float32Array;
  state: SchedulerState;
}

/**
 * A part of the latent for Scheduler.stepPart. With `at`, the model output, the sample and `into` are whole-latent
 * arrays, read and written at the positions `at` lists; with `positions`, they are compact (element i lies at position
 * positions[i] of the latent; `at` is then ignored); with neither, the whole latent. The state's history and `after`'s
 * arrays are whole-latent arrays in every case.
 */
export interface LatentPart {
  readonly modelOutput: Float32Array;
  readonly sample: Float32Array;
  readonly into: Float32Array;
  readonly at: Int32Array | null;
  readonly positions: Int32Array | null;
  /**
   * The history arrays of the state after the step, `count` of them, whole-latent and not the state's own: new ones
   * for a whole step; for the parts of one step, the same ones each time.
   */
  after(count: number): readonly Float32Array[];
  /** The step's noise over the whole latent, for a scheduler that draws it (the same array for every part of a step). */
  noise(): Float32Array;
}

export interface Scheduler {
  /** Canonical name, e.g. "euler", "euler-ancestral", "ddim", "pndm", "dpmpp-2m", "lms". */
  readonly name: string;
  readonly predictionType: PredictionType;
  /** Model timesteps, one per step, as diffusers' scheduler.timesteps (floats for Euler linspace). */
  readonly timesteps: readonly number[];
  /** Number of model evaluations (equals timesteps.length). */
  readonly numSteps: number;
  /** Standard deviation of the initial noise (diffusers init_noise_sigma). */
  readonly initNoiseSigma: number;
  initialState(): SchedulerState;
  /** Factor the model input is multiplied by at this step (diffusers scale_model_input), 1 for most. */
  inputScale(stepIndex: number): number;
  /**
   * Noise level of the sample at this step in the scheduler's own sample space:
   * sample = alpha * x0 + sigma * eps. Euler-type: alpha = 1, sigma = sigma_k; DDPM-type: sqrt(abar), sqrt(1 - abar).
   */
  noiseLevel(stepIndex: number): { alpha: number; sigma: number };
  /**
   * One step on the whole latent. `modelOutput` and `sample` have the same length; neither is modified.
   * Stochastic schedulers draw their noise from `rng` (required for them, ignored by others).
   */
  step(state: SchedulerState, modelOutput: Float32Array, sample: Float32Array, rng?: RandomSource): StepResult;
  /**
   * Where a step is stateless, elementwise and noise-free (Euler, DDIM, flow Euler): the step at `stepIndex` of the
   * positions `at` lists (every position when null) of `modelOutput` and `sample`, written to the same positions of
   * `into`, bit for bit what `step` writes there (`step` is this on every position). Methods step parts of the latent
   * with it: a stage-1 unit's scattered elements as it comes in, a run-ahead patch, a stage-2 tile.
   */
  stepPositions?(stepIndex: number, modelOutput: Float32Array, sample: Float32Array, into: Float32Array, at: Int32Array | null): void;
  /**
   * Where `stepPositions` is an Euler step (Euler, flow Euler, DDIM): its scalars at `stepIndex` as the WebAssembly kernels
   * take them, or null where a kernel would not give the bits of `stepPositions` (then methods use `stepPositions`).
   */
  eulerCoefficients?(stepIndex: number): EulerCoefficients | null;
  /**
   * True where `step` treats every position by itself, its history included (the multistep solvers DPM-Solver++, LMS
   * and PNDM keep one history value per position), and draws its noise, if any, as one rng.randn of the sample's
   * length (Euler ancestral): `step` on some positions, with the state's history and the step's noise cut to them,
   * gives those positions of the whole step bit for bit. Methods then step parts of the latent with it (PartStepper)
   * as they do with `stepPositions`.
   */
  readonly elementwise?: boolean;
  /**
   * Where `elementwise` (DPM-Solver++, LMS, Euler ancestral): the step of `state` on a part of the latent, reading the
   * history at the part's positions and writing the history after the step at the same positions of `part.after`'s
   * arrays, with no copies of the part; returns the state after the step (its history those arrays). `step` is this on
   * the whole latent, so a part gets the whole step's bits.
   */
  stepPart?(state: SchedulerState, part: LatentPart): SchedulerState;
  /**
   * Where `stepPart` reads a whole-latent array at each position (DPM-Solver++: its history; Euler ancestral: the
   * step's noise): its scalars for the step from `state` as the WebAssembly kernels take them (null where a kernel
   * would not give stepPart's bits), so that a method may take it fused with its own elementwise work, that array
   * read (and DPM-Solver++'s history after written) in the kernels' memory.
   */
  statefulCoefficients?(state: SchedulerState): StatefulCoefficients | null;
}
