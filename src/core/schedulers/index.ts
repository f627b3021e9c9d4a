/**
 * Scheduler factory: picks the class from the config's `_class_name`, or from `override` (the CLI's
 * --scheduler), which replaces the class but keeps the config's values like diffusers'
 * `Scheduler.from_config(other.config)`.
 */
import { invalidArgument } from '../errors.ts';
import { CLASS_NAMES, SCHEDULER_NAMES, nameForClass, resolveConfig, type SchedulerName } from './config.ts';
import { DdimScheduler } from './ddim.ts';
import { DpmSolverMultistepScheduler } from './dpm-solver.ts';
import { EulerAncestralScheduler } from './euler-ancestral.ts';
import { EulerScheduler } from './euler.ts';
import { FlowMatchEulerScheduler, type FlowMatchOptions } from './flow-match.ts';
import { LmsScheduler } from './lms.ts';
import { PndmScheduler } from './pndm.ts';
import type { Scheduler, SchedulerConfig } from './types.ts';

export { SCHEDULER_NAMES, CLASS_NAMES, type SchedulerName } from './config.ts';
export { FlowMatchEulerScheduler, type FlowMatchOptions } from './flow-match.ts';
export type { LatentPart, Scheduler, SchedulerConfig, SchedulerState, StepResult, PredictionType } from './types.ts';

function pickName(config: SchedulerConfig, override: string | undefined): SchedulerName {
  if (override !== undefined) {
    if (!(SCHEDULER_NAMES as readonly string[]).includes(override)) {
      throw invalidArgument('scheduler', `one of ${SCHEDULER_NAMES.join(', ')}`, override);
    }
    return override as SchedulerName;
  }
  const className = config._class_name;
  const name = typeof className === 'string' ? nameForClass(className) : undefined;
  if (!name) {
    throw invalidArgument(
      'scheduler config _class_name',
      `one of ${SCHEDULER_NAMES.map((n) => CLASS_NAMES[n]).join(', ')}`,
      className,
      `Choose a supported scheduler with --scheduler (${SCHEDULER_NAMES.join(', ')}); the config's beta and timestep settings are kept.`,
    );
  }
  return name;
}

/**
 * A scheduler planned for `numSteps` inference steps (an integer from 1 to num_train_timesteps). `flow` gives
 * the image token count the flow-matching scheduler's dynamic shift needs (ignored by the others).
 */
export function createScheduler(
  config: SchedulerConfig,
  numSteps: number,
  override?: string,
  flow?: FlowMatchOptions,
): Scheduler {
  if (config === null || typeof config !== 'object' || Array.isArray(config)) {
    throw invalidArgument('scheduler config', 'a JSON object (scheduler/scheduler_config.json)', config);
  }
  const name = pickName(config, override);
  const reader = resolveConfig(config, name);
  switch (name) {
    case 'euler':
      return new EulerScheduler(reader, numSteps);
    case 'euler-ancestral':
      return new EulerAncestralScheduler(reader, numSteps);
    case 'ddim':
      return new DdimScheduler(reader, numSteps);
    case 'pndm':
      return new PndmScheduler(reader, numSteps);
    case 'dpmpp-2m':
      return new DpmSolverMultistepScheduler(reader, numSteps);
    case 'lms':
      return new LmsScheduler(reader, numSteps);
    case 'flow-euler':
      return new FlowMatchEulerScheduler(reader, numSteps, flow);
  }
}
