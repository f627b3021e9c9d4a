/**
 * One com.microsoft MultiHeadAttention node on ONNX Runtime's WebGPU provider against its CPU provider and a float64
 * reference computed here: which shapes and forms the WebGPU kernel gets right (docs/benchmarks.md, "Fused
 * attention"). Inputs q [B, S, D], k and v [B, L, D] (or k, v as [B, H, L, D/H]), uniform in [-amp, amp], H heads.
 * Forms: 'plain' (q, k, v as they are: the flash-attention kernel where D/H is a multiple of 4); 'written' (no
 * MultiHeadAttention: MatMul, Mul, Softmax, MatMul, as exports write attention); 'padded' (the written graph as
 * src/graph/attention-fusion.ts rewrites it: q and k with PAD_CHANNELS zero channels per head, the scale written out).
 *
 *   node --import tsx bench/mha-webgpu.ts [--quick]
 *   node --import tsx bench/mha-webgpu.ts --case "B S L D H dtype scale form amp" [--case ...]
 *   node --import tsx bench/mha-webgpu.ts --time 20 --case ...   (also the median ms of 20 webgpu runs after 3)
 * (dtype float32 | float16; scale a number or 'default'; form plain | padded | written | bnsh). Prints one line a
 * case: the largest |webgpu - cpu|, |webgpu - reference| and |cpu - reference| (the reference where B·H·S·L·d is at
 * most 2e8), and the largest |reference|. The SD shapes for a card: `--time 20 --case "2 4096 4096 320 8 float16
 * default plain 2"` and the same with padded and written (4096 queries: a 64x64 latent's first attention level). On lavapipe, LP_NATIVE_VECTOR_WIDTH (128, 256, 512) sets the subgroup size
 * (4, 8, 16).
 */
import fs from 'node:fs';
import { create, toBinary } from '@bufbuild/protobuf';
import {
  AttributeProtoSchema,
  AttributeProto_AttributeType,
  GraphProtoSchema,
  ModelProtoSchema,
  NodeProtoSchema,
  OperatorSetIdProtoSchema,
  TensorProtoSchema,
  type NodeProto,
} from 'onnx-buf';
import ort from 'onnxruntime-node';
import { float16ToFloat32, float32ToFloat16 } from '../src/core/float16.ts';
import { fuseAttention } from '../src/graph/attention-fusion.ts';
import { int64Tensor, smallValueInfo } from '../src/graph/small-model.ts';
import { BenchUsageError, benchCli, choiceArg, intArg, numberArg } from './args.ts';

interface Case { B: number; S: number; L: number; D: number; H: number; dtype: 'float32' | 'float16'; scale: number | 'default'; form: string; amp: number }

const SWEEP = [
  // head sizes 8..160 (8 heads), self- and cross-attention (77 keys)
  ...[8, 16, 32, 40, 64, 80, 128, 160].flatMap((d) => [`2 256 256 ${8 * d} 8 float32 default plain 2`, `2 256 77 ${8 * d} 8 float32 default plain 2`]),
  // head sizes that are not multiples of 4
  ...[5, 6, 10, 41, 42].map((d) => `2 256 256 ${8 * d} 8 float32 default plain 2`),
  // heads, queries, keys
  '1 256 256 320 1 float32 default plain 2', '1 256 256 320 5 float32 default plain 2', '1 256 256 320 20 float32 default plain 2',
  '1 64 64 320 8 float32 default plain 2', '1 1024 1024 320 8 float32 default plain 2', '1 4096 77 320 8 float32 default plain 2',
  '1 4096 4096 320 8 float32 default plain 2', '1 31 1024 320 8 float32 default plain 2', '1 32 1024 320 8 float32 default plain 2',
  '1 64 8 64 8 float32 default plain 2', '1 64 9 64 8 float32 default plain 2',
  // dtype, scale, magnitude, layout
  '2 256 256 320 8 float16 default plain 2', '2 256 77 320 8 float16 default plain 2', '2 256 256 320 8 float32 0.1 plain 2',
  '2 256 256 320 8 float32 default plain 0.2', '2 256 256 320 8 float32 default plain 20', '2 256 256 320 8 float32 default bnsh 2',
  // the fusion's form, and attention written out
  '2 256 256 320 8 float32 default padded 2', '2 256 77 320 8 float32 default padded 2', '2 256 256 320 8 float32 default padded 20',
  '2 256 256 1280 20 float32 default padded 2', '1 4096 77 320 8 float32 default padded 2', '2 256 256 320 8 float16 default padded 2',
  '2 256 256 320 8 float16 default written 2', '2 256 256 320 8 float32 default written 2',
];
const QUICK = ['2 256 77 320 8 float32 default plain 2', '2 256 77 320 8 float32 default padded 2', '2 256 256 328 8 float32 default plain 2'];

const FORMS = ['plain', 'padded', 'written', 'bnsh'] as const;

/** One case, every field checked (a wrong one stops the script before any run, naming the field). */
function parseCase(line: string): Case {
  const parts = line.trim().split(/\s+/);
  if (parts.length !== 9) throw new BenchUsageError(`--case: expected 9 fields "B S L D H dtype scale form amp", received ${JSON.stringify(line)}`);
  const [B, S, L, D, H, dtype, scale, form, amp] = parts as [string, string, string, string, string, string, string, string, string];
  const c: Case = {
    B: intArg('--case B', B, 1), S: intArg('--case S', S, 1), L: intArg('--case L', L, 1), D: intArg('--case D', D, 1), H: intArg('--case H', H, 1),
    dtype: choiceArg('--case dtype', dtype, ['float32', 'float16'] as const),
    scale: scale === 'default' ? 'default' : numberArg('--case scale (a number or default)', scale, 0),
    form: choiceArg('--case form', form, FORMS), amp: numberArg('--case amp', amp, 0),
  };
  if (c.D % c.H !== 0) throw new BenchUsageError(`--case: D (${c.D}) must be a multiple of H (${c.H}), received ${JSON.stringify(line)}`);
  return c;
}

function modelBytes(c: Case): Uint8Array {
  const d = c.D / c.H;
  const nodes: NodeProto[] = [];
  const initializer = [];
  const ints = (name: string, values: number[]) => {
    initializer.push(int64Tensor(name, values));
    return name;
  };
  const node = (opType: string, input: string[], output: string, attrs: Record<string, number | number[]> = {}, domain = '') => {
    const attribute = Object.entries(attrs).map(([name, v]) => Array.isArray(v)
      ? create(AttributeProtoSchema, { name, type: AttributeProto_AttributeType.INTS, ints: v.map(BigInt) })
      : Number.isInteger(v) && name !== 'scale'
        ? create(AttributeProtoSchema, { name, type: AttributeProto_AttributeType.INT, i: BigInt(v) })
        : create(AttributeProtoSchema, { name, type: AttributeProto_AttributeType.FLOAT, f: v }));
    nodes.push(create(NodeProtoSchema, { name: `${opType}_${nodes.length}`, opType, domain, input, output: [output], attribute }));
    return output;
  };
  const scale = c.scale === 'default' ? 1 / Math.sqrt(d) : c.scale;
  const kvDims = c.form === 'bnsh' ? [c.B, c.H, c.L, d] : [c.B, c.L, c.D];
  if (c.form === 'written' || c.form === 'padded') {
    const split = ints('split', [0, 0, c.H, d]);
    const heads = (t: string) => node('Transpose', [node('Reshape', [t, split], `${t}_4`)], `${t}_h`, { perm: [0, 2, 1, 3] });
    const [qh, vh] = [heads('q'), heads('v')];
    const kt = node('Transpose', [node('Reshape', ['k', split], 'k_4')], 'k_t', { perm: [0, 2, 3, 1] });
    const s = node('Mul', [node('MatMul', [qh, kt], 'qk'), 'scale'], 'scores');
    initializer.push(c.dtype === 'float32'
      ? create(TensorProtoSchema, { name: 'scale', dataType: 1, dims: [], floatData: [scale] })
      : create(TensorProtoSchema, { name: 'scale', dataType: 10, dims: [], int32Data: [float32ToFloat16([scale])[0]!] }));
    const o = node('MatMul', [node('Softmax', [s], 'probs', { axis: -1 }), vh], 'o_h');
    node('Reshape', [node('Transpose', [o], 'o_t', { perm: [0, 2, 1, 3] }), ints('merge', [0, 0, c.D])], 'o');
  } else {
    node('MultiHeadAttention', ['q', 'k', 'v'], 'o', { num_heads: c.H, ...(c.scale !== 'default' ? { scale } : {}) }, 'com.microsoft');
  }
  const graph = create(GraphProtoSchema, {
    name: 'mha', node: nodes, initializer,
    input: [smallValueInfo({ name: 'q', type: c.dtype, dims: [c.B, c.S, c.D] }), smallValueInfo({ name: 'k', type: c.dtype, dims: kvDims }), smallValueInfo({ name: 'v', type: c.dtype, dims: kvDims })],
    output: [smallValueInfo({ name: 'o', type: c.dtype, dims: [c.B, c.S, c.D] })],
  });
  const model = create(ModelProtoSchema, {
    irVersion: 8n, graph,
    opsetImport: [create(OperatorSetIdProtoSchema, { domain: '', version: 17n }), create(OperatorSetIdProtoSchema, { domain: 'com.microsoft', version: 1n })],
  });
  // 'padded': the written-out attention as the fusion rewrites it (q and k padded per head), so the bench measures
  // exactly the fusion's output.
  if (c.form === 'padded') {
    const r = fuseAttention(model);
    if (!('fused' in r) || r.fused !== 1) throw new Error(`mha-webgpu: the fusion did not take the written-out attention: ${JSON.stringify(r)}`);
  }
  return toBinary(ModelProtoSchema, model);
}

function uniform(n: number, seed: number, amp: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s / 4294967296 * 2 - 1) * amp;
  });
}

/** Attention in float64 on [B, S, D] q and [B, L, D] k, v. */
function reference(c: Case, q: Float32Array, k: Float32Array, v: Float32Array, scale: number): Float64Array {
  const d = c.D / c.H;
  const o = new Float64Array(c.B * c.S * c.D);
  const p = new Float64Array(c.L);
  for (let b = 0; b < c.B; b++) for (let h = 0; h < c.H; h++) for (let i = 0; i < c.S; i++) {
    let max = -Infinity;
    for (let j = 0; j < c.L; j++) {
      let dot = 0;
      for (let x = 0; x < d; x++) dot += q[(b * c.S + i) * c.D + h * d + x]! * k[(b * c.L + j) * c.D + h * d + x]!;
      p[j] = dot * scale;
      max = Math.max(max, p[j]!);
    }
    let sum = 0;
    for (let j = 0; j < c.L; j++) sum += (p[j] = Math.exp(p[j]! - max));
    for (let x = 0; x < d; x++) {
      let acc = 0;
      for (let j = 0; j < c.L; j++) acc += p[j]! * v[(b * c.L + j) * c.D + h * d + x]!;
      o[(b * c.S + i) * c.D + h * d + x] = acc / sum;
    }
  }
  return o;
}

/** [B, L, H·d] as [B, H, L, d]. */
function toBnsh(c: Case, t: Float32Array): Float32Array {
  const d = c.D / c.H;
  const out = new Float32Array(t.length);
  for (let b = 0; b < c.B; b++) for (let h = 0; h < c.H; h++) for (let j = 0; j < c.L; j++) for (let x = 0; x < d; x++) {
    out[((b * c.H + h) * c.L + j) * d + x] = t[(b * c.L + j) * c.D + h * d + x]!;
  }
  return out;
}

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
};

interface CaseResult extends Case {
  headSize: number;
  webgpuVsCpu: number;
  /** Against the float64 reference, where it was computed (B·H·S·L·d at most 2e8). */
  webgpuVsRef?: number;
  cpuVsRef?: number;
  maxRef?: number;
  webgpuMedianMs?: number;
}

async function runCase(c: Case): Promise<CaseResult> {
  const round = (t: Float32Array) => (c.dtype === 'float16' ? float16ToFloat32(float32ToFloat16(t)) : t);
  const q = round(uniform(c.B * c.S * c.D, 1, c.amp));
  const k = round(uniform(c.B * c.L * c.D, 2, c.amp));
  const v = round(uniform(c.B * c.L * c.D, 3, c.amp));
  const tensor = (t: Float32Array, dims: number[]) => c.dtype === 'float16' ? new ort.Tensor('float16', float32ToFloat16(t), dims) : new ort.Tensor('float32', t, dims);
  const kvDims = c.form === 'bnsh' ? [c.B, c.H, c.L, c.D / c.H] : [c.B, c.L, c.D];
  const feeds = () => ({
    q: tensor(q, [c.B, c.S, c.D]),
    k: tensor(c.form === 'bnsh' ? toBnsh(c, k) : k, kvDims),
    v: tensor(c.form === 'bnsh' ? toBnsh(c, v) : v, kvDims),
  });
  const bytes = modelBytes(c);
  const out: Record<string, Float32Array> = {};
  let ms: number | undefined;
  for (const provider of ['cpu', 'webgpu']) {
    const s = await ort.InferenceSession.create(bytes, { executionProviders: [provider], logSeverityLevel: 3 });
    try {
      const o = (await s.run(feeds()))['o']!;
      out[provider] = c.dtype === 'float16' ? float16ToFloat32(o.data as Uint16Array) : (o.data as Float32Array);
      if (provider === 'webgpu' && TIME > 0) {
        const f = feeds();
        for (let i = 0; i < 3; i++) await s.run(f);
        const times: number[] = [];
        for (let i = 0; i < TIME; i++) {
          const t0 = performance.now();
          await s.run(f);
          times.push(performance.now() - t0);
        }
        ms = times.sort((a, b) => a - b)[Math.floor(TIME / 2)]!;
      }
    } finally {
      await s.release();
    }
  }
  const d = c.D / c.H;
  const ref = c.B * c.H * c.S * c.L * d <= 2e8 ? reference(c, q, k, v, c.scale === 'default' ? 1 / Math.sqrt(d) : c.scale) : undefined;
  return {
    ...c, headSize: d, webgpuVsCpu: maxDiff(out['webgpu']!, out['cpu']!),
    ...(ref ? { webgpuVsRef: maxDiff(out['webgpu']!, ref), cpuVsRef: maxDiff(out['cpu']!, ref), maxRef: ref.reduce((m, x) => Math.max(m, Math.abs(x)), 0) } : {}),
    ...(ms !== undefined ? { webgpuMedianMs: ms } : {}),
  };
}

function row(r: CaseResult): string {
  const e = (x: number | undefined) => (x === undefined ? '-' : x.toExponential(1));
  return `| ${r.B} | ${r.S} | ${r.L} | ${r.D} | ${r.H} | ${r.headSize} | ${r.dtype} | ${r.scale} | ${r.form} | ${r.amp} | ` +
    `${e(r.webgpuVsCpu)} | ${e(r.webgpuVsRef)} | ${e(r.cpuVsRef)} | ${r.maxRef?.toFixed(2) ?? '-'} | ${r.webgpuMedianMs?.toFixed(2) ?? '-'} |`;
}

const USAGE = `
node --import tsx bench/mha-webgpu.ts [--quick] [--case "B S L D H dtype scale form amp" ...] [--time N]
  (no --case: the whole sweep; --quick: three cases)
  --case   one case (repeatable): batch, queries, keys, width D, heads H, float32|float16, a scale or default,
           ${FORMS.join('|')}, input amplitude
  --time N also the median milliseconds of N webgpu runs (after 3)
  --out F  also the rows as JSON, rewritten after each case`;
const { TIME, cases, out } = benchCli(USAGE, {
  options: { quick: { type: 'boolean' }, case: { type: 'string', multiple: true }, time: { type: 'string', default: '0' }, out: { type: 'string' } },
}, ({ values: v }) => {
  if (v.quick && v.case) throw new BenchUsageError('--quick and --case: give one of them');
  return { TIME: intArg('--time', v.time!, 0), cases: (v.case ?? (v.quick ? QUICK : SWEEP)).map(parseCase), out: v.out };
});
console.log('| B | S | L | D | H | d | dtype | scale | form | amp | webgpu-cpu | webgpu-ref | cpu-ref | max ref | webgpu ms |');
console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
const rows: CaseResult[] = [];
for (const c of cases) {
  const r = await runCase(c);
  rows.push(r);
  console.log(row(r));
  if (out) fs.writeFileSync(out, `${JSON.stringify({ onnxruntime: ort.env.versions, rows }, null, 1)}\n`);
}
