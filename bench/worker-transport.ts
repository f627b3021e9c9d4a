/**
 * Arrays to a worker process and back (not a test): a Float32Array sent to a forked child and returned by it, through
 * Node's IPC channel ('advanced' serialization, as worker processes had it) and through files in /dev/shm
 * (src/node/runner/array-stow.ts, what they use now), alternately round by round so that load on a shared machine hits
 * both alike. Median of the rounds per size; prints a Markdown table and writes bench/results/worker-transport.json.
 *
 *   npm run bench:worker-transport -- [--rounds 7]
 */
import { fork } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ArrayStow, makeStowFolder } from '../src/node/runner/array-stow.ts';
import { benchCli, intArg } from './args.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SELF = fileURLToPath(import.meta.url);
const USAGE = `
npm run bench:worker-transport [-- --rounds N]: a Float32Array (0.0625 to 50 MiB) to a forked child and back, through
the IPC channel and through files in /dev/shm, alternately; median of N rounds (default 7) after one warm-up round.
Prints a Markdown table and writes bench/results/worker-transport.json.
`;

interface Echo {
  n: number;
  data: Float32Array;
  /** Where the child writes what it sends back (undefined: the channel). */
  folder?: string;
}

if (process.argv[2] === '--child') {
  // The child: reads what came (files or the channel) and sends the same array back the same way.
  const reader = new ArrayStow(undefined, 'w');
  process.on('message', (m: Echo) => {
    const msg = reader.unstow(m);
    process.send!(new ArrayStow(msg.folder, 'w').stow(msg));
  });
  process.on('disconnect', () => process.exit(0));
} else {
  const rounds = benchCli(USAGE, { options: { rounds: { type: 'string' } } }, ({ values }) => (values.rounds === undefined ? 7 : intArg('--rounds', values.rounds, 1)));
  await main(rounds);
}

async function main(rounds: number): Promise<void> {
  const folder = makeStowFolder();
  if (!folder) throw new Error('bench: no /dev/shm here (Linux only)');
  const child = fork(SELF, ['--child'], { execArgv: process.execArgv, serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const back = new ArrayStow(undefined, 'c');
  const ask = (m: Echo): Promise<Echo> => new Promise((resolve) => {
    child.once('message', (r: Echo) => resolve(back.unstow(r)));
    child.send(m.folder ? new ArrayStow(m.folder, 'c').stow(m) : m);
  });
  const sizes = [0.0625, 0.25, 1, 4, 16, 50];
  const rows: { mib: number; channelMs: number; filesMs: number; ratio: number }[] = [];
  try {
    let n = 0;
    for (const mib of sizes) {
      const data = new Float32Array((mib * 1024 * 1024) / 4).map((_, i) => i % 1000);
      const times: Record<'channel' | 'files', number[]> = { channel: [], files: [] };
      for (let r = 0; r < rounds + 1; r++) {
        for (const way of r % 2 === 0 ? (['channel', 'files'] as const) : (['files', 'channel'] as const)) {
          const t0 = performance.now();
          const got = await ask({ n: n++, data, ...(way === 'files' ? { folder } : {}) });
          const ms = performance.now() - t0;
          if (got.data.length !== data.length || got.data[data.length - 1] !== data[data.length - 1]) throw new Error('bench: wrong echo');
          if (r > 0) times[way].push(ms); // round 0 warms up
        }
      }
      const median = (v: number[]) => [...v].sort((a, b) => a - b)[v.length >> 1]!;
      const row = { mib, channelMs: median(times.channel), filesMs: median(times.files), ratio: 0 };
      row.ratio = row.channelMs / row.filesMs;
      rows.push(row);
    }
  } finally {
    child.disconnect();
    fs.rmSync(folder, { recursive: true, force: true });
  }
  console.log(`| array | channel (ms) | files in /dev/shm (ms) | channel / files |\n| --- | --- | --- | --- |`);
  for (const r of rows) console.log(`| ${r.mib} MiB | ${r.channelMs.toFixed(1)} | ${r.filesMs.toFixed(1)} | ${r.ratio.toFixed(2)} |`);
  const out = path.join(ROOT, 'bench', 'results', 'worker-transport.json');
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, JSON.stringify({
    command: `npm run bench:worker-transport -- --rounds ${rounds}`, date: new Date().toISOString(), cpus: os.cpus().length,
    load: os.loadavg(), node: process.version, rounds, what: 'round trip of one Float32Array to a forked child and back, median', rows,
  }, null, 2) + '\n');
  console.log(`wrote ${path.relative(ROOT, out)}`);
}
