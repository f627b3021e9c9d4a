/**
 * A fleet worker with the fake engine in its own process, for tests that kill it or block its event loop.
 * argv[2]: JSON { queue, prefix, outputsDir, modelDirs, stepMs, timings?, id?, blockMs?, blockAtStep?, engineLog? }.
 * Prints `ready <id>` once it takes jobs; SIGTERM closes it (its running job goes back to the queue).
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startWorker } from '../../src/server/fleet/worker.ts';

const c = JSON.parse(process.argv[2]!) as {
  queue: string; prefix: string; outputsDir: string; modelDirs: string[]; stepMs: number;
  timings?: Record<string, number>; id?: string; blockMs?: number; blockAtStep?: number; engineLog?: string;
};
let blocked = false;
const worker = await startWorker({
  queue: c.queue, prefix: c.prefix, outputsDir: c.outputsDir, modelDirs: c.modelDirs, timings: c.timings, id: c.id,
  engine: { module: path.join(path.dirname(fileURLToPath(import.meta.url)), 'fake-engine.ts'), exportName: 'FakeEngine', options: { stepMs: c.stepMs, ...(c.engineLog ? { log: c.engineLog } : {}) } },
  log: (line) => process.stdout.write(`${line}\n`),
  onProgress: (_jobId, p) => {
    if (c.blockMs && !blocked && p.phase === 'denoise' && p.step >= (c.blockAtStep ?? 1)) {
      blocked = true;
      // The event loop stops here: no lock renewal, no heartbeat, until the lock has long expired.
      const until = Date.now() + c.blockMs;
      while (Date.now() < until) {
        // busy
      }
      process.stdout.write('unblocked\n');
    }
  },
});
process.stdout.write(`ready ${worker.id}\n`);
process.on('SIGTERM', () => void worker.close().then(() => process.exit(0)));
