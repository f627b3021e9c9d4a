/**
 * The gallery's file names: which names are outputs, a job's output name, and the job a name belongs to; and a
 * request body as the library's settings. Shared by the server and the fleet's workers (no HTTP here).
 */
import type { GenerateParams } from '../core/params.ts';
import type { UpscaleParams } from '../node/pipeline.ts';
import type { JobRecord } from './queue.ts';

/** Output file names: no folders, no leading dot, an image extension. */
export const OUTPUT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.(png|jpe?g|webp)$/i;
/** The longest name OUTPUT_NAME takes (1 + 200 + '.jpeg'): the router's limit on a path parameter covers it. */
export const OUTPUT_NAME_MAX = 1 + 200 + '.jpeg'.length;

/** The output file of a job: named after the job, so a job re-run after a crash finds its finished output. */
export function outputNameFor(job: Pick<JobRecord, 'id' | 'createdAt'>): string {
  const stamp = job.createdAt.replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  return `asgd-${stamp}-${job.id}.png`;
}

/** The id of the job whose output `name` is (outputNameFor's inverse); undefined for other names. */
export function jobIdOfOutput(name: string): string | undefined {
  return /^asgd-\d{8}-\d{6}-(.+)\.png$/.exec(name)?.[1];
}

/** A validated request body as the library's GenerateParams. */
export function toGenerateParams(body: Record<string, unknown>): GenerateParams {
  const { model: _model, originalSize, ...rest } = body;
  const params = { ...rest } as unknown as GenerateParams;
  if (typeof originalSize === 'string') {
    const [w, h] = originalSize.split('x').map(Number);
    params.originalSize = { width: w!, height: h! };
  }
  return params;
}

/** A validated upscale request body (less its source) as the library's upscale settings: originalSize as an object. */
export function upscaleParams(body: Record<string, unknown>): Omit<UpscaleParams, 'image'> {
  return toGenerateParams(body) as unknown as Omit<UpscaleParams, 'image'>;
}
