/**
 * CFG halves across the browser's workers (loadWebPipeline's splitCfg): the demo page with the shipped model on two
 * WebAssembly workers (Debian's Chromium, cross-origin isolated, one thread per worker), one generation per mode,
 * the modes in a turning order each round, in one browser: the generation's time, tasks per worker, and whether the image is
 * the same bit for bit as the first mode's. Prints a table and writes the JSON.
 *
 *   npm run bench:web-split -- [--size 512] [--steps 20] [--rounds 3] [--workers 2]
 *        [--out bench/results/web-split-<date>.json]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { buildDemoSite, generateOnDemo, openDemo, serveSite } from '../test/helpers/demo-site.ts';
import { tempDir } from '../test/helpers/models.ts';
import { benchCli, intArg } from './args.ts';

const MODES = ['never', 'balance', 'always'] as const;
const USAGE = `
node --import tsx bench/web-split.ts [options]: the shipped model in Chromium on WebAssembly workers, one generation
per splitCfg mode (never, balance, always) and round; prints a table and writes the JSON.

  --size N      image side in px, up to 512 (the demo offers up to 16x the native area) (default 512)
  --steps N     steps (default 20)
  --rounds N    rounds of the three modes, the order turning each round (default 3)
  --workers N   WebAssembly workers (default 2)
  --out FILE    JSON output (default bench/results/web-split-<date>.json)
  --help        this text
`;
const { size, steps, rounds, workers, out } = benchCli(USAGE, {
  options: { size: { type: 'string', default: '512' }, steps: { type: 'string', default: '20' }, rounds: { type: 'string', default: '3' }, workers: { type: 'string', default: '2' }, out: { type: 'string' } },
}, ({ values: v }) => ({
  size: intArg('--size', v.size!, 128),
  steps: intArg('--steps', v.steps!, 1),
  rounds: intArg('--rounds', v.rounds!, 1),
  workers: intArg('--workers', v.workers!, 1),
  out: v.out ?? path.join('bench', 'results', `web-split-${new Date().toISOString().slice(0, 10)}.json`),
}));

const siteDir = tempDir('web-split-site');
await buildDemoSite(siteDir);
const site = await serveSite(siteDir);
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run'] });
const context = await browser.newContext();
type Row = { round: number; mode: string; chosen: string; totalMs: number; tasks: number[]; units: number; samePng: boolean };
const rows: Row[] = [];
let first: Buffer | undefined;
try {
  for (let round = 1; round <= rounds; round++) {
    // The order turns by one each round, so that no mode always runs first or right after another.
    for (const mode of MODES.map((_, i) => MODES[(i + round - 1) % MODES.length]!)) {
      const demo = await openDemo(context, site.url, `provider=wasm&workers=${workers}&threads=1&split=${mode}`);
      const r = await generateOnDemo(demo.page, { prompt: 'a red circle on a blue background', width: size, height: size, seed: 3, steps }, 600_000);
      first ??= r.png;
      rows.push({ round, mode, chosen: r.splitCfg, totalMs: r.totalMs, tasks: r.stats.map((s) => s.tasks), units: r.unetEvaluations, samePng: r.png.equals(first) });
      const row = rows.at(-1)!;
      console.log(`round ${round} ${mode}: ${(row.totalMs / 1000).toFixed(1)} s, tasks ${row.tasks.join('+')} for ${row.units} units, same image ${row.samePng}`);
      await demo.page.close();
    }
  }
} finally {
  await browser.close();
  await site.close();
}
console.log(`\n### splitCfg on ${workers} WebAssembly workers, ${size}x${size} px, ${steps} steps (Chromium, ${os.cpus().length} cores)\n`);
console.log('| mode | generation s per round | tasks per worker | units | same image |');
console.log('| --- | --- | --- | --- | --- |');
for (const mode of MODES) {
  const of = rows.filter((r) => r.mode === mode);
  console.log(`| ${mode} | ${of.map((r) => (r.totalMs / 1000).toFixed(1)).join(', ')} | ${of[0]!.tasks.join(' + ')} | ${of[0]!.units} | ${of.every((r) => r.samePng)} |`);
}
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), cores: os.cpus().length, size, steps, workers, rows }, null, 2) + '\n');
console.log(`\nWrote ${out}`);
