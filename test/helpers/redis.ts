/**
 * A redis-server of a test's own, on a unix socket in a temporary folder (never a system service): started, and
 * stopped or restarted by the test. With `appendonly`, it keeps its data across a restart (fsync on every write).
 * ASGD_TEST_REDIS_SERVER / ASGD_TEST_REDIS_CLI run another server binary (e.g. valkey-server / valkey-cli).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const SERVER = process.env['ASGD_TEST_REDIS_SERVER'] || 'redis-server';
const CLI = process.env['ASGD_TEST_REDIS_CLI'] || 'redis-cli';

export interface TestRedis {
  /** unix:///.../redis.sock */
  url: string;
  socket: string;
  /** Bytes of memory Redis uses (INFO memory used_memory). */
  usedMemory(): number;
  stop(): Promise<void>;
  /** Stops it (SIGTERM: the append-only file is flushed) and starts it again on the same socket. */
  restart(downMs?: number): Promise<void>;
}

export async function startRedis(o: { appendonly?: boolean } = {}): Promise<TestRedis> {
  // Unix socket paths are limited to ~100 bytes: a short folder under the system's temp dir.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'asgd-redis-'));
  const socket = path.join(dir, 'redis.sock');
  const args = [
    '--port', '0', '--unixsocket', socket, '--unixsocketperm', '700', '--dir', dir, '--save', '',
    '--appendonly', o.appendonly ? 'yes' : 'no', '--appendfsync', 'always', '--maxmemory-policy', 'noeviction',
  ];
  let child: ChildProcess | undefined;
  const launch = async () => {
    child = spawn(SERVER, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    await new Promise<void>((resolve, reject) => {
      child!.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        if (/ready to accept connections/i.test(out)) resolve();
      });
      child!.on('error', (err) => reject(new Error(`${SERVER} could not start (run: npm run setup:system): ${err.message}`)));
      child!.on('exit', (code) => reject(new Error(`${SERVER} exited with ${code}: ${out}`)));
    });
  };
  const stop = async () => {
    const c = child;
    child = undefined;
    if (!c || c.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      c.once('exit', () => resolve());
      c.kill('SIGTERM');
    });
  };
  await launch();
  return {
    url: `unix://${socket}`,
    socket,
    usedMemory() {
      const r = spawnSync(CLI, ['-s', socket, 'info', 'memory'], { encoding: 'utf8' });
      return Number(/used_memory:(\d+)/.exec(r.stdout)?.[1] ?? NaN);
    },
    stop: async () => {
      await stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
    restart: async (downMs = 0) => {
      await stop();
      if (downMs) await new Promise((r) => setTimeout(r, downMs));
      await launch();
    },
  };
}
