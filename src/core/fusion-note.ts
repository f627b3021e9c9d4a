/**
 * What a run says when fuseAttention was asked for but changes nothing for the model (its attention is fused already,
 * or written out in a layout the fusion does not recognise): said at every run, by the Node and the browser
 * pipelines alike. Portable.
 */
import { PIPELINE_OPTIONS, optionSpec } from './options/registry.ts';

export function fusionChangesNothing(reason: string): string {
  const flag = optionSpec(PIPELINE_OPTIONS, 'fuseAttention').cli?.flag;
  return `fuseAttention${flag ? ` (${flag})` : ''} changes nothing for this model: ${reason}`;
}
