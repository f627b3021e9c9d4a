/**
 * Runs small asg generations on the fake UNet (Euler, epsilon and v prediction; flow-matching Euler on SD3's 16
 * channels; DDIM (epsilon); DPM-Solver++ (epsilon; v with heun's term; order 1); Euler ancestral (epsilon, v); units handed over one by one as a dispatcher does) and prints one JSON line: whether the WebAssembly
 * kernels were there and the SHA-256 of each final latent's bytes, then of torch.randn's draws on three generators. With --no-webassembly the WebAssembly global is removed before the project's modules load, so the
 * generations run the TypeScript loops (test/kernels.test.ts compares the two).
 */
import { createHash } from 'node:crypto';

if (process.argv.includes('--no-webassembly')) delete (globalThis as { WebAssembly?: unknown }).WebAssembly;

const { denoise } = await import('../../src/core/generation/denoise.ts');
const { KernelMemory } = await import('../../src/core/kernels/memory.ts');
const { resolveParams } = await import('../../src/core/params.ts');
const { createScheduler } = await import('../../src/core/schedulers/index.ts');
const { fakeUnet, SD_SCHEDULER_CONFIG } = await import('./fake-unet.ts');
type Unit = import('../../src/core/methods/types.ts').UnetUnit;
type Hint = import('../../src/core/methods/types.ts').EvaluateHint;
type Options = Partial<import('../../src/core/methods/options.ts').MethodOptions>;

const hashes: string[] = [];
// dpm: DPM-Solver++ 2M (its history in the unit kernel; the stage-2 tiles and run-ahead patches by stepPart);
// dpm-v: with v prediction and heun's second-order term; dpm-1: of order 1 (no history kept); ancestral, ancestral-v:
// Euler ancestral (the step's noise in the unit kernel).
for (const prediction of ['epsilon', 'v_prediction', 'flow', 'ddim', 'dpm', 'dpm-v', 'dpm-1', 'ancestral', 'ancestral-v']) {
  // x0-space guidance is for epsilon and flow models only.
  const variants: Options[] = !['v_prediction', 'dpm-v', 'ancestral-v'].includes(prediction) ? [{ structureSpace: 'eps' }, { structureSpace: 'x0' }, { interactionEvery: 2 }] : [{ structureSpace: 'eps' }, { structureSpace: 'eps', interactionEvery: 2 }];
  // flow: SD3's latent (16 channels, sides in multiples of 2) and scheduler.
  const flow = prediction === 'flow';
  for (const methodOptions of variants) {
    const params = resolveParams({ prompt: 'x', width: 48 * 8, height: 32 * 8, steps: 10, seed: 11, method: 'asg', methodOptions }, { width: 128, height: 128 });
    const scheduler = createScheduler(
      flow ? { _class_name: 'FlowMatchEulerDiscreteScheduler', shift: 3 }
        : prediction === 'ddim' ? { ...SD_SCHEDULER_CONFIG, _class_name: 'DDIMScheduler' }
        : prediction === 'dpm' ? { ...SD_SCHEDULER_CONFIG, _class_name: 'DPMSolverMultistepScheduler' }
        : prediction === 'dpm-v' ? { ...SD_SCHEDULER_CONFIG, _class_name: 'DPMSolverMultistepScheduler', prediction_type: 'v_prediction', solver_type: 'heun' }
        : prediction === 'dpm-1' ? { ...SD_SCHEDULER_CONFIG, _class_name: 'DPMSolverMultistepScheduler', solver_order: 1 }
        : prediction === 'ancestral' ? { ...SD_SCHEDULER_CONFIG, _class_name: 'EulerAncestralDiscreteScheduler' }
        : prediction === 'ancestral-v' ? { ...SD_SCHEDULER_CONFIG, _class_name: 'EulerAncestralDiscreteScheduler', prediction_type: 'v_prediction' }
        : { ...SD_SCHEDULER_CONFIG, _class_name: 'EulerDiscreteScheduler', prediction_type: prediction },
      10,
    );
    const evaluate = async (batch: Unit[], hint?: Hint) => {
      const results = batch.map((u) => fakeUnet({ ...u, sample: Float32Array.from(u.sample) }));
      // Every other result handed over one by one, last first, before the batch resolves.
      if (hint?.onResult) for (let i = results.length - 1; i >= 0; i -= 2) hint.onResult(i, results[i]!);
      await new Promise((r) => setTimeout(r, 0));
      return results;
    };
    const r = await denoise({
      params, scheduler, latentHeight: 32, latentWidth: 48, nativeHeight: 16, nativeWidth: 16, channels: flow ? 16 : 4, latentMultiple: flow ? 2 : 8,
      evaluate, maskTokens: [1, 2, 3], previewEvery: 0,
    });
    hashes.push(createHash('sha256').update(new Uint8Array(r.latent.buffer, r.latent.byteOffset, r.latent.byteLength)).digest('hex'));
  }
}
// torch.randn's stream (kernels.wat fillNormal where WebAssembly is there): successive draws on one generator, sizes
// with and without a tail of under 16 and below 16 (the double path, whose cached value sits between kernel draws).
const { TorchGenerator, createRandom } = await import('../../src/core/random/index.ts');
for (const g of [new TorchGenerator(0), new TorchGenerator(2n ** 63n - 1n), createRandom(11, 'ancestral')]) {
  const hash = createHash('sha256');
  for (const shape of [[16], [17], [5], [31], [33], [3], [3, 5, 7], [1, 3, 99, 101], [1, 4, 64, 64], [16]]) hash.update(g.randn(shape));
  hashes.push(hash.digest('hex'));
}
console.log(JSON.stringify({ webassembly: KernelMemory.create() !== null, hashes }));
