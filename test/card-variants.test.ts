/**
 * The WebGPU provider settings of the session module (ModelLoad.webgpu) and `card.js variants`
 * (bench/card-variants.ts), on lavapipe with the shipped UNet: a setting reaches ONNX Runtime's provider (the kernels
 * change), the variants compute the same function, and wrong values are refused before ONNX Runtime sees them.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { benchProfileCard, parseArgs } from '../bench/card.ts';
import type { ProfileSummary } from '../bench/card-profile.ts';
import { benchVariants, variantsOptions } from '../bench/card-variants.ts';
import { AsgdError } from '../src/core/errors.ts';
import { checkFlashAttention } from '../src/node/runner/devices.ts';
import { floatTensor, makeTensor, openSession, releaseSession } from '../src/onnx/session.ts';

const UNET = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'models', 'shapes-128', 'unet', 'model.onnx');

const kernels = (r: ProfileSummary, op: string) => r.byOp.find((o) => o.op === op)?.kernels ?? 0;

test("preferredLayout reaches the WebGPU provider: 'NCHW' drops the Transposes its NHWC convolutions need", async () => {
  const args = { unet: UNET, provider: 'webgpu', latent: '8', warmup: '0', iters: '1' };
  const nhwc = (await benchProfileCard({ ...args, layout: 'nhwc' })) as unknown as ProfileSummary;
  const nchw = (await benchProfileCard({ ...args, layout: 'nchw' })) as unknown as ProfileSummary;
  const plain = (await benchProfileCard(args)) as unknown as ProfileSummary;
  const convs = kernels(nhwc, 'Conv');
  assert.ok(convs > 10, `Conv kernels: ${convs}`);
  assert.equal(kernels(nchw, 'Conv'), convs, 'the same convolutions');
  // Each NHWC convolution's input and output are transposed, less what the layout pass cancels between neighbours.
  assert.ok(kernels(nhwc, 'Transpose') >= kernels(nchw, 'Transpose') + convs, `Transposes: NHWC ${kernels(nhwc, 'Transpose')}, NCHW ${kernels(nchw, 'Transpose')}, ${convs} convolutions`);
  assert.equal(kernels(plain, 'Transpose'), kernels(nhwc, 'Transpose'), "ONNX Runtime's own choice is NHWC");
  assert.equal((nchw as unknown as { layout: string }).layout, 'nchw');
});

test('the variants of one UNet call compute the same function, each against the first', async () => {
  const o = variantsOptions({ unet: UNET, latent: '8', warmup: '0', iters: '2', variants: 'nhwc,nchw,fused,fused-nchw,flash,flash-no-group-norm,flash-no-geglu,flash-attention-only' });
  const r = await benchVariants(o, (unet, s, batch) => {
    assert.equal(s.provider, 'webgpu');
    return {
      [unet.sample.name]: floatTensor(unet.sample.type, Float32Array.from({ length: batch * 4 * 64 }, (_, i) => Math.sin(i)), [batch, 4, 8, 8], 'sample'),
      [unet.timestep.name]: makeTensor('int64', new BigInt64Array(batch).fill(500n), [batch]),
      [unet.hidden.name]: floatTensor(unet.hidden.type, Float32Array.from({ length: batch * 77 * 64 }, (_, i) => Math.cos(i)), [batch, 77, 64], 'encoder_hidden_states'),
    };
  });
  const rows = r['variants'] as { variant: string; medianMs: number; overReference: number; maxAbsDiffFromReference: number; finite: boolean }[];
  assert.deepEqual(rows.map((v) => v.variant), ['nhwc', 'nchw', 'fused', 'fused-nchw', 'flash', 'flash-no-group-norm', 'flash-no-geglu', 'flash-attention-only']);
  assert.equal(r['skipLayerNorms'], 14, 'the fused graphs but flash-attention-only have the residual norms fused (7 blocks)');
  assert.equal(r['biasSplitGelus'], 7, 'fused and flash have the GEGLUs fused on WebGPU (7 blocks)');
  assert.equal(r['groupNorms'], 24, 'and the 24 group norms (flash-no-group-norm and flash-no-geglu have none)');
  assert.equal(rows[0]!.overReference, 1);
  assert.equal(rows[0]!.maxAbsDiffFromReference, 0);
  assert.ok((r['maxAbsReference'] as number) > 0.1, 'a non-trivial output');
  assert.ok((r['fusedLayers'] as number) > 0);
  for (const v of rows) {
    assert.ok(v.finite && v.medianMs > 0);
    // float32 throughout: the layouts and the padded fused attention differ by rounding only. The flash form runs
    // ONNX Runtime's flash-attention kernel, right or wrong as runner/flash-check.ts finds it on this adapter.
    if (!v.variant.startsWith('flash')) assert.ok(v.maxAbsDiffFromReference < 1e-4, `${v.variant}: ${v.maxAbsDiffFromReference}`);
  }
  const right = (await checkFlashAttention()).ok;
  for (const flash of rows.filter((v) => v.variant.startsWith('flash'))) {
    assert.equal(flash.maxAbsDiffFromReference < 1e-4, right, `${flash.variant} ${flash.maxAbsDiffFromReference} from the plain graph`);
  }
});

test('the float16 variants: the float32 export converted (--unet-precision float16), plain and fused, fed float16, within float16 rounding of the float32 call', async () => {
  const o = variantsOptions({ unet: UNET, latent: '8', warmup: '0', iters: '1', variants: 'nhwc,float16,float16-flash' });
  const r = await benchVariants(o, (unet, _s, batch) => ({
    [unet.sample.name]: floatTensor(unet.sample.type, Float32Array.from({ length: batch * 4 * 64 }, (_, i) => Math.sin(i)), [batch, 4, 8, 8], 'sample'),
    [unet.timestep.name]: makeTensor('int64', new BigInt64Array(batch).fill(500n), [batch]),
    [unet.hidden.name]: floatTensor(unet.hidden.type, Float32Array.from({ length: batch * 77 * 64 }, (_, i) => Math.cos(i)), [batch, 77, 64], 'encoder_hidden_states'),
  }));
  assert.deepEqual(r['float16'], { tensors: 370, float32Nodes: 6, casts: 1 });
  const rows = r['variants'] as { variant: string; maxAbsDiffFromReference: number; finite: boolean }[];
  assert.deepEqual(rows.map((v) => v.variant), ['nhwc', 'float16', 'float16-flash']);
  // float16 on WebGPU: about 0.02 from the float32 graph on lavapipe (test/float16-downcast.test.ts).
  assert.ok(rows[1]!.finite && rows[1]!.maxAbsDiffFromReference > 0 && rows[1]!.maxAbsDiffFromReference < 0.1, String(rows[1]!.maxAbsDiffFromReference));
  if ((await checkFlashAttention()).ok) assert.ok(rows[2]!.maxAbsDiffFromReference < 0.1, String(rows[2]!.maxAbsDiffFromReference));
  assert.ok(rows[2]!.finite);
});

test('variants and WebGPU settings: wrong values are refused, naming the option and what it takes', async () => {
  assert.throws(() => variantsOptions({ unet: UNET, variants: 'nhwc,static' }), /unknown variant "static" in --variants \(known: nhwc, nchw, fused, fused-nchw, flash, flash-no-group-norm, flash-no-geglu, flash-attention-only, float16, float16-flash\)/);
  assert.throws(() => variantsOptions({ unet: UNET, variants: 'nchw,nchw' }), /--variants must name each variant once/);
  assert.throws(() => variantsOptions({ unet: UNET, validation: 'off' }), /--validation must be one of disabled, wgpuOnly, basic, full \(got "off"\)/);
  assert.throws(() => variantsOptions({ unet: UNET, iters: '0' }), /--iters must be an integer of at least 1 \(got 0\)/);
  assert.throws(() => variantsOptions({ unet: UNET, provider: 'cpu', variants: 'nhwc,nchw' }), /layouts and --validation are WebGPU settings \(--provider is cpu\)/);
  assert.throws(() => variantsOptions({}), /--unet is required/);
  assert.throws(() => parseArgs(['variants', '--unet', UNET, '--layout', 'nchw']), /card variants: unknown option --layout/);
  await assert.rejects(benchProfileCard({ unet: UNET, layout: 'NCHW' }), /--layout must be nchw or nhwc \(got "NCHW"\)/);

  const refused = async (load: Parameters<typeof openSession>[3], provider: 'cpu' | 'webgpu', parameter: string, pattern: RegExp) => {
    await assert.rejects(openSession(UNET, 'unet', { provider }, load), (err: unknown) => {
      assert.ok(err instanceof AsgdError, String(err));
      assert.equal(err.parameter, parameter);
      assert.match(err.message, pattern);
      return true;
    });
  };
  await refused({ webgpu: { preferredLayout: 'NCHW' } }, 'cpu', 'webgpu', /unet: webgpu must be unset on other providers than webgpu/);
  await refused({ webgpu: { preferredLayout: 'nchw' as never } }, 'webgpu', 'webgpu.preferredLayout', /must be one of NCHW, NHWC/);
  await refused({ webgpu: { validationMode: 'none' as never } }, 'webgpu', 'webgpu.validationMode', /must be one of disabled, wgpuOnly, basic, full/);
  await refused({ webgpu: { enableGraphCapture: true } as never }, 'webgpu', 'webgpu.enableGraphCapture', /unknown WebGPU setting "enableGraphCapture"/);
  // Accepted values open a session.
  const s = await openSession(UNET, 'unet', { provider: 'webgpu' }, { webgpu: { preferredLayout: 'NCHW' } });
  await releaseSession(s);
});
