/**
 * The card script's results (`$OUT/card.json` of scripts/device/card.sh, or a file of several runs `{ runs: [...] }`
 * as bench/results/card/ keeps them) as markdown: the figures docs/benchmarks.md "On the card" records, so that a
 * session with the device spends its minutes measuring, not transcribing. Every number comes from the JSON; a part
 * that did not run says its status.
 *
 *   node --import tsx bench/card-report.ts CARD_JSON [--run N] [--out FILE]
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BenchUsageError, benchCli, intArg } from './args.ts';

type Json = Record<string, any>;
interface Part {
  status?: string;
  rc?: number;
  seconds?: number;
  limit_s?: number;
  result?: Json;
}

const ms = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(1) : 'n/a');
const x = (v: unknown, digits = 2) => (typeof v === 'number' && Number.isFinite(v) ? `${v.toFixed(digits)}x` : 'n/a');
const num = (v: unknown, digits = 2) => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(digits) : 'n/a');
const kib = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? (v / 1024).toFixed(1) : 'n/a');
const sci = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v.toExponential(1) : 'n/a');
const MODELS = [['sd15', 'SD 1.5'], ['sdxl', 'SDXL']] as const;

function partsOf(doc: Json, run: number | undefined): Record<string, Part> {
  if (Array.isArray(doc['runs'])) {
    const runs = doc['runs'] as Json[];
    const i = run ?? runs.length - 1;
    if (!runs[i]) throw new BenchUsageError(`--run ${run}: the file holds ${runs.length} run(s) (0 to ${runs.length - 1})`);
    return (runs[i]!['parts'] ?? {}) as Record<string, Part>;
  }
  if (run !== undefined && run !== 0) throw new BenchUsageError(`--run ${run}: the file holds one run`);
  if (!doc['parts'] || typeof doc['parts'] !== 'object') throw new BenchUsageError('not a card.json: no "parts" (nor "runs")');
  return doc['parts'] as Record<string, Part>;
}

function table(head: string[], rows: string[][]): string[] {
  return [`| ${head.join(' | ')} |`, `| ${head.map(() => '---').join(' | ')} |`, ...rows.map((r) => `| ${r.join(' | ')} |`), ''];
}

function machine(parts: Record<string, Part>): string[] {
  const env = parts['env']?.result;
  if (!env) return ['Machine: part `env` not run.'];
  const smi = String(env['nvidia_smi_query'] ?? '').split('\n')[1] ?? 'no nvidia-smi';
  const py = env['python'] ?? {};
  const dev = env['asgd_devices'] ?? {};
  const webgpu = (dev['devices'] as Json[] | undefined)?.find((d) => d['name'] === 'webgpu');
  const lines = [
    `Machine: ${smi.trim()}; node ${env['node']}, onnxruntime-node ${env['onnxruntime_node']}; torch ${py['torch'] ?? 'n/a'} (CUDA ${py['cuda'] ?? 'n/a'}), onnx ${py['onnx'] ?? 'n/a'}.`,
    `WebGPU: ${webgpu ? `${webgpu['available'] ? 'available' : 'missing'} (${webgpu['note']})` : 'not checked'}.`,
  ];
  const auto = dev['auto'] as Json | undefined;
  if (auto) lines.push(`--devices auto: ${auto['devices']} (${auto['reason']}).`);
  const gpus = dev['cudaGpus'] as Json | undefined;
  if (gpus) lines.push(`GPUs as 'auto' counts them for the CUDA provider: ${gpus['count'] ?? 'unknown'} (${gpus['from']}).`);
  const flash = dev['flashAttention'] as Json | undefined;
  if (flash) {
    lines.push(flash['reason'] !== undefined
      ? `Flash-attention check: did not run (${flash['reason']}).`
      : `Flash-attention check: ${flash['ok'] ? 'right' : 'WRONG'} (${(flash['cases'] as Json[]).map((c) => `${c['type']} ${c['keys']} keys d ${c['headSize']}: ${sci(c['maxError'])}`).join('; ')}).`);
  }
  return lines;
}

function unetCalls(parts: Record<string, Part>): string[] {
  const rows: string[][] = [];
  for (const [key, label] of MODELS) {
    const torch = parts[`torch-${key}`]?.result?.['torch_eager'] as Json | undefined;
    const ours = (parts[`unet-${key}`]?.result ?? parts[`fused-${key}`]?.result) as Json | undefined;
    for (const b of [2, 1, 4]) {
      const t = torch?.[`batch${b}`]?.['median_ms'];
      const o = ours?.[`run_batch${b}`]?.['medianMs'];
      const f = b === 4 ? undefined : ours?.['fused']?.[`run_batch${b}`]?.['medianMs'];
      if (t === undefined && o === undefined) continue;
      rows.push([`${label}, batch ${b}`, ms(t), ms(o), x(o / t, 1), ms(f), x(f / t, 1)]);
    }
  }
  if (rows.length === 0) return ['UNet call: parts `torch-*` and `unet-*` not run.'];
  const out = table(['call', 'PyTorch eager fp16 (ms)', 'ours, WebGPU (ms)', 'ours / PyTorch', 'ours fused (ms)', 'fused / PyTorch'], rows);
  for (const [key, label] of MODELS) {
    const u = parts[`unet-${key}`]?.result;
    if (!u) continue;
    out.push(`${label}: CFG half (batch 1 / 2) ${num(u['run_batch1_over_batch2'])} (adapter ${num(u['adapter_half_over_both'])}), batch 4 / 2 ${num(u['run_batch4_over_batch2'])}; ` +
      `PyTorch ${num(parts[`torch-${key}`]?.result?.['torch_eager']?.['batch1_over_batch2'])} and ${num(parts[`torch-${key}`]?.result?.['torch_eager']?.['batch4_over_batch2'])}; ` +
      `fused vs plain max ${sci(u['fused']?.['run_batch2']?.['maxAbsDiffFromPlain'])} (attention form: ${u['fused']?.['form'] ?? 'not recorded'}).`);
  }
  return out;
}

function accuracy(parts: Record<string, Part>): string[] {
  const rows: string[][] = [];
  for (const [key, label] of MODELS) {
    for (const name of [`unet-${key}`, `fused-${key}`]) {
      const r = parts[name]?.result;
      for (const [what, vs] of [['plain', r?.['vsTorch']], ['fused', r?.['fused']?.['vsTorch']]] as const) {
        if (!vs) continue;
        const t = vs['torchFloat16VsFloat32'] as Json | undefined;
        rows.push([`${label} ${what} (${name})`, sci(vs['ours']?.['float32']?.['maxAbs']), sci(vs['ours']?.['float32']?.['meanAbs']), sci(t?.['maxAbs']), sci(t?.['meanAbs'])]);
      }
    }
  }
  if (rows.length === 0) return ['Accuracy against PyTorch: no `--reference` results.'];
  return table(['batch-2 output', 'ours vs PyTorch fp32, max', 'mean', 'PyTorch fp16 vs fp32, max', 'mean'], rows);
}

function variants(parts: Record<string, Part>): string[] {
  const out: string[] = [];
  for (const [name, p] of Object.entries(parts)) {
    if (!name.startsWith('variants') || !p.result?.['variants']) continue;
    const f16 = p.result['float16'] as Json | undefined;
    const converted = f16 ? `; converted to float16 in ${ms(p.result['float16ConvertMs'])} ms: ${f16['tensors']} tensors, ${f16['float32Nodes']} nodes kept in float32` : '';
    out.push(`${name} (validation ${p.result['validation']}${converted}):`);
    out.push(...table(['variant', 'median (ms)', 'of the first', 'max diff from the first', 'vs PyTorch fp32, max'],
      (p.result['variants'] as Json[]).map((v) => [v['variant'], ms(v['medianMs']), num(v['overReference'], 3), sci(v['maxAbsDiffFromReference']), sci(v['vsTorch']?.['float32']?.['maxAbs'])])));
  }
  return out.length ? out : ['Variants: part `variants-*` not run.'];
}

/** The kernel's own cost (part `dispatch`): µs a kernel, and what that makes of each profiled call's kernels. */
function dispatch(parts: Record<string, Part>): string[] {
  const out: string[] = [];
  for (const [name, p] of Object.entries(parts)) {
    if (!name.startsWith('dispatch') || p.result?.['usPerKernel'] === undefined) continue;
    const r = p.result;
    const chains = (r['chains'] as Json[]).map((c) => `${c['kernels']}: ${ms(c['medianMs'])} ms${c['maxError'] ? ` (off by ${c['maxError']})` : ''}`).join(', ');
    out.push(`${name} (${r['type']}): ${num(r['usPerKernel'], 1)} µs a kernel, ${num(r['msPerCall'], 3)} ms a call (Adds per call: ${chains}).`);
    for (const [prof, pp] of Object.entries(parts)) {
      const kernels = pp.result?.['perRun']?.[0]?.['kernels'] as number | undefined;
      if (!prof.startsWith('profile') || !kernels) continue;
      const wall = pp.result!['perRun'][0]['wallMs'] as number;
      out.push(`  ${prof}: ${kernels} kernels x ${num(r['usPerKernel'], 1)} µs = ${ms((kernels * r['usPerKernel']) / 1000)} ms of its ${ms(wall)} ms call.`);
    }
  }
  return out.length ? out : ['Dispatch: part `dispatch` not run.'];
}

/** Whether subgroup (tensor-core) kernels ran: absent from profiles made before the field existed. */
function subgroupNote(sg: Json | undefined): string {
  if (!sg) return '';
  if (!sg['kernels']) return '; no subgroup (tensor-core) kernels';
  return `; subgroup kernels ${num(sg['kernels'], 0)} (${(100 * sg['share']).toFixed(0)} % of GPU time: ${(sg['programs'] as string[]).join(', ')})`;
}

function profiles(parts: Record<string, Part>): string[] {
  const out: string[] = [];
  for (const [name, p] of Object.entries(parts)) {
    const r = p.result;
    if (!name.startsWith('profile') || !r?.['perRun']) continue;
    const runs = r['perRun'] as Json[];
    const mean = (k: string) => runs.reduce((a, q) => a + (q[k] as number), 0) / runs.length;
    out.push(`${name}: call ${ms(mean('wallMs'))} ms, GPU kernels ${ms(mean('gpuKernelMs'))} ms in ${num(mean('kernels'), 0)} kernels, host nodes ${ms(mean('hostNodeMs'))} ms; ` +
      (r['byOp'] as Json[]).slice(0, 6).map((o) => `${o['op']} ${(100 * o['share']).toFixed(0)} %`).join(', ') + subgroupNote(r['subgroup']));
  }
  return out.length ? out : ['Profile: parts `profile-*` not run.'];
}

function generations(parts: Record<string, Part>): string[] {
  const out: string[] = [];
  for (const name of ['gen-fused', 'gen-1', 'gen-2']) {
    const p = parts[name];
    if (!p) continue;
    if (!p.result) {
      out.push(`${name}: ${p.status ?? 'no status'}${p.seconds !== undefined ? ` after ${p.seconds} s` : ''}, no result written.`);
      continue;
    }
    const r = p.result;
    const form = r['attentionFusion'] ? `; attention ${r['attentionFusion']['applied'] ? `fused, ${r['attentionFusion']['form'] ?? 'padded'}` : 'as exported'}` : '';
    const head = `${name} (${r['devices'] ?? '?'}, ${r['width'] ?? '?'}x${r['height'] ?? '?'}, ${r['steps'] ?? '?'} steps; ${p.status ?? 'no status'} after ${p.seconds ?? '?'} s${form})`;
    const res = r['result'] as Json | undefined;
    if (res) {
      const t = res['timings'] as Json;
      out.push(`${head}: total ${ms(t['totalMs'] / 1000)} s (UNet ${ms(t['unetMs'] / 1000)}, host ${ms(t['hostMs'] / 1000)}, VAE ${ms(t['decodeMs'] / 1000)}, text ${ms((t['textMs'] ?? NaN) / 1000)}); ` +
        `${res['unetEvaluations']} UNet evaluations, ${ms(res['unetMsPerEvaluation'])} ms each; load ${ms(r['loadMs'] / 1000)} s.`);
    } else if (r['partial']) {
      const q = r['partial'] as Json;
      const left = (q['unitsTotal'] - q['unitsDone']) * q['msPerUnit'];
      const d = q['decode'] as Json | undefined;
      const decode = d
        ? ` Then the VAE: ${d['tilesDone']}/${d['tilesTotal']} tile runs in ${ms(d['ms'] / 1000)} s` +
          (d['tilesDone'] > 0 ? ` (about ${ms((d['ms'] * d['tilesTotal']) / d['tilesDone'] / 1000)} s for all at that rate).` : '.')
        : '';
      out.push(`${head}: cut at step ${q['step']}/${q['totalSteps']} (stage ${q['stage']}), ${q['unitsDone']}/${q['unitsTotal']} units in ${ms(q['ms'] / 1000)} s, ` +
        `${ms(q['msPerUnit'])} ms a unit: about ${ms((q['ms'] + left) / 1000)} s for the whole denoising at that rate.${decode}`);
    } else out.push(`${head}: no result.`);
    const mem = r['gpuMemoryMiB'] as Json | undefined;
    if (mem && mem['afterLoad'] !== undefined) {
      out.push(`${name}: GPU memory in use ${mem['afterLoad']} MiB after loading, ${mem['afterWarmup'] ?? '?'} after the warm-up, ${mem['afterGeneration'] ?? '?'} after the generation.`);
    }
  }
  return out.length ? out : ['Generations: not run.'];
}

/** The SD-width VAE's tiled decode (part `vae-sd`, bench/card-vae.ts): per-tile statistics against exact at each state budget. */
function vaeDecode(parts: Record<string, Part>): string[] {
  const p = parts['vae-sd'];
  if (!p) return ['VAE decode: part `vae-sd` not run.'];
  const r = p.result;
  if (!r?.['cases']) return [`vae-sd: ${p.status ?? 'no status'}, no result written.`];
  const out = [`vae-sd (${r['size']} px, tiles of ${r['tile']}, ${r['provider']}; ${p.status ?? 'no status'} after ${p.seconds ?? '?'} s):`];
  for (const c of r['cases'] as Json[]) {
    if (c['ms'] === undefined) {
      const q = c['partial'] as Json | undefined;
      out.push(`- ${c['case']}: cut${q ? ` after ${q['done']}/${q['total']} tile runs in ${ms(q['ms'] / 1000)} s (about ${ms((q['ms'] * q['total']) / q['done'] / 1000)} s for all at that rate)` : ' before its first tile run'}.`);
      continue;
    }
    const kept = c['resumedFrom'] === undefined || c['resumedFrom'] === null ? '' : `, states kept up to cut ${c['resumedFrom']}`;
    const same = c['maxDiffFromFirst'] === undefined ? '' : `, max difference from the first exact image ${c['maxDiffFromFirst']}`;
    out.push(`- ${c['case']}: ${ms(c['ms'] / 1000)} s${c['overOff'] === undefined ? '' : ` (${num(c['overOff'])}x off)`}${kept}${same}.`);
  }
  // The states kept on the device against brought back to the host after every segment, at one budget.
  const done = (r['cases'] as Json[]).filter((c) => c['ms'] !== undefined && c['statsMemory'] !== undefined);
  for (const host of done.filter((c) => c['statesOnHost'] === true)) {
    const dev = done.find((c) => c['statesOnHost'] === false && c['statsMemory'] === host['statsMemory']);
    if (dev) out.push(`States on the device against on the host at ${host['statsMemory']} MiB: ${ms(dev['ms'] / 1000)} s against ${ms(host['ms'] / 1000)} s (${num(dev['ms'] / host['ms'])}).`);
  }
  return out;
}

/** A float16 decoder as exported against its float32 graph (part `vae-dtype`): what following force_upcast costs. */
function vaeDtype(parts: Record<string, Part>): string[] {
  const d = parts['vae-dtype'];
  if (!d) return ['VAE in float32: part `vae-dtype` not run.'];
  const t = d.result;
  if (t?.['float32Ms'] === undefined) return [`vae-dtype: ${d.status ?? 'no status'}, no result written.`];
  const line = `vae-dtype (${t['size']} px, one decode, ${t['provider']}): float16 ${ms(t['float16Ms'])} ms, as float32 (force_upcast) ${ms(t['float32Ms'])} ms (${num(t['float32OverFloat16'])}x); images apart by up to ${num(t['maxDiff'], 4)}.`;
  // The float32 graph with its group norms as GroupNorm nodes (WebGPU only): whether the decoder should get them too.
  const gn = t['groupNormOverFloat32'] === undefined ? [] : [`The float32 decoder with its ${t['groupNorms']} group norms as GroupNorm: ${ms(t['groupNormMs'])} ms, ${num(t['groupNormOverFloat32'])} of the written-out one; images apart by up to ${Number(t['groupNormMaxDiff']).toExponential(1)}.`];
  return [line, ...gn];
}

function probeAndSchedule(parts: Record<string, Part>): string[] {
  const out: string[] = [];
  const probe = parts['probe-sdxl']?.result;
  if (probe) {
    out.push(`Probe (SDXL): probe / plain ${num(probe['batch2']?.['probeOverPlain'])} at batch 2, ${num(probe['batch1']?.['probeOverPlain'])} at batch 1` +
      (probe['batch2']?.['mapBytes'] !== undefined ? `; maps ${kib(probe['batch2']['mapBytes'])} KiB a call` : '') + '.');
    // A unit that is not probed runs the probe graph with its noise prediction fetched alone (pipeline.ts, probeServesUnet).
    if (probe['batch2']?.['probeNoiseOverPlain'] !== undefined) {
      out.push(`A unit that is not probed, on the probe graph (noise prediction fetched alone): ${num(probe['batch2']['probeNoiseOverPlain'])} of the plain call at batch 2, ${num(probe['batch1']?.['probeNoiseOverPlain'])} at batch 1 (\`probeSession\` 'shared', the default; 'separate' runs those units on the plain call at the cost of a second copy of the UNet on the device holding the probe).`);
    }
    const same = probe['batch2']?.['noiseVsPlain'];
    if (same) {
      out.push(same['differing'] === 0
        ? `The probe graph's noise prediction is the plain UNet's bit for bit here (${same['values']} values, batch 2): one session may serve both.`
        : `The probe graph's noise prediction differs from the plain UNet's in ${same['differing']} of ${same['values']} values (largest ${num(same['maxAbsDiff'], 6)}, batch 2): units' bits then depend on the graph that runs them.`);
    }
    // The same calls with every output left on the GPU (bench/card.ts probe, WebGPU only): arithmetic against download.
    for (const b of ['batch2', 'batch1']) {
      const row = probe[b];
      if (row?.['probeOverPlainOnDevice'] === undefined) continue;
      out.push(`Probe at ${b.replace('batch', 'batch ')}, outputs left on the device: probe / plain ${num(row['probeOverPlainOnDevice'])}; the outputs' download ${ms(row['probeOutputsDownloadMs'])} ms.`);
    }
  }
  const rows = parts['schedule']?.result?.['rows'] as Json[] | undefined;
  if (rows) {
    out.push(...table(['geometry', 'devices', 'split', 'host charged', 'speed-up', 'target', 'met', 'one device, split / whole'],
      rows.map((r) => [r['geometry'], String(r['devices']), r['split'], r['hostCharged'] ? 'yes' : 'no', x(r['speedup']), r['target'] !== undefined ? x(r['target'], 1) : '', r['met'] === undefined ? '' : r['met'] ? 'yes' : 'no',
        r['oneDeviceOverNever'] !== undefined ? num(r['oneDeviceOverNever'], 2) : ''])));
  }
  return out.length ? out : ['Probe and schedule: not run.'];
}

/** What `asgd tune` measured and advised on the card (part `tune`). */
function tune(parts: Record<string, Part>): string[] {
  const t = parts['tune'];
  const r = t?.result;
  if (!r?.['plain']) return [t ? `tune: ${t.status ?? 'no status'}, no result written.` : 'tune: not run.'];
  const halves = (g: Json | undefined) => `${ms(g?.['wholeMs'])}${g?.['halfMs'] !== undefined ? `, ${ms(g['halfMs'])}` : ''}`;
  const probe = r['probe'] ? `; a unit not probed ${num(r['probe']['probeMs'] / r['probe']['graphMs'])} of the ${r['probeAgainst']} call` : '';
  const flags = (r['advice']?.['flags'] as string[] | undefined) ?? [];
  return [
    `Tune (${r['device']}, latent ${r['latent']}): plain ${ms(r['plain']['wholeMs'])} ms a unit${r['plain']['halfMs'] !== undefined ? `, ${ms(r['plain']['halfMs'])} a half` : ''}; ${r['fused'] ? `fused ${halves(r['fused'])}` : 'nothing fused'}${probe}. Flags: ${flags.length ? flags.join(' ') : 'none'}.`,
    ...((r['advice']?.['reasons'] as string[] | undefined) ?? []).map((x) => `- ${x}`),
  ];
}

function statuses(parts: Record<string, Part>): string[] {
  return [`Parts: ${Object.entries(parts).filter(([, p]) => p.status).map(([n, p]) => `${n} ${p.status}${p.seconds !== undefined ? ` ${p.seconds} s` : ''}`).join(', ')}.`];
}

/** The markdown for one run's parts. */
export function cardReport(doc: Json, run?: number): string {
  const parts = partsOf(doc, run);
  const sections: [string, string[]][] = [
    ['Machine', machine(parts)], ['One UNet call', unetCalls(parts)], ['Accuracy against PyTorch', accuracy(parts)],
    ['Ways to run the call (variants)', variants(parts)], ['Where the time goes (profile)', profiles(parts)], ['What a kernel costs (dispatch)', dispatch(parts)],
    ['Whole generations', generations(parts)], ['Tiled VAE decode (vae-sd)', vaeDecode(parts)], ['A float16 VAE in float32 (vae-dtype)', vaeDtype(parts)], ['Probe and scheduling', probeAndSchedule(parts)], ['What asgd tune advises (tune)', tune(parts)], ['Parts', statuses(parts)],
  ];
  return sections.map(([title, lines]) => [`**${title}**`, '', ...lines, ''].join('\n')).join('\n');
}

const USAGE = `
node --import tsx bench/card-report.ts CARD_JSON [--run N] [--out FILE]
  CARD_JSON  scripts/device/card.sh's $OUT/card.json, or a file of runs ({ "runs": [...] }, bench/results/card/)
  --run N    which run of such a file (default: the last)
  --out FILE write the markdown there (default: stdout)
`;

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { file, run, out } = benchCli(USAGE, { allowPositionals: true, options: { run: { type: 'string' }, out: { type: 'string' } } }, ({ values, positionals }) => {
    if (positionals.length !== 1) throw new BenchUsageError(`expected one CARD_JSON file, received ${positionals.length}`);
    if (!fs.existsSync(positionals[0]!)) throw new BenchUsageError(`CARD_JSON ${positionals[0]}: no such file`);
    return { file: positionals[0]!, run: values.run === undefined ? undefined : intArg('--run', values.run, 0), out: values.out };
  });
  let text: string;
  try {
    text = cardReport(JSON.parse(fs.readFileSync(file, 'utf8')) as Json, run);
  } catch (err) {
    if (!(err instanceof BenchUsageError || err instanceof SyntaxError)) throw err;
    process.stderr.write(`card-report.ts: ${file}: ${err.message}\n`);
    process.exit(2);
  }
  if (out) fs.writeFileSync(out, text);
  else process.stdout.write(text);
}
