/**
 * Reading scheduler_config.json the way diffusers does. A config names its class (`_class_name`); the
 * values it leaves out take that class's constructor defaults. Replacing the class
 * (`Target.from_config(source.config)` in diffusers, `--scheduler` here) keeps every value the config
 * has, including the source class's defaults, and takes the target's defaults for the rest. That is why
 * SD 1.5's PNDM config used with Euler keeps PNDM's "leading" spacing rather than Euler's "linspace".
 */
import { invalidArgument } from '../errors.ts';
import type { SchedulerConfig } from './types.ts';

import { SCHEDULER_NAMES, type SchedulerName } from '../options/registry.ts';

export { SCHEDULER_NAMES, type SchedulerName };

export const CLASS_NAMES: Record<SchedulerName, string> = {
  euler: 'EulerDiscreteScheduler',
  'euler-ancestral': 'EulerAncestralDiscreteScheduler',
  ddim: 'DDIMScheduler',
  pndm: 'PNDMScheduler',
  'dpmpp-2m': 'DPMSolverMultistepScheduler',
  lms: 'LMSDiscreteScheduler',
  'flow-euler': 'FlowMatchEulerDiscreteScheduler',
};

const COMMON = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: 'linear',
  trained_betas: null,
  prediction_type: 'epsilon',
  steps_offset: 0,
};

/** A model folder without a scheduler config: diffusers' Euler with its defaults (the loaders say so in their notes). */
export const MISSING_SCHEDULER_CONFIG: SchedulerConfig = { _class_name: 'EulerDiscreteScheduler' };
export const MISSING_SCHEDULER_NOTE = 'no scheduler config: diffusers defaults for EulerDiscreteScheduler';

/** Constructor defaults of each diffusers class (the fields this project reads). */
export const CLASS_DEFAULTS: Record<SchedulerName, Record<string, unknown>> = {
  euler: {
    ...COMMON,
    interpolation_type: 'linear',
    use_karras_sigmas: false,
    use_exponential_sigmas: false,
    use_beta_sigmas: false,
    sigma_min: null,
    sigma_max: null,
    timestep_spacing: 'linspace',
    timestep_type: 'discrete',
    rescale_betas_zero_snr: false,
    final_sigmas_type: 'zero',
  },
  'euler-ancestral': { ...COMMON, timestep_spacing: 'linspace', rescale_betas_zero_snr: false },
  ddim: {
    ...COMMON,
    clip_sample: true,
    set_alpha_to_one: true,
    thresholding: false,
    clip_sample_range: 1.0,
    timestep_spacing: 'leading',
    rescale_betas_zero_snr: false,
  },
  pndm: { ...COMMON, skip_prk_steps: false, set_alpha_to_one: false, timestep_spacing: 'leading' },
  'dpmpp-2m': {
    ...COMMON,
    solver_order: 2,
    thresholding: false,
    algorithm_type: 'dpmsolver++',
    solver_type: 'midpoint',
    lower_order_final: true,
    euler_at_final: false,
    use_karras_sigmas: false,
    use_exponential_sigmas: false,
    use_beta_sigmas: false,
    use_lu_lambdas: false,
    use_flow_sigmas: false,
    final_sigmas_type: 'zero',
    lambda_min_clipped: null,
    variance_type: null,
    timestep_spacing: 'linspace',
    rescale_betas_zero_snr: false,
    use_dynamic_shifting: false,
  },
  lms: {
    ...COMMON,
    use_karras_sigmas: false,
    use_exponential_sigmas: false,
    use_beta_sigmas: false,
    timestep_spacing: 'linspace',
  },
  'flow-euler': {
    num_train_timesteps: 1000,
    shift: 1.0,
    use_dynamic_shifting: false,
    base_shift: 0.5,
    max_shift: 1.15,
    base_image_seq_len: 256,
    max_image_seq_len: 4096,
    invert_sigmas: false,
    shift_terminal: null,
    use_karras_sigmas: false,
    use_exponential_sigmas: false,
    use_beta_sigmas: false,
    time_shift_type: 'exponential',
    stochastic_sampling: false,
  },
};

export function nameForClass(className: string): SchedulerName | undefined {
  return SCHEDULER_NAMES.find((n) => CLASS_NAMES[n] === className);
}

/** Typed, validated access to the effective config of one target class. */
export class ConfigReader {
  constructor(
    private readonly values: Readonly<Record<string, unknown>>,
    readonly target: SchedulerName,
  ) {}

  /** The fix of a config value: edit the file, or, where the model takes another scheduler, pick one (SD3 takes none). */
  private fix(edit: string): string {
    return this.target === 'flow-euler' ? `${edit}.` : `${edit} or pick another --scheduler.`;
  }

  raw(key: string): unknown {
    return this.values[key];
  }

  number(key: string, check: (v: number) => boolean = Number.isFinite, expected = 'a finite number'): number {
    const v = this.values[key];
    if (typeof v !== 'number' || !check(v)) throw invalidArgument(`scheduler config ${key}`, expected, v);
    return v;
  }

  integer(key: string, min: number): number {
    return this.number(key, (v) => Number.isInteger(v) && v >= min, `an integer >= ${min}`);
  }

  boolean(key: string): boolean {
    const v = this.values[key];
    if (typeof v !== 'boolean') throw invalidArgument(`scheduler config ${key}`, 'true or false', v);
    return v;
  }

  /** A string that must be one of `supported` for this scheduler. */
  oneOf<T extends string>(key: string, supported: readonly T[], hint?: string): T {
    const v = this.values[key];
    if (typeof v !== 'string' || !(supported as readonly string[]).includes(v)) {
      throw invalidArgument(
        `scheduler config ${key}`,
        `one of ${supported.map((s) => JSON.stringify(s)).join(', ')} (for ${this.target})`,
        v,
        hint ?? this.fix('Edit scheduler/scheduler_config.json'),
      );
    }
    return v as T;
  }

  /** A flag this project does not implement: it must be false (or absent). */
  unsupportedFlag(key: string): void {
    const v = this.values[key];
    if (v !== undefined && v !== null && v !== false) {
      throw invalidArgument(
        `scheduler config ${key}`,
        `false (${key} is not implemented for ${this.target})`,
        v,
        this.fix('Set it to false in scheduler/scheduler_config.json'),
      );
    }
  }
}

/**
 * The config the target class sees: file values first, then the source class's defaults (when the
 * file names a class this project knows), then the target's defaults. `null` counts as absent, as a
 * missing value does in diffusers for the nullable fields read here.
 */
export function resolveConfig(config: SchedulerConfig, target: SchedulerName): ConfigReader {
  const source = typeof config._class_name === 'string' ? nameForClass(config._class_name) : undefined;
  const merged: Record<string, unknown> = { ...CLASS_DEFAULTS[target] };
  if (source) for (const [k, v] of Object.entries(CLASS_DEFAULTS[source])) if (v !== null) merged[k] = v;
  for (const [k, v] of Object.entries(config)) if (v !== null && v !== undefined) merged[k] = v;
  return new ConfigReader(merged, target);
}
