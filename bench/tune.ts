/**
 * Quick tuning of asg options on the shipped model: 4 prompts x seeds 1-2 at one size, each configuration given as
 * [label, method, methodOptions]. Used for the defaults recorded in docs/repetition.md.
 *
 *   node --import tsx bench/tune.ts '[["cut","cutdiffusion",{"stageSplit":0.8}]]' 512
 */
import { analyseImage, parsePrompt } from './analysis/shapes.ts';
import { loadPipeline } from '../src/node/pipeline.ts';
const pipe = await loadPipeline('models/shapes-128', { threads: 2 });
const prompts = ['a red circle on a blue background', 'a blue square on a yellow background', 'a white triangle on a green background', 'a yellow circle on a purple background'];
const configs: [string, string, Record<string, unknown>][] = JSON.parse(process.argv[2]!);
const size = Number(process.argv[3] ?? 512);
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
