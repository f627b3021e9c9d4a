/**
 * One registry of names and defaults (src/core/options/registry.ts): validation, the CLI's flags and help, and the
 * README's option table come from it, so none can drift from the others.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';
import { buildProgram } from '../src/cli/main.ts';
import { flagText, type OptionSpec } from '../src/core/options/spec.ts';
import { ALL_OPTIONS, METHOD_NAMES, METHOD_OPTIONS, PARAM_OPTIONS, VAE_OPTIONS } from '../src/core/options/registry.ts';
import { DEFAULT_METHOD_OPTIONS, resolveMethodOptions } from '../src/core/methods/options.ts';
import { resolveParams } from '../src/core/params.ts';
import { SCHEDULER_NAMES } from '../src/core/schedulers/index.ts';
import { README, withTable } from '../scripts/options-table.ts';

test('the README option table is the one the registry generates', () => {
  const readme = fs.readFileSync(README, 'utf8');
  assert.equal(withTable(readme), readme, 'run: node --import tsx scripts/options-table.ts');
});

test('asgd generate has exactly the registry flags, in its order, with its help', () => {
  const generate = buildProgram(() => undefined).commands.find((c) => c.name() === 'generate')!;
  const flags = generate.options.filter((o) => !o.hidden).map((o) => o.flags);
  assert.deepEqual(flags, ALL_OPTIONS.filter((s) => s.cli).map(flagText));
  // Hidden: each method on/off flag the other way, so that a flag can undo what --from read.
  assert.deepEqual(generate.options.filter((o) => o.hidden).map((o) => o.flags), ['--pixel-interaction', '--no-guidance-sync', '--mask', '--window-jitter']);
  const mask = generate.options.find((o) => o.long === '--no-mask')!;
  assert.equal(mask.description, 'asg: uniform structure guidance, no cross-attention mask');
  const steps = generate.options.find((o) => o.long === '--steps')!;
  assert.equal(steps.description, 'denoising steps (default: 30)');
});

test('library defaults are the registry defaults', () => {
  const r = resolveParams({ prompt: 'x', seed: 1 }, { width: 512, height: 512 });
  const param = (k: string) => (PARAM_OPTIONS as readonly OptionSpec[]).find((s) => s.key === k)!.default;
  assert.equal(r.steps, param('steps'));
  assert.equal(r.guidanceScale, param('guidanceScale'));
  assert.equal(r.method, param('method'));
  assert.deepEqual(r.vae, Object.fromEntries(VAE_OPTIONS.map((s) => [s.key, s.default])));
  assert.deepEqual(r.methodOptions, Object.fromEntries(METHOD_OPTIONS.map((s) => [s.key, s.default])));
  assert.deepEqual(resolveMethodOptions({}), DEFAULT_METHOD_OPTIONS);
  // The shipped defaults of asg that docs/repetition.md measured.
  assert.deepEqual(
    { stageSplit: r.methodOptions.stageSplit, structureWeight: r.methodOptions.structureWeight, structureSpace: r.methodOptions.structureSpace, pixelInteraction: r.methodOptions.pixelInteraction, windowJitter: r.methodOptions.windowJitter },
    { stageSplit: 0.8, structureWeight: 1, structureSpace: 'x0', pixelInteraction: true, windowJitter: true },
  );
});

test('names live once: methods and schedulers', () => {
  assert.deepEqual([...METHOD_NAMES], ['asg', 'cutdiffusion', 'multidiffusion', 'direct']);
  assert.deepEqual(PARAM_OPTIONS.find((s) => s.key === 'method')!.choices, METHOD_NAMES);
  assert.deepEqual(PARAM_OPTIONS.find((s) => s.key === 'scheduler')!.choices, SCHEDULER_NAMES);
});

test('validation messages come from the registry and name the option, range and fix', () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ methodOptions: { maskGamma: 0 } }, /Invalid maskGamma; expected a number > 0; received 0\. Use 1 for the plain normalised map\.$/],
    [{ methodOptions: { windowStride: 2.5 } }, /Invalid windowStride; expected an integer >= 1 \(or null\); received 2\.5/],
    // Before: "Invalid vae option; expected one of ...; received \"tilesize\"" (no field, no fix).
    [{ vae: { tilesize: 32 } }, /Invalid vae\.tilesize: not a known setting; expected one of tiling, tileSize, overlap, stats, statsMemory, attention; received 32\. Check the spelling$/],
    [{ vae: { tiling: 'sometimes' } }, /Invalid vae\.tiling; expected one of auto, on, off; received "sometimes"$/],
    [{ vae: { tileSize: 32, overlap: 20 } }, /Invalid vae\.overlap; expected an integer in \[0, 16\] \(at most half the tile size, 32\); received 20\. Use an overlap of at most 16, or a tile size of at least 40$/],
    [{ vae: { tileSize: 4 } }, /Invalid vae\.tileSize; expected an integer >= 8; received 4\. Use a tile size in latent pixels \(an eighth of the image's\), e\.g\. 64; smaller tiles use less memory$/],
    [{ vae: { overlap: -1 } }, /Invalid vae\.overlap; expected an integer >= 0; received -1\. Use an overlap in latent pixels, e\.g\. 16, at most half the tile size$/],
    [{ scheduler: 'heun' }, /Invalid scheduler; expected one of euler, euler-ancestral, ddim, pndm, dpmpp-2m, lms, flow-euler; received "heun"$/],
    [{ steps: 1001 }, /Invalid steps; expected an integer in \[1, 1000\]; received 1001$/],
    // A huge guidance scale overflows the prediction to a black image: refused, as is a negative one.
    [{ guidanceScale: 1e308 }, /Invalid guidanceScale; expected a number in \[0, 100\]; received 1e\+308$/],
    [{ guidanceScale: -1 }, /Invalid guidanceScale; expected a number in \[0, 100\]; received -1$/],
  ];
  for (const [extra, re] of cases) {
    assert.throws(() => resolveParams({ prompt: 'x', ...extra } as never, { width: 512, height: 512 }), re);
  }
});

test("the help of --vae-tile-stats points to --vae-stats-memory, whose help counts what 0 MiB costs as SD's decoder runs it", async () => {
  const { prepareVaeGraphs } = await import('../src/node/vae-graphs.ts');
  const graphs = await prepareVaeGraphs(new URL('../models/shapes-128/vae_decoder/model.onnx', import.meta.url).pathname);
  assert.ok('layers' in graphs);
  const help = VAE_OPTIONS.find((s) => s.key === 'stats')!.help;
  assert.match(help, /exact \(the tiles decoded layer by layer up to each norm layer, then the rest: see --vae-stats-memory\)/);
  const memory = VAE_OPTIONS.find((s) => s.key === 'statsMemory')!;
  assert.equal(memory.cli?.flag, '--vae-stats-memory');
  // SD's decoder: 30 norm layers, 27 with the attention run globally; a pass per layer plus the decode (docs/vae-tiling.md).
  assert.match(memory.help, /0: a pass of the decoder's prefix per layer, 28-31 on SD's\)/);
  assert.equal(graphs.layers.length, 7);
});
