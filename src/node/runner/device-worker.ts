/**
 * The coordinator's handle on one device worker thread: request/response with transfer, failure and shutdown.
 *
 * Shutdown never ends a thread while ONNX Runtime runs a model in it: onnxruntime-node 1.30 aborts the whole
 * process ("terminate called after throwing an instance of 'Napi::Error'") when a worker is terminated during
 * session.run. terminate() therefore rejects the pending requests at once (the coordinator moves on) and ends the
 * thread as soon as the worker has answered what it was running, or after a grace period if it never does.
 */
import { Worker } from 'node:worker_threads';
import { AsgdError, type ErrorKind } from '../../core/errors.ts';
import type { DeviceSpec } from './devices.ts';
import type { SerializedError, WorkerReply, WorkerRequest, WorkerResult } from './protocol.ts';

// Built package: the compiled worker. From the TypeScript sources: a bootstrap that registers the loader first.
const WORKER_URL = import.meta.url.endsWith('.ts')
  ? new URL('./worker-dev.mjs', import.meta.url)
  : new URL('./worker.js', import.meta.url);

/** How long terminate() waits for a model call in flight before ending the thread regardless. */
export const TERMINATE_GRACE_MS = 60_000;

/** Thread ids of device workers started and not yet exited, process-wide (to check that none is orphaned). */
const running = new Set<number>();

export function liveWorkerThreadIds(): number[] {
  return [...running].sort((a, b) => a - b);
}

interface Pending {
  resolve: (r: WorkerResult) => void;
  reject: (e: unknown) => void;
  what: string;
}

export class DeviceWorker {
  private readonly worker: Worker;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private deadError: AsgdError | undefined;
  private terminated = false;
  /** Requests the worker is still executing after terminate() rejected them. */
  private readonly draining = new Set<number>();
  private drained: (() => void) | undefined;
  /** Settles when the thread has exited (for whatever reason). */
  readonly exited: Promise<void>;
  readonly threadId: number;

  constructor(readonly device: DeviceSpec) {
    // trackUnmanagedFds off: Node would otherwise close, when the thread ends, every descriptor the thread opened with
    // fs.open, and that includes descriptor 2 as the stderr filter (src/onnx/runtime-log.ts) reopens it there: the
    // process lost its stderr, and the next descriptor opened took number 2 (a worker's event loop asserts on
    // closing such a descriptor: the process aborted when a second webgpu pipeline ran). The worker's own files are
    // closed by the code that opens them.
    this.worker = new Worker(WORKER_URL, { execArgv: process.execArgv.filter((a) => !a.startsWith('--test')), trackUnmanagedFds: false });
    this.threadId = this.worker.threadId;
    running.add(this.threadId);
    this.worker.on('message', (reply: WorkerReply) => this.onReply(reply));
    this.worker.on('error', (err) => this.fail(err));
    this.exited = new Promise((resolve) => {
      this.worker.on('exit', (code) => {
        running.delete(this.threadId);
        if (!this.terminated) this.fail(new Error(`worker exited with code ${code}`));
        resolve();
      });
    });
  }

  get label(): string {
    return this.device.label;
  }

  /** Neither terminated nor dead. */
  get alive(): boolean {
    return !this.terminated && this.deadError === undefined;
  }

  get busy(): boolean {
    return this.pending.size > 0;
  }

  request<T extends WorkerResult['type']>(req: WorkerRequest, what: string, transfer: ArrayBuffer[] = []): Promise<Extract<WorkerResult, { type: T }>> {
    if (this.deadError) return Promise.reject(this.deadError);
    if (this.terminated) return Promise.reject(new AsgdError(`Device ${this.label} was stopped`, { kind: 'device', parameter: 'devices', hint: 'It failed earlier or the pipeline was closed' }));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (r: WorkerResult) => void, reject, what });
      this.worker.postMessage({ id, req }, transfer);
    });
  }

  private onReply(reply: WorkerReply): void {
    if (this.draining.delete(reply.id) && this.draining.size === 0) this.drained?.();
    const p = this.pending.get(reply.id);
    if (!p) return;
    this.pending.delete(reply.id);
    if (reply.ok) p.resolve(reply.result);
    else p.reject(this.rebuildError(reply.error, p.what));
  }

  private rebuildError(e: SerializedError, what: string): Error {
    if (e.kind) {
      // Rebuilt with every field (summary + details recompose the same message).
      return new AsgdError(e.summary ?? e.message, {
        kind: e.kind as ErrorKind, parameter: e.parameter, expected: e.expected, received: e.received, hint: e.hint, cause: e.stack,
      });
    }
    return new AsgdError(`Device ${this.label} failed on ${what}: ${e.message}`, {
      kind: 'device',
      parameter: 'devices',
      hint: 'Run with --devices cpu to check whether the model itself works',
      cause: e.stack,
    });
  }

  private fail(err: unknown): void {
    const msg = err instanceof Error ? err.message : String(err);
    this.deadError = new AsgdError(`Device ${this.label} stopped: ${msg}`, {
      kind: 'device',
      parameter: 'devices',
      hint: 'The worker died (out of memory or a crash in the execution provider); try fewer devices or --devices cpu',
      cause: err,
    });
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      p.reject(new AsgdError(`Device ${this.label} stopped during ${p.what}: ${msg}`, { kind: 'device', parameter: 'devices', cause: err }));
    }
    this.draining.clear();
    this.drained?.();
  }

  /**
   * Stops the thread: pending requests are rejected at once; the thread ends when the model call it is running
   * returns (at most TERMINATE_GRACE_MS). Resolves once it has exited.
   */
  async terminate(graceMs = TERMINATE_GRACE_MS): Promise<void> {
    if (!this.terminated) {
      this.terminated = true;
      const cancelled = new AsgdError('Generation cancelled', { kind: 'cancelled' });
      for (const [id, p] of this.pending) {
        this.pending.delete(id);
        this.draining.add(id);
        p.reject(cancelled);
      }
      if (this.draining.size > 0 && this.deadError === undefined) {
        let timer: NodeJS.Timeout | undefined;
        await new Promise<void>((resolve) => {
          this.drained = resolve;
          timer = setTimeout(resolve, graceMs);
        });
        clearTimeout(timer);
      }
      await this.worker.terminate();
    }
    await this.exited;
  }
}
