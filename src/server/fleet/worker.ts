/**
 * `asgd worker`: takes jobs from the fleet's BullMQ queues (one per model it serves) and runs them in its engine
 * process, one at a time. It advertises what it can run in a heartbeat, relays throttled progress through BullMQ,
 * writes previews and outputs to the shared outputs folder (never into Redis), and publishes an output exactly
 * once: the engine writes a temporary file, and only a worker that still holds the job's lock links it to the
 * output's name, create-only (link(2) fails when the name exists), so a late worker can neither overwrite nor
 * duplicate. Cancellation arrives by pub/sub (and a key checked at each progress update) and is never retried.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UnrecoverableError, WaitingError, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import type { PipelineOptions } from '../../node/pipeline.ts';
import { outputNameFor, toGenerateParams, upscaleParams } from '../output-names.ts';
import type { EngineProgress } from '../engine.ts';
import { apiWording, jobErrorOf } from '../errors.ts';
import { checkModelFolders, readModelFolderFacts } from '../model-facts.ts';
import { bullConnection, checkReachable, redisOptions } from './connection.ts';
import { checkSameNames, liveWorkers, shareTokenizer, overLimit, removeBeat, writeBeat, type FleetModel, type WorkerBeat } from './directory.ts';
import { EngineProcess, type EngineRunError } from './engine-process.ts';
import { failureReason, type FleetJobData, type FleetJobResult } from './job-data.ts';
import { progressRelay } from './progress-relay.ts';
import { modelHash } from './model-hash.ts';
import { CANCELLED_REASON, DEFAULT_PREFIX, DEFAULT_TIMINGS, MAX_STALLED_COUNT, fleetKeys, queueNameFor, type WorkerTimings } from './settings.ts';

type BullJob = Job<FleetJobData, FleetJobResult>;

export interface FleetWorkerOptions {
  /** The Redis address (redis://HOST:PORT, rediss://, unix:///PATH). */
  queue: string;
  prefix?: string;
  /** The outputs folder the server reads (shared: NFS, SMB or a local folder on one machine). */
  outputsDir: string;
  modelDirs: string[];
  pipeline?: PipelineOptions;
  /** The largest width x height per method this worker takes (a method not listed: no limit). */
  maxPixels?: Record<string, number>;
  timings?: Partial<WorkerTimings>;
  /** An engine module instead of the library's (tests' fake engine). */
  engine?: { module: string; exportName: string; options?: unknown };
  id?: string;
  log?: (line: string) => void;
  /** Tests: called in the worker's event loop at each progress report of the engine. */
  onProgress?: (jobId: string, p: EngineProgress) => void;
}

export interface RunningFleetWorker {
  id: string;
  models: FleetModel[];
  /** Stops taking jobs; a running job is interrupted and put back in its queue for another worker. */
  close(): Promise<void>;
}


/** Removes files older than `ageMs` from `dir` (previews of finished jobs, temporary files of killed workers). */
function prune(dir: string, ageMs: number): void {
  const now = Date.now();
  try {
    for (const name of fs.readdirSync(dir)) {
      const file = path.join(dir, name);
      try {
        if (now - fs.statSync(file).mtimeMs > ageMs) fs.rmSync(file, { force: true });
      } catch {
        // Another worker removed it.
      }
    }
  } catch {
    // The folder is gone or unreadable: nothing to prune.
  }
}

function sha256File(file: string): { sha256: string; bytes: number } {
  const bytes = fs.readFileSync(file);
  return { sha256: createHash('sha256').update(bytes).digest('hex'), bytes: bytes.length };
}

export async function startWorker(o: FleetWorkerOptions): Promise<RunningFleetWorker> {
  const timings = { ...DEFAULT_TIMINGS, ...o.timings };
  const prefix = o.prefix ?? DEFAULT_PREFIX;
  const keys = fleetKeys(prefix);
  const log = o.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const id = o.id ?? `${os.hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
  const outputsDir = path.resolve(o.outputsDir);
  const tmpDir = path.join(outputsDir, '.fleet-tmp');
  const previewDir = path.join(outputsDir, '.previews');
  if (o.modelDirs.length === 0) throw new Error('asgd worker: no model folder (pass --model DIR)');
  // What would fail every job is refused here, before this worker advertises anything.
  const entries = checkModelFolders(o.modelDirs, !o.engine);
  const connection = redisOptions(o.queue);
  await checkReachable(o.queue);
  fs.mkdirSync(tmpDir, { recursive: true });
  fs.mkdirSync(previewDir, { recursive: true });

  const models: FleetModel[] = [];
  for (const { name, dir } of entries) models.push({ name, hash: await modelHash(dir), ...readModelFolderFacts(dir) });
  let lastError = '';
  const onError = (err: Error) => {
    if (err.message !== lastError) log(`asgd worker ${id}: ${err.message}`);
    lastError = err.message;
  };
  const redis = new Redis({ ...connection, maxRetriesPerRequest: null });
  redis.on('error', onError);
  let engine: EngineProcess;
  try {
    checkSameNames(models, await liveWorkers(redis, prefix));
    for (const [i, m] of models.entries()) await shareTokenizer(redis, prefix, m, entries[i]!.dir);
    engine = await EngineProcess.start({
      modelDirs: entries.map((e) => e.dir), pipeline: (o.pipeline ?? {}) as Record<string, unknown>,
      ...(o.engine ? { module: o.engine.module, exportName: o.engine.exportName, options: o.engine.options } : {}),
    });
  } catch (err) {
    redis.disconnect();
    throw err;
  }
  const sub = new Redis({ ...connection, maxRetriesPerRequest: null });
  sub.on('error', onError);

  /** Jobs being run here: their own abort controllers (cancel, lock lost, shutdown). */
  const running = new Map<string, { controller: AbortController; queue: string; since: string }>();
  let completed = 0;
  const startedAt = new Date().toISOString();
  const beat = async () => {
    const b: WorkerBeat = {
      id, host: os.hostname(), pid: process.pid, startedAt, beatAt: new Date().toISOString(),
      deviceSet: engine.deviceSet, devices: engine.devices, models, maxPixels: o.maxPixels ?? {},
      running: [...running.entries()].map(([jobId, r]) => ({ jobId, queue: r.queue, since: r.since })), completed,
    };
    await writeBeat(redis, prefix, b, timings.heartbeatMs * 3);
  };
  await beat();
  const beating = setInterval(() => void beat().catch(() => undefined), timings.heartbeatMs);

  await sub.subscribe(keys.cancelChannel);
  sub.on('message', (_channel: string, jobId: string) => running.get(jobId)?.controller.abort('cancel'));

  // One job at a time over all models: the engine process runs one.
  let gate: Promise<void> = Promise.resolve();
  const acquire = async (): Promise<() => void> => {
    let release!: () => void;
    const prev = gate;
    gate = new Promise<void>((r) => (release = r));
    await prev;
    return release;
  };

  const processor = (model: FleetModel) => async (job: BullJob, token?: string, signal?: AbortSignal): Promise<FleetJobResult> => {
    const jobId = job.id!;
    const cancelKey = `${keys.cancelChannel}:${jobId}`;
    if (await redis.exists(cancelKey)) throw new UnrecoverableError(CANCELLED_REASON);
    // Routing checked the size against the workers live at submission; this worker's own limit is checked here
    // (a larger worker may have left since). Too large here is too large on every retry here: not retried.
    const { spec } = job.data;
    const tooLarge = overLimit(spec.kind === 'generate' ? spec.settings : { ...spec.settings, ...spec.size }, model, o.maxPixels ?? {}, id);
    if (tooLarge) {
      log(`asgd worker ${id}: job ${jobId}: refused: ${tooLarge}`);
      throw new UnrecoverableError(failureReason({ message: tooLarge, kind: 'too-large', parameter: 'width' }));
    }
    const release = await acquire();
    const controller = new AbortController();
    // BullMQ's own signal (Worker.cancelJob) means a cancel too.
    const onSignal = () => controller.abort('cancel');
    signal?.addEventListener('abort', onSignal, { once: true });
    running.set(jobId, { controller, queue: job.queueName, since: new Date().toISOString() });
    void beat().catch(() => undefined);
    const t0 = performance.now();
    // A preview matters while its job runs; a temporary file is linked the moment it is written, so an old one
    // belongs to a worker that was killed.
    prune(previewDir, 10 * 60_000);
    prune(tmpDir, 60 * 60_000);
    try {
      // Cancelled while it waited for the engine (a worker serving several models)?
      if (await redis.exists(cancelKey)) throw new UnrecoverableError(CANCELLED_REASON);
      const name = outputNameFor({ id: jobId, createdAt: job.data.createdAt });
      const final = path.join(outputsDir, name);
      if (fs.existsSync(final)) return { output: name, ...sha256File(final), worker: id, runMs: 0, reused: true };
      const tmp = path.join(tmpDir, `${jobId}.${randomBytes(6).toString('hex')}.png`);
      const progress = progressRelay(job, timings.progressIntervalMs, async () => {
        if (await redis.exists(cancelKey)) controller.abort('cancel');
      });
      const { source, model: _m, ...settings } = spec.settings;
      let warnings: string[];
      try {
        ({ warnings } = await engine.run({
          kind: spec.kind,
          params: spec.kind === 'upscale' ? upscaleParams(settings) : toGenerateParams(settings),
          model: model.name,
          ...(spec.kind === 'upscale' ? { source: path.join(outputsDir, path.basename(String(source))) } : {}),
          file: tmp,
          previewFile: path.join(previewDir, `${jobId}.png`),
        }, {
          signal: controller.signal,
          onProgress: (p) => {
            o.onProgress?.(jobId, p);
            progress.report(p);
          },
          onPreview: () => progress.preview(),
        }));
      } catch (err) {
        fs.rmSync(tmp, { force: true });
        await progress.flush();
        const reason: unknown = controller.signal.aborted ? controller.signal.reason : undefined;
        if (reason === 'shutdown') {
          // Back to its queue for another worker (or this one when it starts again); not counted as a failure.
          await job.moveToWait(token);
          throw new WaitingError();
        }
        if (reason === 'lock-lost') {
          log(`asgd worker ${id}: job ${jobId}: lock lost, run stopped (the job runs elsewhere)`);
          throw new Error('The worker lost the job\'s lock; it runs elsewhere');
        }
        if (reason !== undefined) throw new UnrecoverableError(CANCELLED_REASON);
        // Reported as the API names things: the source output by its name, not by this worker's path to it.
        const e = jobErrorOf(err as EngineRunError, outputsDir, spec.kind === 'upscale' ? 'upscale' : 'generate');
        // Invalid settings fail the same way on every worker: no retry. A device failure is retried.
        if (e.kind === 'invalid-argument' || e.kind === 'cancelled') throw new UnrecoverableError(failureReason(e));
        throw new Error(failureReason(e));
      }
      await progress.flush();
      // Publish only while holding the lock: a worker that lost it (the job was given to another) discards its file.
      let held = 0;
      try {
        held = await job.extendLock(token!, timings.lockDurationMs);
      } catch {
        held = 0;
      }
      if (!held) {
        fs.rmSync(tmp, { force: true });
        log(`asgd worker ${id}: job ${jobId}: lock lost, late completion rejected (the job runs elsewhere)`);
        throw new Error('The worker lost the job\'s lock; its result was discarded');
      }
      let reused = false;
      try {
        fs.linkSync(tmp, final);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        reused = true;
      } finally {
        fs.rmSync(tmp, { force: true });
      }
      completed += 1;
      return { output: name, ...sha256File(final), worker: id, runMs: Math.round(performance.now() - t0), reused, ...(warnings.length ? { warnings: warnings.map(apiWording) } : {}) };
    } finally {
      signal?.removeEventListener('abort', onSignal);
      running.delete(jobId);
      release();
      // Tell the fleet at once that this worker is free (the next interval's beat may be seconds away).
      void beat().catch(() => undefined);
    }
  };

  const workers = models.map((m) => {
    const w = new Worker<FleetJobData, FleetJobResult>(queueNameFor(m.hash), processor(m), {
      connection: bullConnection(connection), prefix, name: id, concurrency: 1,
      lockDuration: timings.lockDurationMs, stalledInterval: timings.stalledIntervalMs, maxStalledCount: MAX_STALLED_COUNT,
    });
    w.on('error', onError);
    w.on('lockRenewalFailed', (ids: string[]) => {
      for (const jobId of ids) running.get(jobId)?.controller.abort('lock-lost');
    });
    return w;
  });
  await Promise.all(workers.map((w) => w.waitUntilReady()));
  log(`asgd worker ${id}: serving ${models.map((m) => `${m.name} (${m.hash.slice(0, 12)})`).join(', ')} on ${engine.deviceSet}`);

  let closing: Promise<void> | undefined;
  return {
    id,
    models,
    close: () => (closing ??= (async () => {
      clearInterval(beating);
      const closed = Promise.all(workers.map((w) => w.close()));
      for (const r of running.values()) r.controller.abort('shutdown');
      await closed;
      await engine.close();
      await removeBeat(redis, prefix, id).catch(() => undefined);
      sub.disconnect();
      redis.disconnect();
    })()),
  };
}
