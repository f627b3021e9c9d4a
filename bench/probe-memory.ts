/**
 * `npm run bench:probe-memory -- --unet FILE [--latent 32] [--threads 2] [--provider cpu|webgpu] [--fused] [--out JSON]`:
 * peak memory (max RSS of a fresh process) of the UNet sessions a worker holds, and the probe graph's call time
 * against the plain UNet's. On lavapipe (Mesa's CPU Vulkan driver) a WebGPU session's buffers are the process's
 * memory, so the RSS counts them; on a GPU it does not. `--fused`: both graphs fused as `--fuse-attention` writes them
 * (for WebGPU: with the GEGLUs and group norms fused, as for WebGPU devices alone).
 *
 * Cases, each in its own child process, one batch-2 call on each session held: `plain` (the UNet alone), `probe` (the
 * attention-probe graph alone: what the worker holding the probe opens now, pipeline.ts probeServesUnet) and `both`
 * (the two sessions the worker held before). Then, in one more child, both sessions with calls alternating (one
 * warm-up, --iters calls each): probe / plain by the medians, the probe fed the weights of tokens 1-3, and the probe
 * with its noise prediction fetched alone (as a unit that is not probed runs it: UnetCall.maps).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { openSession } from '../src/onnx/session.ts';
import { UnetAdapter } from '../src/onnx/unet.ts';
import { prepareAttentionProbe, probeLoadOptions } from '../src/node/probe.ts';
import { fusedLoadOptions, prepareFusedAttention } from '../src/node/fused-attention.ts';
import type { ProviderName } from '../src/onnx/session.ts';
import { BenchUsageError, benchCli, choiceArg, intArg } from './args.ts';
import { timingStats } from './timing.ts';

type Case = 'plain' | 'probe' | 'both' | 'time';

interface Setup {
  latent: number;
  threads: number;
  iters: number;
  provider: ProviderName;
  fused: boolean;
}

/** The UNet and probe files as the pipeline opens them (fused where asked), with their load options. */
async function files(file: string, fused: boolean, provider: ProviderName): Promise<{ unet: [string, object]; probe: [string, object] }> {
  const probe = await prepareAttentionProbe(file);
  if (!('file' in probe)) throw new Error(`no probe graph: ${probe.reason}`);
  if (!fused) return { unet: [file, {}], probe: [probe.file, probeLoadOptions(probe.file)] };
  const how = { biasSplitGelu: provider === 'webgpu' };
  const [u, p] = [await prepareFusedAttention(file, how), await prepareFusedAttention(probe.file, { weightsFolder: probeLoadOptions(probe.file).externalDataFolder, ...how })];
  if (!('file' in u) || !('file' in p)) throw new Error('the fusion failed');
  return { unet: [u.file, fusedLoadOptions(u.file)], probe: [p.file, fusedLoadOptions(p.file)] };
}

async function child(file: string, which: Case, o: Setup): Promise<Record<string, number>> {
  const { latent, threads, iters, provider } = o;
  const f = await files(file, o.fused, provider);
  const sessions: [string, UnetAdapter][] = [];
  if (which !== 'probe') sessions.push(['plain', new UnetAdapter(await openSession(f.unet[0], 'unet', { provider, threads }, f.unet[1]))]);
  if (which !== 'plain') sessions.push(['probe', new UnetAdapter(await openSession(f.probe[0], 'probe', { provider, threads }, f.probe[1]))]);
  const first = sessions[0]![1];
  const dim = first.hidden.shape[2] as number;
  const cond = { hidden: Float32Array.from({ length: 2 * 77 * dim }, (_, i) => Math.sin(i * 0.3)), tokens: 77, dim };
  const sample = Float32Array.from({ length: 4 * latent * latent }, (_, i) => Math.sin(i * 0.7));
  const call = { sample, channels: 4, height: latent, width: latent, timestep: 500, guidanceScale: 7.5, maskTokens: [1, 2, 3] };
  if (which !== 'time') {
    for (const [, a] of sessions) await a.run(call, cond);
    const hwm = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    return { peakMiB: Number(hwm?.[1]) / 1024 };
  }
  const times: Record<string, number[]> = { plain: [], probe: [], probeNoise: [] };
  const runs: [string, UnetAdapter, boolean][] = [...sessions.map(([l, a]): [string, UnetAdapter, boolean] => [l, a, true]), ['probeNoise', sessions[1]![1], false]];
  for (let i = 0; i <= iters; i++) {
    // Every other round in reverse order: no call always follows the same one.
    for (const [label, a, maps] of i % 2 ? [...runs].reverse() : runs) {
      const t0 = performance.now();
      await a.run({ ...call, maps }, cond);
      if (i > 0) times[label]!.push(performance.now() - t0);
    }
  }
  const [p, q, n] = [timingStats(times['plain']!), timingStats(times['probe']!), timingStats(times['probeNoise']!)];
  return { plainMs: p.medianMs, probeMs: q.medianMs, probeOverPlain: q.medianMs / p.medianMs, fastestRatio: q.minMs / p.minMs, probeNoiseMs: n.medianMs, probeNoiseOverPlain: n.medianMs / p.medianMs };
}

const USAGE = `
npm run bench:probe-memory -- --unet FILE [--latent 32] [--threads 2] [--iters 9] [--provider cpu|webgpu] [--fused] [--out JSON]
  Peak RSS of a process holding the plain UNet, the attention-probe graph, or both (one batch-2 call each), and the
  probe's call time against the plain one's (alternating calls, medians), whole and with the noise fetched alone.
  --fused: both graphs with their attention fused (as --fuse-attention writes them for these devices).
`;
const args = benchCli(USAGE, {
  options: {
    unet: { type: 'string' }, latent: { type: 'string' }, threads: { type: 'string' }, iters: { type: 'string' }, out: { type: 'string' }, child: { type: 'string' },
    provider: { type: 'string' }, fused: { type: 'boolean' },
  },
}, ({ values }) => {
  if (!values.unet) throw new BenchUsageError('--unet FILE is required (a UNet export the attention probe can be derived from)');
  return {
    unet: values.unet,
    latent: values.latent === undefined ? 32 : intArg('--latent', values.latent, 8),
    threads: values.threads === undefined ? 2 : intArg('--threads', values.threads, 1),
    iters: values.iters === undefined ? 9 : intArg('--iters', values.iters, 1),
    out: values.out,
    provider: values.provider === undefined ? 'cpu' as const : choiceArg('--provider', values.provider, ['cpu', 'webgpu'] as const),
    fused: values.fused ?? false,
    child: values.child === undefined ? undefined : choiceArg('--child', values.child, ['plain', 'probe', 'both', 'time'] as const),
  };
});
const { unet: file, latent, threads, iters, provider, fused } = args;
if (args.child) {
  console.log(JSON.stringify(await child(file, args.child, { latent, threads, iters, provider, fused })));
} else {
  const self = fileURLToPath(import.meta.url);
  const run = (which: Case) => JSON.parse(
    execFileSync(process.execPath, [
      '--import', 'tsx', self, '--unet', file, '--latent', String(latent), '--threads', String(threads), '--iters', String(iters),
      '--provider', provider, ...(fused ? ['--fused'] : []), '--child', which,
    ], { encoding: 'utf8' }).trim().split('\n').pop()!,
  ) as Record<string, number>;
  const result: Record<string, unknown> = { unet: file, latent, threads, iters, provider, fused };
  console.log('| sessions held | peak RSS (MiB) |\n| --- | ---: |');
  for (const which of ['plain', 'probe', 'both'] as const) {
    const r = run(which);
    result[which] = r;
    console.log(`| ${which} | ${r['peakMiB']!.toFixed(0)} |`);
  }
  const t = run('time');
  result['time'] = t;
  console.log(`\nprobe / plain: ${t['probeOverPlain']!.toFixed(3)} (medians of ${iters}: ${t['probeMs']!.toFixed(1)} / ${t['plainMs']!.toFixed(1)} ms; fastest calls ${t['fastestRatio']!.toFixed(3)})`);
  console.log(`probe with the noise prediction fetched alone / plain: ${t['probeNoiseOverPlain']!.toFixed(3)} (${t['probeNoiseMs']!.toFixed(1)} ms)`);
  if (args.out) fs.writeFileSync(args.out, JSON.stringify(result, null, 2));
}
