/** Published scheduler configs used by benchmarks and tests. Portable. */
import type { SchedulerConfig } from './types.ts';

/** Stable Diffusion 1.5's scheduler/scheduler_config.json (PNDMScheduler, scaled-linear betas, leading spacing). */
export const SD15_SCHEDULER_CONFIG: Readonly<SchedulerConfig> = Object.freeze({
  _class_name: 'PNDMScheduler',
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  num_train_timesteps: 1000,
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
  prediction_type: 'epsilon',
  timestep_spacing: 'leading',
  clip_sample: false,
});
