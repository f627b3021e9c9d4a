/** Builds the built-in tiny models into a temporary folder once per test process. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { writeTinySdModel, type VariantName } from '../fixtures/index.ts';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'asgd-test-'));
const built = new Map<string, Promise<string>>();

export function tinyModel(variant: VariantName = 'standard'): Promise<string> {
  let p = built.get(variant);
  if (!p) {
    const dir = path.join(root, variant);
    p = writeTinySdModel(dir, { variant }).then(() => dir);
    built.set(variant, p);
  }
  return p;
}

export function tempDir(prefix = 'out'): string {
  return fs.mkdtempSync(path.join(root, `${prefix}-`));
}

/** A copy of a model folder that a test may break. */
export async function copyModel(variant: VariantName = 'standard'): Promise<string> {
  const src = await tinyModel(variant);
  const dst = tempDir(`copy-${variant}`);
  fs.cpSync(src, dst, { recursive: true });
  return dst;
}

process.on('exit', () => fs.rmSync(root, { recursive: true, force: true }));
