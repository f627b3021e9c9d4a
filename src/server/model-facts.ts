/**
 * What the server needs to know of a model folder without loading it: its native size (for estimates and size
 * limits) and its scheduler config (PNDM runs one step more than asked, so estimates count the scheduler's steps).
 * Read by the local engine and by fleet workers, which advertise it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { MISSING_SCHEDULER_CONFIG } from '../core/schedulers/config.ts';
import type { SchedulerConfig } from '../core/schedulers/types.ts';

export interface ModelFolderFacts {
  nativeWidth?: number;
  nativeHeight?: number;
  schedulerConfig?: SchedulerConfig;
}

function readJson(file: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(fs.readFileSync(file, 'utf8'));
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** The facts that can be read; a missing or damaged file leaves its fact out (loading the model names the problem). */
export function readModelFolderFacts(dir: string): ModelFolderFacts {
  const unet = readJson(path.join(dir, 'unet', 'config.json'));
  const sampleSize = typeof unet?.['sample_size'] === 'number' ? unet['sample_size'] : undefined;
  // The same files, in the same order, as the model loader reads; none means diffusers' Euler defaults there too.
  const schedFile = ['scheduler/scheduler_config.json', 'scheduler_config.json'].map((f) => path.join(dir, f)).find((f) => fs.existsSync(f));
  const schedulerConfig = schedFile ? readJson(schedFile) : MISSING_SCHEDULER_CONFIG;
  return {
    ...(sampleSize ? { nativeWidth: sampleSize * 8, nativeHeight: sampleSize * 8 } : {}),
    ...(schedulerConfig ? { schedulerConfig: schedulerConfig as SchedulerConfig } : {}),
  };
}
