/** The model `asgd` runs when no -m is given. */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package's folder (dist/cli/ or src/cli/ two levels down). */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The model the repository ships (trained), else the built-in test model built by `npm run fixtures`. */
export function defaultModelDir(): string {
  const trained = path.join(ROOT, 'models', 'shapes-128');
  if (fs.existsSync(path.join(trained, 'model_index.json'))) return trained;
  return path.join(ROOT, '.cache', 'models', 'tiny-sd');
}
