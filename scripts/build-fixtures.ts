/**
 * Writes tiny random-weight Stable Diffusion model folders (see test/fixtures).
 *
 *   node --import tsx scripts/build-fixtures.ts [outDir] [variant...] [--seed N]
 *
 * Default: the `standard` variant into .cache/models/tiny-sd. One variant is written into outDir itself;
 * several (or `all`) each into outDir/<variant>.
 */
import { Command } from 'commander';
import { AsgdError, invalidArgument } from '../src/core/errors.ts';
import { VARIANTS, isVariantName, writeTinySdModel, type VariantName } from '../test/fixtures/tiny-sd.ts';
import { SD3_VARIANTS, writeTinySd3Model, type Sd3VariantName } from '../test/fixtures/tiny-sd3.ts';
import { join } from 'node:path';

const program = new Command()
  .name('build-fixtures')
  .description('Write tiny random-weight Stable Diffusion ONNX model folders (optimum layout).')
  .argument('[outDir]', 'output folder', '.cache/models/tiny-sd')
  .argument('[variants...]', `variants to write: ${[...VARIANTS, ...SD3_VARIANTS].join(', ')}, or all`, ['standard'])
  .option('--seed <n>', 'weight seed (same seed gives byte-identical files)', '0')
  .action(async (outDir: string, requested: string[], options: { seed: string }) => {
    const seed = Number(options.seed);
    if (!/^\d+$/.test(options.seed) || seed > 0xffffffff) {
      throw invalidArgument('--seed', 'an integer from 0 to 4294967295', options.seed);
    }
    const names = requested.includes('all') ? [...VARIANTS, ...SD3_VARIANTS] : requested;
    const isSd3 = (name: string): name is Sd3VariantName => (SD3_VARIANTS as readonly string[]).includes(name);
    const variants: (VariantName | Sd3VariantName)[] = names.map((name) => {
      if (!isVariantName(name) && !isSd3(name)) {
        throw invalidArgument('variant', `one of ${[...VARIANTS, ...SD3_VARIANTS].join(', ')} or all`, name, 'Run with --help to list them.');
      }
      return name;
    });
    for (const variant of variants) {
      const dir = variants.length === 1 ? outDir : join(outDir, variant);
      const started = performance.now();
      if (isSd3(variant)) await writeTinySd3Model(dir, { variant, seed });
      else await writeTinySdModel(dir, { variant, seed });
      console.log(`${variant}: ${dir} (${Math.round(performance.now() - started)} ms)`);
    }
  });

try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (error instanceof AsgdError) {
    console.error(`error: ${error.message}`);
    process.exitCode = error.kind === 'invalid-argument' ? 2 : error.kind === 'output' ? 4 : 1;
  } else {
    throw error;
  }
}
