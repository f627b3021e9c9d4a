/**
 * `npm run demo`: generate demo.png, a high-resolution image (method asg, 16x the native area), with the model
 * the repository ships; if it is absent, with the built-in test model (built first).
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { defaultModelDir, main } from '../src/cli/main.ts';
import { writeTinySdModel } from '../src/fixtures/index.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const model = defaultModelDir();
if (!fs.existsSync(path.join(model, 'model_index.json'))) {
  console.error(`Building the built-in test model in ${path.relative(root, model)} ...`);
  await writeTinySdModel(model, { variant: 'standard' });
}
const trained = path.basename(model) === 'shapes-128';
const size = trained ? 512 : 1024;
const args = [
  'generate', '-m', model,
  '-p', trained ? 'a red circle on a blue background' : 'a house in a landscape',
  '-W', String(size), '-H', String(size),
  '--steps', trained ? '30' : '8', '--seed', '42',
  '--method', 'asg', '-o', path.join(root, 'demo.png'), '--overwrite',
  ...process.argv.slice(2),
];
console.error(`asgd ${args.map((a) => (/\s/.test(a) ? JSON.stringify(a) : a)).join(' ')}`);
process.exit(await main(args));
