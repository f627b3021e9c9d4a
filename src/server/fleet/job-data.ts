/**
 * What a fleet job holds in Redis, and how it reads as the API's JobRecord. The payload is the settings (seed as
 * a decimal string) and the model's content hash: never weights or images. The return value is the output's name,
 * hash, size and timings.
 */
import { createHash } from 'node:crypto';
import type { Job } from 'bullmq';
import { resolveParams } from '../../core/params.ts';
import { toGenerateParams } from '../output-names.ts';
import type { JobProgress, JobRecord, JobSpec, JobState } from '../queue.ts';
import { CANCELLED_REASON } from './settings.ts';

export interface FleetJobData {
  spec: JobSpec;
  /** Content hash of the model (model-hash.ts). */
  modelHash: string;
  createdAt: string;
}

export interface FleetJobResult {
  output: string;
  sha256: string;
  bytes: number;
  /** The worker that wrote it, and how long the run took (ms). */
  worker: string;
  runMs: number;
  /** True when the output already existed (written by an earlier run of this job). */
  reused: boolean;
  /** What the run warned of (JobRecord.warnings); absent when nothing, or when the output was reused. */
  warnings?: string[];
}

/** JSON with sorted keys and no undefined values; bigints as decimal strings. */
export function canonicalJson(v: unknown): string {
  if (typeof v === 'bigint') return JSON.stringify(v.toString());
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v && typeof v === 'object') {
    const entries = Object.entries(v as Record<string, unknown>).filter(([, x]) => x !== undefined).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, x]) => `${JSON.stringify(k)}:${canonicalJson(x)}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

/**
 * The job id: a hash of the kind, the model's content hash and the settings with the model's defaults filled in
 * (so `steps: 30` and no steps are the same job). The same settings and seed give the same id, so submitting
 * them again returns the existing job and its output.
 */
export function jobIdFor(spec: JobSpec, modelHash: string, native: { width: number; height: number }): string {
  const { model: _model, ...settings } = spec.settings;
  const canonical = spec.kind === 'generate' ? resolveParams(toGenerateParams(settings), native) : settings;
  const h = createHash('sha256').update(`${spec.kind}\n${modelHash}\n${canonicalJson(canonical)}`).digest('hex');
  return `j${h.slice(0, 31)}`;
}

/** A failure's reason as the worker writes it: 'cancelled', or the error as JSON. */
export function failureReason(e: { message: string; kind?: string; parameter?: string }): string {
  return JSON.stringify({ message: e.message, ...(e.kind ? { kind: e.kind } : {}), ...(e.parameter ? { parameter: e.parameter } : {}) });
}

function parseReason(reason: string | undefined): JobRecord['error'] {
  if (!reason) return { message: 'failed' };
  try {
    const e = JSON.parse(reason) as JobRecord['error'];
    if (e && typeof e.message === 'string') return e;
  } catch {
    // BullMQ's own reasons (a stalled job, a lost lock) are plain text.
  }
  return { message: reason };
}

const iso = (ms: number | undefined) => (ms ? new Date(ms).toISOString() : undefined);

export function toRecord(job: Job<FleetJobData, FleetJobResult>, bullState: string): JobRecord {
  const cancelled = bullState === 'failed' && job.failedReason === CANCELLED_REASON;
  const state: JobState =
    bullState === 'active' ? 'running' : bullState === 'completed' ? 'completed' : bullState === 'failed' ? (cancelled ? 'cancelled' : 'failed') : 'queued';
  const progress = state === 'running' && job.progress && typeof job.progress === 'object' ? (job.progress as unknown as JobProgress) : undefined;
  const r: JobRecord = {
    id: job.id!,
    spec: job.data.spec,
    state,
    lane: job.queueName,
    createdAt: job.data.createdAt,
    attempts: job.attemptsStarted ?? job.attemptsMade,
  };
  if (state !== 'queued') {
    const started = iso(job.processedOn);
    if (started) r.startedAt = started;
  }
  if (state === 'completed' || state === 'failed' || state === 'cancelled') {
    const finished = iso(job.finishedOn);
    if (finished) r.finishedAt = finished;
  }
  if (progress) r.progress = progress;
  if (state === 'completed' && job.returnvalue) {
    r.output = job.returnvalue.output;
    if (job.returnvalue.warnings?.length) r.warnings = job.returnvalue.warnings;
  }
  if (state === 'failed') r.error = parseReason(job.failedReason);
  return r;
}
