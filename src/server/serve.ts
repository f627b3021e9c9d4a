/**
 * `asgd serve`: the queue (state in <outputs>/.queue), the engine, the HTTP server and the page, started
 * together and stopped together. Stopping interrupts a running job, which is queued again for the next start;
 * outputs are written atomically, so no partial file is left.
 */
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { PipelineOptions } from '../node/pipeline.ts';
import { createServer } from './app.ts';
import type { Engine } from './engine.ts';
import { LocalJobQueue } from './local-queue.ts';

export interface ServeOptions {
  port: number;
  host: string;
  outputsDir: string;
  modelDirs: string[];
  pipeline: PipelineOptions;
  /** Required for a host other than loopback; generated when absent there. */
  token?: string;
  webDir?: string;
  /** An engine instead of the library's (tests). */
  engine?: Engine;
  /** A Redis address: jobs go to the fleet's BullMQ queue and run on `asgd worker`s; no engine runs here. */
  queue?: string;
  /** Key prefix in Redis (default 'asgd'): several fleets can share one Redis. */
  prefix?: string;
}

export interface RunningServer {
  url: string;
  /** The token the API requires, when one is. */
  token?: string;
  close(): Promise<void>;
}

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1', '[::1]']);

export async function serve(o: ServeOptions): Promise<RunningServer> {
  const loopback = LOOPBACK.has(o.host);
  const token = o.token ?? (loopback ? undefined : randomBytes(16).toString('hex'));
  const anyHost = o.host === '0.0.0.0' || o.host === '::';
  const outputsDir = path.resolve(o.outputsDir);
  const fleet = o.queue ? await (await import('./fleet/server-parts.ts')).fleetServerParts(o.queue, outputsDir, o.prefix, (line) => process.stderr.write(`asgd serve: ${line}\n`)) : undefined;
  // The engine first: it refuses a folder it cannot load before the queue takes its state folder.
  const engine = fleet?.engine ?? o.engine ?? new (await import('./library-engine.ts')).LibraryEngine(o.modelDirs, o.pipeline);
  const queue = fleet?.queue ?? new LocalJobQueue({ dir: path.join(outputsDir, '.queue') });
  const closeQueue = () => (fleet ? fleet.close() : queue.close());
  const app = await createServer({
    queue, engine, outputsDir, webDir: o.webDir, token,
    allowedHosts: anyHost ? ['*'] : loopback ? [] : [o.host.toLowerCase()],
    ...(fleet ? { preview: fleet.preview, fleetStatus: fleet.status, unavailable: fleet.unavailable } : {}),
  });
  try {
    await app.listen({ port: o.port, host: o.host });
  } catch (err) {
    await closeQueue();
    await engine.close();
    throw err;
  }
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : o.port;
  const shownHost = anyHost ? '127.0.0.1' : o.host.includes(':') && !o.host.startsWith('[') ? `[${o.host}]` : o.host;
  let closing: Promise<void> | undefined;
  return {
    url: `http://${shownHost}:${port}/${token ? `?token=${token}` : ''}`,
    token,
    close: () =>
      (closing ??= (async () => {
        // Stop the queue first (the running job is interrupted and re-queued), then the sockets, then the models.
        // A fleet's jobs keep running on the workers.
        await closeQueue();
        await app.close();
        await engine.close();
      })()),
  };
}
