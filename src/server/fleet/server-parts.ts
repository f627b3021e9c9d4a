/**
 * What `asgd serve --queue ADDRESS` runs instead of the local queue and engine: the BullMQ queue, the fleet's view
 * of models and devices, previews read from the shared outputs folder, and the status view.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import { BullJobQueue } from './bullmq-queue.ts';
import { checkReachable, redisOptions, shownAddress } from './connection.ts';
import { FleetEngine } from './fleet-engine.ts';
import { DEFAULT_PREFIX } from './settings.ts';
import type { WorkerBeat } from './directory.ts';

export interface FleetStatus {
  workers: (WorkerBeat & { alive: true })[];
  queues: { queue: string; model?: string; counts: Record<string, number> }[];
}

export interface FleetServerParts {
  queue: BullJobQueue;
  engine: FleetEngine;
  preview(jobId: string): Promise<Uint8Array | undefined>;
  status(): Promise<FleetStatus>;
  /** The message for an error that says Redis cannot be reached (the API answers 503 with it); else undefined. */
  unavailable(err: unknown): string | undefined;
  close(): Promise<void>;
}

/** Errors ioredis gives while the server is not connected. */
const CONNECTION_ERROR = /max retries per request|Connection is closed|ECONNREFUSED|ENOENT|ETIMEDOUT|ECONNRESET|EPIPE|EHOSTUNREACH|ENOTFOUND/i;

/**
 * `log`: a line when Redis becomes unreachable and when it is back. The server's requests fail within a second or
 * two while Redis is down (one retry per command), so the API answers 503 instead of waiting; a worker's connection
 * waits instead (BullMQ's workers need that), so its job runs on.
 */
export async function fleetServerParts(address: string, outputsDir: string, prefix = DEFAULT_PREFIX, log: (line: string) => void = () => undefined): Promise<FleetServerParts> {
  const connection = { ...redisOptions(address), maxRetriesPerRequest: 1 };
  const shown = shownAddress(address);
  await checkReachable(address);
  const redis = new Redis(connection);
  let lastError: Error | undefined;
  let down = false;
  redis.on('error', (err: Error) => {
    lastError = err;
    if (!down) log(`the queue's Redis at ${shown} is unreachable (${err.message}); the API answers 503 until it is back`);
    down = true;
  });
  redis.on('ready', () => {
    if (down) log(`the queue's Redis at ${shown} is back`);
    down = false;
  });
  const engine = new FleetEngine(redis, prefix);
  const queue = new BullJobQueue({ connection, redis, prefix, engine });
  try {
    await engine.start();
    await queue.start();
  } catch (err) {
    await queue.close().catch(() => undefined);
    await engine.close();
    redis.disconnect();
    throw err;
  }
  const previews = path.join(path.resolve(outputsDir), '.previews');
  return {
    queue,
    engine,
    preview: async (jobId) => {
      if (!/^[A-Za-z0-9_-]+$/.test(jobId)) return undefined;
      try {
        return new Uint8Array(await fs.promises.readFile(path.join(previews, `${jobId}.png`)));
      } catch {
        return undefined;
      }
    },
    status: async () => {
      const workers = await engine.refresh();
      const byQueue = new Map(workers.flatMap((w) => w.models.map((m) => [m.hash.slice(0, 16), m.name] as const)));
      const depths = await queue.depths();
      return {
        workers: workers.map((w) => ({ ...w, alive: true as const })),
        queues: depths.map((d) => ({ ...d, ...(byQueue.get(d.queue.replace(/^model-/, '')) ? { model: byQueue.get(d.queue.replace(/^model-/, '')) } : {}) })),
      };
    },
    unavailable: (err) => {
      const message = err instanceof Error ? err.message : String(err);
      if (!CONNECTION_ERROR.test(message)) return undefined;
      return `The queue's Redis at ${shown} does not answer (${lastError?.message ?? message}); queued jobs are kept there: try again once it is back`;
    },
    close: async () => {
      await queue.close();
      await engine.close();
      redis.disconnect();
    },
  };
}
