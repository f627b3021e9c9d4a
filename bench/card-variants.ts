/**
 * `card.js variants`: one UNet call (batch 2 by default) under several ways of running the same export on WebGPU,
 * with the sessions open side by side and the calls alternating round by round, so that the card's drift (its speed
 * varied by a quarter between parts of the first run) falls on every variant alike. Each variant's median, its ratio
 * to the first variant's, and its output's largest difference from the first's.
 *
 * Variants (comma-separated, the first is the reference):
 *   nhwc        ONNX Runtime's own choice (its WebGPU provider runs convolutions in NHWC, with Transposes around them)
 *   nchw        `preferredLayout: 'NCHW'`: layout-sensitive ops run as the graph writes them
 *   fused       the attention fused as `--fuse-attention` writes it (q and k padded: ONNX Runtime's three-kernel
 *               MultiHeadAttention), default layout
 *   fused-nchw  both
 *   flash       the attention fused with q and k as they are (ONNX Runtime's flash-attention kernel: what the pipeline
 *               runs where runner/flash-check.ts finds that kernel right on the adapter), default layout; like every
 *               fused graph, with each transformer block's bias + residual + LayerNormalization as SkipLayerNormalization
 *               and, on the WebGPU provider (as the pipeline does where every device is a WebGPU one), each GEGLU as
 *               BiasSplitGelu and each group norm (with its SiLU) as GroupNorm
 *   flash-no-group-norm  the same without the group norms fused (src/graph/group-norm.ts): what that fusion changes
 *   flash-no-geglu  without the group norms or the GEGLUs fused (src/graph/bias-split-gelu.ts): against
 *               flash-no-group-norm, what the GEGLUs' fusion changes
 *   flash-attention-only  without either (src/graph/skip-layer-norm.ts): what the residual norms' fusion changes
 *   float16     a float32 export converted to float16 as `--unet-precision float16` converts it
 *               (src/graph/float16-downcast.ts), default layout: what the conversion gains (its inputs and output are
 *               float16, so it is fed its own copy of the same values)
 *   float16-flash  the converted graph fused as `flash` fuses the export: `--unet-precision float16 --fuse-attention`
 * `--validation MODE` sets the WebGPU validation of every session; it belongs to the process's WebGPU context, so
 * comparing modes takes one process per mode (scripts/device/card.sh runs 'basic', ONNX Runtime's default, and
 * 'disabled').
 */
import { prepareFloat16Unet, upcastsAttention } from '../src/node/float16-unet.ts';
import { fusedLoadOptions, prepareFusedAttention } from '../src/node/fused-attention.ts';
import { openSession, readFloat, releaseSession, type ModelLoad, type OpenSession, type OrtTensor, type WebGpuTuning } from '../src/onnx/session.ts';
import type { ProviderName } from '../src/onnx/io.ts';
import { UnetAdapter } from '../src/onnx/unet.ts';
import { timingStats } from './timing.ts';
import { againstTorch, difference, type TorchReference } from './card-reference.ts';

export const VARIANTS = ['nhwc', 'nchw', 'fused', 'fused-nchw', 'flash', 'flash-no-group-norm', 'flash-no-geglu', 'flash-attention-only', 'float16', 'float16-flash'] as const;
export type Variant = (typeof VARIANTS)[number];
const VALIDATION: readonly NonNullable<WebGpuTuning['validationMode']>[] = ['disabled', 'wgpuOnly', 'basic', 'full'];

export interface VariantsOptions {
  unet: string;
  provider: ProviderName;
  variants: Variant[];
  batch: number;
  warmup: number;
  iters: number;
  validation?: WebGpuTuning['validationMode'];
  /** PyTorch's outputs on the same inputs (card-reference.ts): each variant's output against them (batch 2). */
  reference?: TorchReference;
}

/** The command line's values, checked: each wrong one named with what is accepted. */
export function variantsOptions(args: Record<string, string>): VariantsOptions {
  const unet = args['unet'];
  if (!unet) throw new Error('card variants: --unet is required');
  const variants = (args['variants'] ?? VARIANTS.join(',')).split(',').filter((v) => v !== '');
  for (const v of variants) {
    if (!(VARIANTS as readonly string[]).includes(v)) throw new Error(`card variants: unknown variant ${JSON.stringify(v)} in --variants (known: ${VARIANTS.join(', ')})`);
  }
  if (variants.length === 0 || new Set(variants).size !== variants.length) throw new Error(`card variants: --variants must name each variant once (got ${JSON.stringify(args['variants'])})`);
  const int = (key: string, fallback: number, min: number) => {
    const raw = args[key];
    const n = raw === undefined ? fallback : Number(raw);
    if (!Number.isInteger(n) || n < min) throw new Error(`card variants: --${key} must be an integer of at least ${min} (got ${raw})`);
    return n;
  };
  const validation = args['validation'];
  if (validation !== undefined && !(VALIDATION as readonly string[]).includes(validation)) {
    throw new Error(`card variants: --validation must be one of ${VALIDATION.join(', ')} (got ${JSON.stringify(validation)})`);
  }
  const provider = (args['provider'] ?? 'webgpu') as ProviderName;
  const layouts = variants.some((v) => v.endsWith('nchw'));
  if (provider !== 'webgpu' && (layouts || validation !== undefined)) throw new Error(`card variants: layouts and --validation are WebGPU settings (--provider is ${provider})`);
  return {
    unet, provider, variants: variants as Variant[], batch: int('batch', 2, 1), warmup: int('warmup', 2, 0), iters: int('iters', 10, 1),
    ...(validation ? { validation: validation as WebGpuTuning['validationMode'] } : {}),
  };
}

interface Opened {
  variant: Variant;
  session: OpenSession;
  /** Its inputs: the same values in its own input types (a float16 graph takes float16). */
  feeds: Record<string, OrtTensor>;
  sessionMs: number;
  times: number[];
  out?: Float32Array;
}

/**
 * Opens every variant's session, then calls them in turn, warm-up rounds first. `feeds` builds each session's
 * inputs: the same values in its input types.
 */
export async function benchVariants(
  o: VariantsOptions, feeds: (unet: UnetAdapter, s: OpenSession, batch: number) => Record<string, OrtTensor>,
): Promise<Record<string, unknown>> {
  if (o.reference && o.batch !== 2) throw new Error('card variants: --reference compares batch-2 calls (give --batch 2)');
  const result: Record<string, unknown> = { file: o.unet, provider: o.provider, batch: o.batch, warmup: o.warmup, iters: o.iters, validation: o.validation ?? 'default (basic)' };
  if (o.reference?.torchFloat16VsFloat32) result['torchFloat16VsFloat32'] = o.reference.torchFloat16VsFloat32;
  // The derived graph each fused variant runs: the padded form for fused*, the flash form for flash*.
  const forms = { fused: 'padded', 'fused-nchw': 'padded', flash: 'flash', 'flash-no-group-norm': 'flashNoGroupNorm', 'flash-no-geglu': 'flashNoGeglu', 'flash-attention-only': 'flashAttentionOnly', 'float16-flash': 'float16Flash' } as const;
  type Form = (typeof forms)[keyof typeof forms];
  const graphOf = (v: Variant): Form | undefined => (v in forms ? forms[v as keyof typeof forms] : undefined);
  const derived: Partial<Record<Form | 'float16', { file: string; load: ModelLoad }>> = {};
  if (o.variants.some((v) => v.startsWith('float16'))) {
    const t0 = performance.now();
    const h = await prepareFloat16Unet(o.unet, { attentionScoresFloat32: await upcastsAttention(o.unet) });
    result['float16ConvertMs'] = performance.now() - t0;
    if ('reason' in h) throw new Error(`card variants: the export cannot be converted to float16 (${h.reason}); leave the float16 variants out`);
    result['float16'] = { tensors: h.tensors, float32Nodes: h.float32Nodes, casts: h.casts };
    derived.float16 = { file: h.file, load: {} };
  }
  // GEGLUs as BiasSplitGelu where the pipeline writes them: graphs for WebGPU devices alone (no CPU kernel).
  const geglu = o.provider === 'webgpu';
  for (const form of ['padded', 'flash', 'flashNoGroupNorm', 'flashNoGeglu', 'flashAttentionOnly', 'float16Flash'] as const) {
    if (!o.variants.some((v) => graphOf(v) === form)) continue;
    const t0 = performance.now();
    const f = await prepareFusedAttention(form === 'float16Flash' ? derived.float16!.file : o.unet, {
      flashForm: form !== 'padded', skipLayerNorm: form !== 'flashAttentionOnly',
      biasSplitGelu: geglu && (form === 'padded' || form === 'flash' || form === 'flashNoGroupNorm' || form === 'float16Flash'), groupNorm: form !== 'flashNoGroupNorm',
    });
    result[`${form === 'padded' ? 'fused' : form}DeriveMs`] = performance.now() - t0;
    if ('reason' in f) throw new Error(`card variants: the export's attention cannot be fused (${f.reason}); leave the fused variants out`);
    result['fusedLayers'] = f.fused;
    if (f.skipLayerNorms) result['skipLayerNorms'] = f.skipLayerNorms;
    if (f.biasSplitGelus) result['biasSplitGelus'] = f.biasSplitGelus;
    if (f.groupNorms) result['groupNorms'] = f.groupNorms;
    derived[form] = { file: f.file, load: fusedLoadOptions(f.file) };
  }
  const opened: Opened[] = [];
  try {
    for (const variant of o.variants) {
      const webgpu: WebGpuTuning = {
        ...(variant.endsWith('nchw') ? { preferredLayout: 'NCHW' as const } : {}),
        ...(o.validation ? { validationMode: o.validation } : {}),
      };
      const form = variant === 'float16' ? 'float16' : graphOf(variant);
      const graph = form ? derived[form] : undefined;
      const [file, load] = graph ? [graph.file, graph.load] : [o.unet, {}];
      const t0 = performance.now();
      const session = await openSession(file, `unet (${variant})`, { provider: o.provider }, { ...load, ...(Object.keys(webgpu).length ? { webgpu } : {}) });
      const sessionMs = performance.now() - t0;
      opened.push({ variant, session, sessionMs, feeds: feeds(new UnetAdapter(session), session, o.batch), times: [] });
    }
    const unet = new UnetAdapter(opened[0]!.session);
    for (let round = 0; round < o.warmup + o.iters; round++) {
      for (const v of opened) {
        const t0 = performance.now();
        const r = await v.session.session.run(v.feeds);
        const ms = performance.now() - t0;
        if (round >= o.warmup) v.times.push(ms);
        if (round === o.warmup + o.iters - 1) v.out = readFloat(r[unet.out.name]!, 'out_sample');
      }
    }
    const ref = opened[0]!;
    const refMedian = timingStats(ref.times).medianMs;
    let maxRef = 0;
    for (const x of ref.out!) maxRef = Math.max(maxRef, Math.abs(x));
    result['maxAbsReference'] = maxRef;
    result['variants'] = opened.map((v) => {
      const diff = difference(v.out!, ref.out!).maxAbs;
      const { medianMs, minMs, maxMs } = timingStats(v.times);
      console.error(`[card] variant ${v.variant}: ${medianMs.toFixed(2)} ms, ${(medianMs / refMedian).toFixed(3)} of ${ref.variant} (max diff ${diff.toExponential(2)})`);
      return {
        variant: v.variant, sessionMs: v.sessionMs, medianMs, minMs, maxMs,
        overReference: medianMs / refMedian, maxAbsDiffFromReference: diff, finite: v.out!.every(Number.isFinite),
        ...(o.reference ? { vsTorch: againstTorch(v.out!, o.reference) } : {}),
      };
    });
  } finally {
    for (const v of opened) await releaseSession(v.session);
  }
  return result;
}
