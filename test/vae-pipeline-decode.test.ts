/**
 * The pipelines' shared VAE orchestration (src/core/vae/pipeline-decode.ts), which Node and the browser both run
 * over their own runner: which graphs a tiled decode asks for, and that a fallback's reason reaches onWarning.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeLatentWith, type VaeGraphRunner } from '../src/core/vae/pipeline-decode.ts';
import type { DecodedImage, TiledVaeBackend } from '../src/core/vae/tiled.ts';
import { DEFAULT_VAE } from '../src/core/params.ts';

/** A decoder that upsamples by 8 by repetition (no norm layers of its own), recording what was asked. */
function fakeRunner(surgery: { norms?: string; split?: string }) {
  const asked: string[] = [];
  const run = async (input: Float32Array, c: number, h: number, w: number): Promise<DecodedImage> => {
    const out = new Float32Array(3 * 64 * h * w);
    for (let k = 0; k < 3; k++) for (let y = 0; y < 8 * h; y++) for (let x = 0; x < 8 * w; x++) out[(k * 8 * h + y) * 8 * w + x] = input[((k % c) * h + (y >> 3)) * w + (x >> 3)]!;
    return { data: out, height: 8 * h, width: 8 * w };
  };
  const unused = () => Promise.reject(new Error('not offered'));
  const runner: VaeGraphRunner & { run: TiledVaeBackend['run'] } = {
    run,
    modelBackend: async (norms) => {
      asked.push(norms === 'derived' ? 'norms' : `plain: ${norms.reason}`);
      return { norms: norms === 'derived' ? { reason: surgery.norms ?? 'none offered' } : norms, run, runStats: unused, runTile: unused };
    },
    attentionSplit: async () => {
      asked.push('split');
      return { reason: surgery.split ?? 'not offered' };
    },
  };
  return { runner, asked };
}

test('a tiled decode whose norm layers cannot share statistics falls back to per-tile decoding, the reason in the warning', async () => {
  const { runner, asked } = fakeRunner({ norms: 'a LayerNormalization node', split: 'the decoder has a fused attention the split does not know' });
  const warnings: string[] = [];
  const latent = Float32Array.from({ length: 4 * 24 * 24 }, (_, i) => Math.sin(i));
  const r = await decodeLatentWith(runner, latent, 4, 24, 24, { ...DEFAULT_VAE, tiling: 'on', tileSize: 16, overlap: 4, attention: 'auto' }, { onWarning: (m) => warnings.push(m) });
  assert.deepEqual(asked, ['split', 'norms']);
  assert.equal(r.tiled?.stats, 'off');
  assert.equal(r.tiled?.attention, 'tile');
  assert.equal(warnings.length, 2, warnings.join('\n'));
  assert.match(warnings[0]!, /per-tile attention .*fused attention the split does not know/);
  assert.match(warnings[1]!, /per-tile normalisation .*LayerNormalization/);
});

test('statistics off and per-tile attention ask for no derived graph; an untiled decode runs the plain model', async () => {
  const { runner, asked } = fakeRunner({});
  const latent = new Float32Array(4 * 24 * 24);
  const warnings: string[] = [];
  await decodeLatentWith(runner, latent.slice(), 4, 24, 24, { ...DEFAULT_VAE, tiling: 'on', tileSize: 16, overlap: 4, stats: 'off', attention: 'tile' }, { onWarning: (m) => warnings.push(m) });
  assert.deepEqual(asked, ['plain: statistics off']);
  assert.deepEqual(warnings, []);
  const whole = await decodeLatentWith(runner, latent.slice(), 4, 24, 24, { ...DEFAULT_VAE, tiling: 'auto', tileSize: 64 });
  assert.equal(whole.tiled, undefined);
  assert.deepEqual(asked, ['plain: statistics off']);
});
