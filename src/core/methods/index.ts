/**
 * High-resolution methods: `createMethod(name, options, setup)` builds a validated HighResMethod.
 * Portable: no Node APIs.
 */
import { DirectMethod } from './direct.ts';
import type { MethodOptions } from './options.ts';
import { resolveMethodOptions, validateMethodName } from './options.ts';
import type { MethodSetup } from './plan.ts';
import { planMethod } from './plan.ts';
import { StagedMethod } from './staged.ts';
import type { HighResMethod } from './types.ts';

export function createMethod(name: string, options: Partial<MethodOptions>, setup: MethodSetup): HighResMethod & {
  readonly plan: ReturnType<typeof planMethod>;
  readonly options: MethodOptions;
} {
  const method = validateMethodName(name);
  const resolved = resolveMethodOptions(options);
  const plan = planMethod(method, resolved, setup);
  return method === 'direct' ? new DirectMethod(plan, resolved) : new StagedMethod(plan, resolved);
}

export type { GeometryInput, PatchGeometry } from './geometry.ts';
export { planGeometry } from './geometry.ts';
export type { MethodOptions } from './options.ts';
export { DEFAULT_METHOD, DEFAULT_METHOD_OPTIONS, METHOD_NAMES, resolveMethodOptions } from './options.ts';
export type { MethodPlan, MethodSetup } from './plan.ts';
export { planMethod } from './plan.ts';
export { downscaleLatent, extractPatches, patchesToLatent, relocatePatches } from './polyphase.ts';
export type { WindowGrid, WindowPlacement } from './windows.ts';
export { planWindows, placeWindows } from './windows.ts';
export type * from './types.ts';
