/** A python3 with torch and onnx (Debian's python3-torch and python3-onnx; the test command's setup installs them). */
import { spawnSync } from 'node:child_process';

export function torchPython(): string | undefined {
  for (const p of ['/usr/bin/python3', 'python3']) {
    const r = spawnSync(p, ['-c', 'import torch, onnx'], { stdio: 'ignore' });
    if (r.status === 0) return p;
  }
  return undefined;
}

export const NO_TORCH_PYTHON =
  'no python3 with torch and onnx: run `node scripts/setup-system.mjs` (as root on Debian it installs python3-torch and python3-onnx)';
