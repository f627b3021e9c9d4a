/**
 * The fleet's BullMQ settings, each with the reason for its value (docs/fleet.md restates them), and the names
 * it uses in Redis. Tests shorten the timings through WorkerTimings; everything else is fixed here.
 */
import type { JobsOptions } from 'bullmq';

/** Key prefix of every BullMQ key (`asgd:<queue>:...`) and of the fleet's own keys (`asgd:fleet:...`). */
export const DEFAULT_PREFIX = 'asgd';

export interface WorkerTimings {
  /**
   * How long a worker's lock on its job lasts without renewal (ms). BullMQ renews it every half of this from the
   * worker's event loop, which never runs the engine (that runs in a child process), so renewal does not starve.
   * 30 s: a worker that dies (SIGKILL, power, network) gives its job back to another worker within about
   * lockDuration + stalledInterval, and a stop-the-world pause (a swapping machine, a big GC) of up to ~15 s
   * does not lose the lock.
   */
  lockDurationMs: number;
  /** How often each worker looks for jobs whose lock expired (ms). 15 s: half the lock, so a dead worker's job waits at most ~45 s. */
  stalledIntervalMs: number;
  /** How often a worker writes its heartbeat (ms); it expires after three missed beats. */
  heartbeatMs: number;
  /** Least time between two progress updates of one job (ms); phase changes and previews are sent at once. */
  progressIntervalMs: number;
}

export const DEFAULT_TIMINGS: WorkerTimings = {
  lockDurationMs: 30_000,
  stalledIntervalMs: 15_000,
  heartbeatMs: 2_000,
  progressIntervalMs: 250,
};

/**
 * How many times a job whose worker vanished (lock expired) is put back before it fails. 2: one lost worker is
 * normal in a fleet; a job that kills two workers in a row is probably what kills them (out of memory), and
 * should fail rather than take down the fleet one worker at a time.
 */
export const MAX_STALLED_COUNT = 2;

/** Options of every job the server adds. */
export const JOB_OPTIONS = {
  /**
   * 2 attempts: a device failure (driver reset, out of memory on a shared GPU) is worth one retry, possibly on
   * another worker; invalid settings and cancellation are never retried (the worker marks them unrecoverable).
   */
  attempts: 2,
  /** 5 s, then doubled: long enough for a transient device failure to clear, short next to a generation. */
  backoff: { type: 'exponential', delay: 5_000 },
  /**
   * Finished jobs are the job history (GET /api/v1/jobs) and what makes a repeated submission return the
   * existing output; each is a few hundred bytes. Kept 30 days, at most 10000: Redis memory stays bounded.
   */
  removeOnComplete: { age: 30 * 24 * 3600, count: 10_000 },
  removeOnFail: { age: 30 * 24 * 3600, count: 10_000 },
} satisfies JobsOptions;

/**
 * Priorities: every job has one, so reordering works (BullMQ runs jobs without a priority before all prioritized
 * ones). New jobs get NEW_JOB_PRIORITY, after every job that was reordered (those get REORDERED_BASE + position).
 * BullMQ's largest priority is 2^21.
 */
export const NEW_JOB_PRIORITY = 1_000_000;
export const REORDERED_BASE = 1_000;

/** The BullMQ queue of one model (by content hash): every worker serving the model takes jobs from it. */
export function queueNameFor(modelHash: string): string {
  return `model-${modelHash.slice(0, 16)}`;
}

/** The fleet's own keys, beside BullMQ's. */
export function fleetKeys(prefix: string) {
  return {
    /** Set of worker ids that ever beat; dead ones are removed by whoever notices. */
    workers: `${prefix}:fleet:workers`,
    /** One worker's heartbeat (JSON, expires after three missed beats). */
    worker: (id: string) => `${prefix}:fleet:worker:${id}`,
    /** Hash: model name -> JSON of the model (hash, native size) as workers last advertised it. */
    models: `${prefix}:fleet:models`,
    /** Set of BullMQ queue names that hold jobs. */
    queues: `${prefix}:fleet:queues`,
    /** Hash: job id -> JSON record of jobs cancelled while queued (BullMQ forgets removed jobs). */
    cancelled: `${prefix}:fleet:cancelled`,
    /**
     * A model's CLIP tokenizer files (JSON of TokenizerFiles), by content hash, written once by the first worker
     * serving it: the server checks mask words before queueing with them. Never expires (a few MB per model).
     */
    tokenizer: (hash: string) => `${prefix}:fleet:tokenizer:${hash}`,
    /** Pub/sub channel: ids of running jobs to cancel. */
    cancelChannel: `${prefix}:fleet:cancel`,
  };
}

/** The reason a cancelled job's failure carries (a cancelled job is failed in BullMQ, cancelled in the API). */
export const CANCELLED_REASON = 'cancelled';
