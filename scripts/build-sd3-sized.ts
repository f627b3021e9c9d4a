/**
 * Writes an SD3-medium-sized random-weight SD3 folder (optimum layout) for timings on real hardware: the
 * transformer at SD3 medium's widths (1536 wide, 24 heads, patch 2, 128 latent native size; about 2.03 billion
 * weights plus the position table at 24 blocks, 8.3 GB in float32, in transformer/model.onnx_data) with shallow
 * text encoders of SD3's widths. Building needs about three times the weights' size in memory; --layers
 * builds fewer joint blocks (about 85 million weights each) for a per-block timing.
 *
 *   node --import tsx scripts/build-sd3-sized.ts [outDir] [--layers N] [--no-t5] [--seed N]
 */
import { Command } from 'commander';
import { invalidArgument } from '../src/core/errors.ts';
import { SD3_MEDIUM_SIZE, SD3_MEDIUM_TEXT, sd3TransformerParameters, writeTinySd3Model } from '../test/fixtures/tiny-sd3.ts';

const program = new Command()
  .name('build-sd3-sized')
  .description('Write an SD3-medium-sized random-weight SD3 ONNX folder (optimum layout) for timings.')
  .argument('[outDir]', 'output folder', '.cache/models/sd3-medium-sized')
  .option('--layers <n>', `joint blocks (SD3 medium: ${SD3_MEDIUM_SIZE.layers})`, String(SD3_MEDIUM_SIZE.layers))
  .option('--no-t5', 'leave text_encoder_3 out (its part of the conditioning is zeros)')
  .option('--seed <n>', 'weight seed', '0')
  .action(async (outDir: string, options: { layers: string; t5: boolean; seed: string }) => {
    const layers = Number(options.layers);
    if (!Number.isInteger(layers) || layers < 1 || layers > 64) throw invalidArgument('--layers', 'an integer from 1 to 64', options.layers);
    const seed = Number(options.seed);
    if (!/^\d+$/.test(options.seed) || seed > 0xffffffff) throw invalidArgument('--seed', 'an integer from 0 to 4294967295', options.seed);
    const weights = sd3TransformerParameters({ ...SD3_MEDIUM_SIZE, layers }, SD3_MEDIUM_TEXT.t5, SD3_MEDIUM_TEXT.clipL + SD3_MEDIUM_TEXT.clipG);
    console.log(`transformer: ${layers} joint blocks, ${(weights / 1e9).toFixed(2)} billion weights (${((weights * 4) / 2 ** 30).toFixed(1)} GiB float32)`);
    const started = performance.now();
    await writeTinySd3Model(outDir, { variant: options.t5 ? 'sd3' : 'sd3-no-t5', seed, size: 'sd3-medium', layers });
    console.log(`${outDir} (${Math.round(performance.now() - started)} ms)`);
  });

await program.parseAsync(process.argv);
