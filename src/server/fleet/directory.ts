/**
 * Who is in the fleet: each worker's heartbeat (what it can run, what it runs now) in a key that expires after
 * three missed beats, and the models workers have advertised. The server routes jobs and answers the status view
 * from here.
 */
import path from 'node:path';
import type { Redis } from 'ioredis';
import { AsgdError } from '../../core/errors.ts';
import { DEFAULT_METHOD } from '../../core/options/registry.ts';
import type { TokenizerFiles } from '../../core/text/clip-tokenizer.ts';
import { readTokenizerFiles } from '../../node/model/folder.ts';
import type { SchedulerConfig } from '../../core/schedulers/types.ts';
import type { DeviceEntry } from '../engine.ts';
import type { ModelFolderFacts } from '../model-facts.ts';
import { fleetKeys } from './settings.ts';

/** A model a worker serves: its name, content hash, and what its folder says (model-facts.ts). */
export interface FleetModel extends ModelFolderFacts {
  name: string;
  /** Content hash of the model folder (model-hash.ts). */
  hash: string;
  /** The folder's scheduler config (server estimates count the scheduler's steps). */
  schedulerConfig?: SchedulerConfig;
}

export interface WorkerBeat {
  id: string;
  host: string;
  pid: number;
  startedAt: string;
  beatAt: string;
  deviceSet: string;
  devices: DeviceEntry[];
  models: FleetModel[];
  /** The largest width x height per method this worker takes; a method not listed has no limit. */
  maxPixels: Record<string, number>;
  running: { jobId: string; queue: string; since: string }[];
  /** Jobs this worker finished since it started. */
  completed: number;
}

export async function writeBeat(redis: Redis, prefix: string, beat: WorkerBeat, ttlMs: number): Promise<void> {
  const k = fleetKeys(prefix);
  const models = Object.fromEntries(beat.models.map((m) => [m.name, JSON.stringify(m)]));
  const tx = redis.multi().set(k.worker(beat.id), JSON.stringify(beat), 'PX', ttlMs).sadd(k.workers, beat.id);
  if (beat.models.length) tx.hset(k.models, models);
  await tx.exec();
}

export async function removeBeat(redis: Redis, prefix: string, id: string): Promise<void> {
  const k = fleetKeys(prefix);
  await redis.multi().del(k.worker(id)).srem(k.workers, id).exec();
}

/** The live workers (a worker whose heartbeat expired is dropped from the set). */
export async function liveWorkers(redis: Redis, prefix: string): Promise<WorkerBeat[]> {
  const k = fleetKeys(prefix);
  const ids = (await redis.smembers(k.workers)).sort();
  if (ids.length === 0) return [];
  const values = await redis.mget(ids.map(k.worker));
  const dead = ids.filter((_, i) => values[i] === null);
  if (dead.length) await redis.srem(k.workers, ...dead);
  return values.filter((v): v is string => v !== null).map((v) => JSON.parse(v) as WorkerBeat);
}

/** Every model a worker has advertised (live or not), by name. */
export async function knownModels(redis: Redis, prefix: string): Promise<FleetModel[]> {
  const all = await redis.hgetall(fleetKeys(prefix).models);
  return Object.values(all).map((v) => JSON.parse(v) as FleetModel).sort((a, b) => a.name.localeCompare(b.name));
}

/**
 * The method and size a generate job asks for, its defaults filled in (the registry's method, the model's native
 * size): what the server's routing and a worker's own check compare with the workers' limits.
 */
export function jobDemand(settings: Record<string, unknown>, model: Pick<FleetModel, 'nativeWidth' | 'nativeHeight'>): { method: string; width: number; height: number } {
  return {
    method: typeof settings['method'] === 'string' ? settings['method'] : DEFAULT_METHOD,
    width: typeof settings['width'] === 'number' ? settings['width'] : model.nativeWidth ?? 512,
    height: typeof settings['height'] === 'number' ? settings['height'] : model.nativeHeight ?? 512,
  };
}

/**
 * Why this worker may not run a generate job of this size, or undefined when it may: the size, the limit and
 * the fix, for a job that reached a worker whose `--max-pixels` is below it (routing let it in while a larger
 * worker was alive).
 */
export function overLimit(settings: Record<string, unknown>, model: FleetModel, maxPixels: Record<string, number>, workerId: string): string | undefined {
  const d = jobDemand(settings, model);
  const max = maxPixels[d.method];
  if (max === undefined || d.width * d.height <= max) return undefined;
  return `Worker ${workerId} takes ${d.method} on ${model.name} up to ${max} pixels (--max-pixels), and this job asks for ${d.width}x${d.height} `
    + `(${d.width * d.height} pixels): queue it at most ${max} pixels, or start a worker with --max-pixels ${d.method}=${d.width * d.height} or more `
    + '(it reached this worker because a worker with a larger limit was live when it was queued)';
}

/** Can this worker run a job of `method` at `pixels` on the model `hash`? */
export function canRun(w: WorkerBeat, hash: string, method: string, pixels: number): boolean {
  if (!w.models.some((m) => m.hash === hash)) return false;
  const max = w.maxPixels[method];
  return max === undefined || pixels <= max;
}

/**
 * Refuses a model whose name a live worker serves with other content: jobs name a model by its folder's name, so
 * the fleet could not tell the two apart (the server would send every job to one of them).
 */
export function checkSameNames(models: FleetModel[], live: WorkerBeat[]): void {
  for (const m of models) {
    const other = live.find((w) => w.models.some((x) => x.name === m.name && x.hash !== m.hash));
    if (!other) continue;
    const theirs = other.models.find((x) => x.name === m.name)!.hash;
    throw new AsgdError(`Worker ${other.id} (${other.host}) serves another model named ${m.name}: content hash ${theirs.slice(0, 12)}, this folder's ${m.hash.slice(0, 12)}`, {
      kind: 'invalid-argument', parameter: '--model',
      hint: 'Jobs name a model by its folder\'s name: give this folder another name (e.g. a new version\'s), or stop the workers serving the other one first',
    });
  }
}

/**
 * Shares the model's tokenizer (its `tokenizer/` folder, as the model loader reads it) for the server's mask-word
 * check, once per content hash; a folder without one (a test's fake model) shares nothing.
 */
export async function shareTokenizer(redis: Redis, prefix: string, model: FleetModel, dir: string): Promise<void> {
  // Content-addressed: another worker with this model shared the same files already.
  if (await redis.exists(fleetKeys(prefix).tokenizer(model.hash))) return;
  let files: TokenizerFiles;
  try {
    files = readTokenizerFiles(path.join(dir, 'tokenizer'), 'tokenizer');
  } catch {
    return;
  }
  await redis.set(fleetKeys(prefix).tokenizer(model.hash), JSON.stringify(files), 'NX');
}

/** The tokenizer files a worker shared for the model `hash`, or undefined. */
export async function sharedTokenizer(redis: Redis, prefix: string, hash: string): Promise<TokenizerFiles | undefined> {
  const v = await redis.get(fleetKeys(prefix).tokenizer(hash));
  return v === null ? undefined : (JSON.parse(v) as TokenizerFiles);
}
