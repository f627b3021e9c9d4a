/**
 * Loads a webgpu pipeline on the shipped model, generates one step, closes it, and does that again (as `asgd serve`
 * does after a cancel or a model switch), with the worker as a thread and then as a process; then writes a line to
 * stderr. Run by test/webgpu.test.ts with stderr to a file, where the stderr filter (src/onnx/runtime-log.ts) is
 * active (in this process for a worker thread, in the worker's own for a worker process).
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadPipeline } from '../../src/node/pipeline.ts';

const model = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'models', 'shapes-128');
for (const workerIsolation of ['thread', 'process'] as const) {
  for (let i = 0; i < 2; i++) {
    const p = await loadPipeline(model, { devices: 'webgpu:0', threads: 1, workerIsolation });
    const r = await p.generate({ prompt: 'a red circle', seed: 1, steps: 1, method: 'direct' });
    await p.close();
    process.stdout.write(`${workerIsolation} pipeline ${i}: ${r.image.width}x${r.image.height}\n`);
  }
}
process.stderr.write('stderr still reaches the file\n');
