/**
 * The job queue as the server sees it: add, list, reorder, cancel, remove, and a stream of events per job. The
 * in-process implementation is local-queue.ts; a distributed one can sit behind the same interface, so nothing
 * here names files, timers or threads.
 */

import type { EngineProgress } from './engine.ts';

export type JobState = 'queued' | 'running' | 'completed' | 'failed' | 'cancelled';

export type JobKind = 'generate' | 'upscale';

/** What to run: the kind and its settings (for 'generate': the library's GenerateParams with a string seed). */
export interface JobSpec {
  kind: JobKind;
  /** Model name (one of GET /api/v1/models); undefined: the server's first model. */
  model?: string;
  /** 'generate': GenerateParams. 'upscale': UpscaleParams without the image, and `source`, an output's name. */
  settings: Record<string, unknown>;
  /**
   * The size the job denoises where its settings do not say it: an upscale's, from its source's size (the server
   * computes it when the job is added). Routing and a worker's `--max-pixels` check read it; not part of the job id.
   */
  size?: { width: number; height: number };
}

/** Where a running job is: what the engine reports, and what the queue adds. */
export interface JobProgress extends EngineProgress {
  /** Seconds left, estimated from the model calls so far; undefined before the first one. */
  etaSeconds?: number;
  /** Increases each time a new preview image is ready. */
  previewRevision: number;
}

export interface JobRecord {
  id: string;
  spec: JobSpec;
  state: JobState;
  /** The device set that runs it: at most one job runs at a time on one device set. */
  lane: string;
  createdAt: string;
  startedAt?: string;
  finishedAt?: string;
  /** How many times the job was started (a job running at a crash is started again). */
  attempts: number;
  progress?: JobProgress;
  /** The output's file name in the outputs folder, once completed. */
  output?: string;
  /** What the run warned of (a prompt cut to the model's length, a scheduler replaced, ...), once completed; absent when nothing. */
  warnings?: string[];
  error?: { message: string; kind?: string; parameter?: string };
}

/** One event of a job. Ids increase within a queue's lifetime; `epoch` changes when the queue restarts. */
export type JobEvent =
  | { id: string; type: 'state'; job: JobRecord }
  | { id: string; type: 'progress'; jobId: string; progress: JobProgress };

/** What the processor reports while it runs a job. */
export interface JobContext {
  signal: AbortSignal;
  progress(p: Omit<JobProgress, 'previewRevision' | 'etaSeconds'> & { etaSeconds?: number }): void;
  /** A new preview is available (the processor keeps the image; the queue only counts revisions). */
  preview(): void;
}

/** Runs one job; resolves with the output's file name and the run's warnings. A rejection with `cancelled: true` marks it cancelled. */
export type JobProcessor = (job: JobRecord, ctx: JobContext) => Promise<{ output: string; warnings?: string[] }>;

export interface JobQueue {
  add(spec: JobSpec, lane?: string): Promise<JobRecord>;
  get(id: string): Promise<JobRecord | undefined>;
  /**
   * Every job: running first, then the queued ones in the order they will run, then finished ones, newest first
   * (at most `finished` of those when given).
   */
  list(options?: { finished?: number }): Promise<JobRecord[]>;
  /**
   * Moves a queued job to `index` among the queued jobs of its lane (0: next in that lane; lanes run side by side,
   * so there is no order between them). Returns the lane's queued jobs in their new order.
   */
  move(id: string, index: number): Promise<JobRecord[]>;
  /** Cancels a queued or running job (a running one stops within one model call). */
  cancel(id: string): Promise<JobRecord | undefined>;
  /** Forgets a finished or queued job (a queued one is cancelled first). False when there is no such job. */
  remove(id: string): Promise<boolean>;
  /**
   * Events of a job after `afterId` (all kept ones when undefined or unknown, preceded by a state snapshot),
   * then live ones until `unsubscribe` or the job's final state. Returns the unsubscribe function.
   */
  subscribe(id: string, afterId: string | undefined, listener: (e: JobEvent) => void): () => void;
  /** Starts running jobs with `processor`, one at a time per lane. */
  process(processor: JobProcessor): void;
  /** Stops taking jobs; a running job is interrupted and queued again (not lost). */
  close(): Promise<void>;
}
