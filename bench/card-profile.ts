/**
 * `card.js profile`: where one UNet call's time goes, from ONNX Runtime's own profiler. The card measured the WebGPU
 * call 15-23x slower than PyTorch's (docs/benchmarks.md, "On the card"); this says whether the GPU is busy for the
 * call's whole wall time (slow kernels: which ops) or idle between kernels (dispatch on the host: how many kernels).
 *
 * The profile is a Chrome-trace JSON list. Events of category 'Session' include one `model_run` per call; 'Node'
 * events are each node's host-side time (on WebGPU: recording and dispatching its kernels); on WebGPU, 'Api' events
 * are the GPU's own time per kernel (timestamp queries), named `<node>&<op type>&<program>`, with their shapes.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fusedLoadOptions, prepareFusedAttention } from '../src/node/fused-attention.ts';
import { openSession, releaseSession } from '../src/onnx/session.ts';
import type { ProviderName } from '../src/onnx/io.ts';
import { UnetAdapter } from '../src/onnx/unet.ts';

export interface TraceEvent {
  cat?: string;
  name?: string;
  ts?: number;
  dur?: number;
  args?: Record<string, unknown>;
}

export interface ProfileSummary {
  /** Calls profiled (after the skipped warm-up calls). */
  runs: number;
  /** Per call: ONNX Runtime's model_run time, the sum of the GPU's kernel times, the host's node times, kernel count. */
  perRun: { wallMs: number; gpuKernelMs: number; hostNodeMs: number; kernels: number }[];
  /** GPU kernel time per op type (mean per call, ms), most first; `share` of the mean GPU kernel time. */
  byOp: { op: string; ms: number; kernels: number; share: number }[];
  /** The same per WebGPU program (the shader's name: Conv2dMM, MatMul, Transpose, ...). */
  byProgram: { program: string; ms: number; kernels: number; share: number }[];
  /** The dearest single kernels (mean per call). */
  top: { name: string; ms: number; shapes: string }[];
  /**
   * Kernels of subgroup programs (mean per call): ONNX Runtime's WebGPU provider has tensor-core (subgroup-matrix)
   * MatMul/Gemm programs and Intel subgroup ones, gated by the adapter; none at all says the call's matrix products ran
   * on plain WGSL kernels (docs/benchmarks.md, "Why the gap").
   */
  subgroup: { programs: string[]; kernels: number; ms: number; share: number };
}

/** Program names of ONNX Runtime's subgroup and subgroup-matrix WebGPU kernels (SubgroupMatrixMatMul, MatMulSubgroup, ...). */
const SUBGROUP_PROGRAM = /subgroup/i;

const ms = (us: number) => us / 1000;

/**
 * Summarises a profile of `skip + runs` calls, leaving the first `skip` out. Events belong to the call whose
 * model_run interval holds their start.
 */
export function summariseProfile(events: readonly TraceEvent[], skip: number, topN = 15): ProfileSummary {
  const calls = events.filter((e) => e.cat === 'Session' && e.name === 'model_run').sort((a, b) => (a.ts ?? 0) - (b.ts ?? 0));
  if (calls.length <= skip) throw new Error(`profile: ${calls.length} model_run events, expected more than the ${skip} skipped`);
  const kept = calls.slice(skip);
  const callOf = (e: TraceEvent): number => {
    const t = e.ts ?? -1;
    return kept.findIndex((c) => t >= (c.ts ?? 0) && t <= (c.ts ?? 0) + (c.dur ?? 0));
  };
  const perRun = kept.map((c) => ({ wallMs: ms(c.dur ?? 0), gpuKernelMs: 0, hostNodeMs: 0, kernels: 0 }));
  const ops = new Map<string, { us: number; n: number }>();
  const programs = new Map<string, { us: number; n: number }>();
  const kernels = new Map<string, { us: number; shapes: string }>();
  const add = (m: Map<string, { us: number; n: number }>, key: string, us: number) => {
    const v = m.get(key) ?? { us: 0, n: 0 };
    v.us += us;
    v.n += 1;
    m.set(key, v);
  };
  for (const e of events) {
    if (e.cat !== 'Api' && e.cat !== 'Node') continue;
    const i = callOf(e);
    if (i < 0) continue;
    const us = e.dur ?? 0;
    if (e.cat === 'Node') {
      perRun[i]!.hostNodeMs += ms(us);
      continue;
    }
    const [node = '', op = '?', program = op] = (e.name ?? '').split('&');
    perRun[i]!.gpuKernelMs += ms(us);
    perRun[i]!.kernels += 1;
    add(ops, op, us);
    add(programs, program, us);
    const k = kernels.get(e.name ?? node) ?? { us: 0, shapes: String(e.args?.['shapes'] ?? '').trim() };
    k.us += us;
    kernels.set(e.name ?? node, k);
  }
  const runs = kept.length;
  const gpuTotal = perRun.reduce((s, r) => s + r.gpuKernelMs, 0) / runs;
  const table = (m: Map<string, { us: number; n: number }>) =>
    [...m.entries()]
      .map(([key, v]) => ({ key, ms: ms(v.us) / runs, kernels: v.n / runs, share: gpuTotal > 0 ? ms(v.us) / runs / gpuTotal : 0 }))
      .sort((a, b) => b.ms - a.ms);
  const subgroup = table(programs).filter((p) => SUBGROUP_PROGRAM.test(p.key));
  return {
    runs,
    perRun,
    subgroup: {
      programs: subgroup.map((p) => p.key),
      kernels: subgroup.reduce((a, p) => a + p.kernels, 0),
      ms: subgroup.reduce((a, p) => a + p.ms, 0),
      share: subgroup.reduce((a, p) => a + p.share, 0),
    },
    byOp: table(ops).map(({ key, ...v }) => ({ op: key, ...v })),
    byProgram: table(programs).map(({ key, ...v }) => ({ program: key, ...v })),
    top: [...kernels.entries()]
      .map(([name, v]) => ({ name, ms: ms(v.us) / runs, shapes: v.shapes }))
      .sort((a, b) => b.ms - a.ms)
      .slice(0, topN),
  };
}

type Args = Record<string, string>;

/**
 * `card.js profile --unet FILE --provider webgpu|cpu [--latent N] [--batch 2] [--warmup 1] [--iters 3] [--fused 1|flash]
 * [--layout nchw|nhwc] --out JSON`: calls at one batch size under the profiler, summarised (warm-up calls left out);
 * `--fused`: the attention fused, q and k padded (1) or not (flash: the form the pipeline takes where the
 * flash-attention check passes); `--layout`: the WebGPU provider's preferred layout (default: ONNX Runtime's, NHWC).
 */
export async function benchProfile(args: Args, feedsFor: (unet: UnetAdapter, s: Awaited<ReturnType<typeof openSession>>, batch: number) => Record<string, unknown>): Promise<Record<string, unknown>> {
  const file = args['unet'];
  if (!file) throw new Error('card profile: --unet FILE is required');
  const provider = (args['provider'] ?? 'webgpu') as ProviderName;
  const batch = Number(args['batch'] ?? 2);
  const warmup = Number(args['warmup'] ?? 1);
  const iters = Number(args['iters'] ?? 3);
  const layout = args['layout'];
  if (layout !== undefined && !(layout === 'nchw' || layout === 'nhwc')) throw new Error(`card profile: --layout must be nchw or nhwc (got ${JSON.stringify(layout)})`);
  const fused = args['fused'] ?? '0';
  if (!['0', '1', 'flash'].includes(fused)) throw new Error(`card profile: --fused must be 0, 1 (the padded form) or flash (got ${JSON.stringify(fused)})`);
  const result: Record<string, unknown> = { file, provider, batch, warmup, iters, fused: fused !== '0', layout: layout ?? 'default' };
  let unetFile = file;
  if (fused !== '0') {
    // As the pipeline writes it for WebGPU devices alone: the GEGLUs as BiasSplitGelu too.
    const f = await prepareFusedAttention(file, { flashForm: fused === 'flash', biasSplitGelu: provider === 'webgpu' });
    if ('reason' in f) return { ...result, reason: f.reason };
    unetFile = f.file;
    result['fusedLayers'] = f.fused;
    result['skipLayerNorms'] = f.skipLayerNorms;
    result['biasSplitGelus'] = f.biasSplitGelus;
    result['form'] = fused === 'flash' ? 'flash' : 'padded';
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'asgd-profile-'));
  try {
    const s = await openSession(unetFile, 'unet (profiled)', { provider }, {
      ...fusedLoadOptions(unetFile), profilePrefix: path.join(dir, 'unet'), ...(layout ? { webgpu: { preferredLayout: layout === 'nchw' ? 'NCHW' : 'NHWC' } } : {}),
    });
    let released = false;
    try {
      const unet = new UnetAdapter(s);
      const feeds = feedsFor(unet, s, batch);
      const wall: number[] = [];
      for (let i = 0; i < warmup + iters; i++) {
        const t0 = performance.now();
        await s.session.run(feeds as never);
        if (i >= warmup) wall.push(performance.now() - t0);
      }
      result['callMs'] = wall;
      await releaseSession(s); // the profile file is written here
      released = true;
    } finally {
      if (!released) await releaseSession(s);
    }
    const files = fs.readdirSync(dir).filter((f) => f.endsWith('.json'));
    if (files.length !== 1) throw new Error(`card profile: expected one profile file in ${dir}, found ${files.length}`);
    const events = JSON.parse(fs.readFileSync(path.join(dir, files[0]!), 'utf8')) as TraceEvent[];
    const summary = summariseProfile(events, warmup);
    const mean = (k: 'wallMs' | 'gpuKernelMs' | 'hostNodeMs' | 'kernels') => summary.perRun.reduce((a, r) => a + r[k], 0) / summary.runs;
    console.error(
      `[card] profile ${path.basename(path.dirname(path.dirname(file)))}${fused !== '0' ? ` (fused, ${String(result['form'])})` : ''}${layout ? ` (${layout})` : ''} ${provider} batch ${batch}: run ${mean('wallMs').toFixed(1)} ms, ` +
        `GPU kernels ${mean('gpuKernelMs').toFixed(1)} ms (${mean('kernels').toFixed(0)} kernels), host nodes ${mean('hostNodeMs').toFixed(1)} ms; ` +
        `by op: ${summary.byOp.slice(0, 6).map((o) => `${o.op} ${(100 * o.share).toFixed(0)}%`).join(', ')}; ` +
        `subgroup kernels ${summary.subgroup.kernels.toFixed(0)} (${(100 * summary.subgroup.share).toFixed(0)}%${summary.subgroup.programs.length ? `: ${summary.subgroup.programs.join(', ')}` : ''})`,
    );
    return { ...result, ...summary, byOp: summary.byOp.slice(0, 25), byProgram: summary.byProgram.slice(0, 25) };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
