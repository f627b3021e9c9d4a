/**
 * What `asgd serve --queue ADDRESS` runs instead of the local queue and engine: the BullMQ queue, the fleet's view
 * of models and devices, previews read from the shared outputs folder, and the status view.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import { BullJobQueue } from './bullmq-queue.ts';
import { redisOptions } from './connection.ts';
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
  close(): Promise<void>;
}

export async function fleetServerParts(address: string, outputsDir: string, prefix = DEFAULT_PREFIX): Promise<FleetServerParts> {
  const connection = redisOptions(address);
  const redis = new Redis({ ...connection, maxRetriesPerRequest: null });
  redis.on('error', () => undefined);
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
    close: async () => {
      await queue.close();
      await engine.close();
      redis.disconnect();
    },
  };
}
