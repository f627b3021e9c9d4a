/**
 * Quick tuning of asg options on the shipped model: 4 prompts x seeds 1-2 at one size, each configuration given as
 * [label, method, methodOptions]. Used for the defaults recorded in docs/repetition.md.
 *
 *   node --import tsx bench/tune.ts '[["cut","cutdiffusion",{"stageSplit":0.8}]]' 512
 */
import { analyseImage, parsePrompt } from './analysis/shapes.ts';
import { loadPipeline } from '../src/node/pipeline.ts';
import { METHOD_NAMES } from '../src/core/options/registry.ts';
import { BenchUsageError, benchCli, positionalInts } from './args.ts';

const USAGE = `
node --import tsx bench/tune.ts CONFIGS [SIZE]: asg options on the shipped model, 4 prompts x seeds 1-2 at SIZE px
(default 512), 20 steps; one line per configuration. CONFIGS: a JSON array of [label, method, methodOptions], e.g.
  node --import tsx bench/tune.ts '[["cut","cutdiffusion",{"stageSplit":0.8}]]' 512
`;
const { configs, size } = benchCli(USAGE, { options: {}, allowPositionals: true }, ({ positionals }) => {
  const [text, ...rest] = positionals;
  if (text === undefined) throw new BenchUsageError('CONFIGS: expected a JSON array of [label, method, methodOptions]');
  let configs: unknown;
  try {
    configs = JSON.parse(text);
  } catch {
    configs = undefined;
  }
  const ok = (c: unknown) => Array.isArray(c) && c.length === 3 && typeof c[0] === 'string' && (METHOD_NAMES as readonly string[]).includes(c[1] as string)
    && typeof c[2] === 'object' && c[2] !== null && !Array.isArray(c[2]);
  if (!Array.isArray(configs) || configs.length === 0 || !configs.every(ok)) {
    throw new BenchUsageError(`CONFIGS: expected a JSON array of [label, method (${METHOD_NAMES.join(', ')}), methodOptions object], received ${JSON.stringify(text)}`);
  }
  const [size] = positionalInts(rest, [['SIZE', 512, 64]]);
  if (size! % 8 !== 0) throw new BenchUsageError(`SIZE: expected a multiple of 8, received ${size}`);
  return { configs: configs as [string, string, Record<string, unknown>][], size: size! };
});
const pipe = await loadPipeline('models/shapes-128', { threads: 2 });
const prompts = ['a red circle on a blue background', 'a blue square on a yellow background', 'a white triangle on a green background', 'a yellow circle on a purple background'];
for (const [label, method, opts] of configs) {
  let ok = 0, one = 0, count = 0, sharp = 0, n = 0;
  for (const prompt of prompts) for (const seed of [1, 2]) {
    const r = await pipe.generate({ prompt, width: size, height: size, steps: 20, seed, method: method as 'asg', methodOptions: opts });
    const a = analyseImage(r.image.data, r.image.width, r.image.height, parsePrompt(prompt)!);
    ok += a.correct ? 1 : 0; one += a.count === 1 ? 1 : 0; count += a.count; sharp += a.sharpness ?? 0; n++;
  }
  console.log(`${label} @${size}: correct ${ok}/${n}, one-object ${one}/${n}, mean count ${(count / n).toFixed(2)}, sharpness ${(sharp / n).toFixed(3)}`);
}
await pipe.close();
