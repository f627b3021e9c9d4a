import { loadPipeline } from '../src/node/pipeline.ts';
const mode = (process.argv[2] ?? 'process') as 'process';
const devices = process.argv[3] ?? 'cpu,cpu';
const t0 = Date.now();
const pipe = await loadPipeline('models/shapes-128', { devices, workerIsolation: mode });
const r = await pipe.generate({ prompt: 'a red circle', width: 256, height: 256, steps: 6, seed: 3, method: 'asg' } as any);
let h = 0; for (const v of r.image.data) h = (h * 31 + v) >>> 0;
console.log(mode, devices, 'hash', h, Date.now() - t0, 'ms');
await pipe.close();
