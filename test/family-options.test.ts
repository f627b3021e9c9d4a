/**
 * Options and records tied to one model family (SDXL's original size, SD3's flow-matching scheduler) met on
 * another family: what the check stage says, and what a re-run with --from does.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AsgdError } from '../src/core/errors.ts';
import { checkSettings, type ModelFacts } from '../src/core/generation/check.ts';

const SD3: ModelFacts = {
  family: 'sd3', latentMultiple: 2, nativeWidth: 128, nativeHeight: 128, latentChannels: 16,
  schedulerClassName: 'FlowMatchEulerDiscreteScheduler', vaeForceUpcast: false, vaeIsFloat16: false,
};
const SD: ModelFacts = { ...SD3, family: 'sd', latentMultiple: 8, latentChannels: 4, schedulerClassName: 'PNDMScheduler' };

test('originalSize on a non-SDXL model names the family it was given to', () => {
  const originalSize = { width: 1024, height: 1024 };
  assert.throws(() => checkSettings({ prompt: 'a', originalSize }, SD3), (e: unknown) =>
    e instanceof AsgdError && e.parameter === 'originalSize' && e.received === 'a Stable Diffusion 3 model');
  assert.throws(() => checkSettings({ prompt: 'a', originalSize }, SD), (e: unknown) =>
    e instanceof AsgdError && e.parameter === 'originalSize' && e.received === 'a Stable Diffusion 1.x/2.x model');
});
