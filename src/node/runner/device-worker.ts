/**
 * The coordinator's handle on one device worker: request/response with transfer, failure and shutdown. A worker is a
 * thread of this process, or a process of its own (`isolation: 'process'`): onnxruntime-node 1.30 could not run two
 * WebGPU sessions at the same time in two threads of one process (the process ended: docs/benchmarks.md); 1.31.1 can,
 * but two threads share the process's WebGPU device and generated slower than two processes on lavapipe; and a crash
 * in a worker process ends that worker only.
 *
 * Shutdown never ends a thread while ONNX Runtime runs a model in it: onnxruntime-node 1.30 aborted the whole
 * process ("terminate called after throwing an instance of 'Napi::Error'") when a worker is terminated during
 * session.run (not rechecked with 1.31.1). terminate() therefore rejects the pending requests at once (the coordinator moves on) and ends the
 * thread as soon as the worker has answered what it was running, or after a grace period if it never does. A worker
 * process is killed at once: that ends nothing else.
 */
import { fork, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { AsgdError, asgdErrorFromWire, type WireError } from '../../core/errors.ts';
import { ArrayStow, makeStowFolder, STOW_DIR_ENV } from './array-stow.ts';
import type { DeviceSpec, WorkerIsolation } from './devices.ts';
import type { WorkerReply, WorkerRequest, WorkerResult } from './protocol.ts';

// Built package: the compiled worker. From the TypeScript sources: a bootstrap that registers the loader first.
const WORKER_URL = import.meta.url.endsWith('.ts')
  ? new URL('./worker-dev.mjs', import.meta.url)
  : new URL('./worker.js', import.meta.url);

/** How long terminate() waits for a model call in flight before ending the thread regardless. */
export const TERMINATE_GRACE_MS = 60_000;

/** Device workers started and not yet exited, process-wide ("thread N", "process PID"; to check none is orphaned). */
const running = new Set<string>();

export function liveDeviceWorkers(): string[] {
  return [...running].sort();
}

/** Each running device worker's exit. */
const exits = new Map<string, Promise<void>>();

/**
 * Settles once every device worker started so far has exited. A process must not exit while a worker thread is
 * inside ONNX Runtime (creating a session a cancelled load left running): onnxruntime-node aborts the process.
 */
export async function deviceWorkersExited(): Promise<void> {
  await Promise.all([...exits.values()]);
}

/** WebGPU device workers running as threads of this process (at most one can run at a time: devices.ts). */
const webgpuThreads = new Set<string>();

export function liveWebgpuThreads(): number {
  return webgpuThreads.size;
}

/** The thread or process behind a DeviceWorker. */
interface Channel {
  readonly id: string;
  post(message: unknown, transfer: ArrayBuffer[]): void;
  /** Ends it now (a thread: Worker.terminate; a process: SIGKILL). */
  end(): Promise<void>;
}

/**
 * The device thread's stack. Creating an ONNX Runtime session on a thread takes stack in proportion to the process's
 * command line (onnxruntime-node 1.30, measured: 30,000 characters of arguments needed 8 to 12 MB, 120,000 needed 32
 * to 48 MB; Node's default 4 MB overflowed, a segfault, at a 22,000-character prompt). 512 bytes a byte of it, over
 * the default; the pages are only touched as used.
 */
function workerStackMb(): number {
  const bytes = process.argv.reduce((n, a) => n + Buffer.byteLength(a) + 1, 0);
  return 4 + Math.ceil((bytes * 512) / 2 ** 20);
}

/**
 * The Node options a device worker starts with: this process's (a loader such as `--import tsx` runs the worker's
 * sources), less those that name this process's own entry point or mode: code given with -e/-p (a forked worker
 * would run the user's code again instead of the worker), --input-type (refused without -e), the test runner, watch
 * mode, syntax check and the REPL.
 */
export function workerExecArgv(execArgv: readonly string[]): string[] {
  const withValue = new Set(['-e', '--eval', '-p', '--print', '-pe', '--input-type', '--watch-path', '--test-name-pattern', '--test-skip-pattern', '--test-reporter', '--test-reporter-destination', '--test-concurrency', '--test-shard', '--test-timeout']);
  const dropped = /^(-e|--eval|-p|--print|-pe|--input-type|--test|--watch|-i|--interactive|-c|--check)(=|$|-)/;
  const out: string[] = [];
  for (let i = 0; i < execArgv.length; i++) {
    const a = execArgv[i]!;
    if (!dropped.test(a)) {
      out.push(a);
      continue;
    }
    // A dropped option's separate value goes with it (`-e CODE`, `--input-type module`).
    if (withValue.has(a) && i + 1 < execArgv.length) i++;
  }
  return out;
}

function threadChannel(on: ChannelEvents): Channel {
  // trackUnmanagedFds off: Node would otherwise close, when the thread ends, every descriptor the thread opened with
  // fs.open, and that includes descriptor 2 as the stderr filter (src/onnx/runtime-log.ts) reopens it there: the
  // process lost its stderr, and the next descriptor opened took number 2 (a worker's event loop asserts on
  // closing such a descriptor: the process aborted when a second webgpu pipeline ran). The worker's own files are
  // closed by the code that opens them.
  const worker = new Worker(WORKER_URL, { execArgv: workerExecArgv(process.execArgv), trackUnmanagedFds: false, resourceLimits: { stackSizeMb: workerStackMb() } });
  worker.on('message', on.message);
  worker.on('error', on.error);
  worker.on('exit', (code) => on.exit(`with code ${code}`));
  return {
    id: `thread ${worker.threadId}`,
    post: (m, transfer) => worker.postMessage(m, transfer),
    end: async () => void (await worker.terminate()),
  };
}

function processChannel(on: ChannelEvents): Channel {
  // 'advanced' serialization carries typed arrays as such (a copy; nothing is transferred between processes); the
  // large ones go through files in memory instead (array-stow.ts). The worker's stdout goes to this process's stderr,
  // so that nothing it prints can mix into an image on stdout.
  const folder = makeStowFolder();
  if (folder) trackStowFolder(folder);
  const stow = new ArrayStow(folder, 'c');
  const child: ChildProcess = fork(fileURLToPath(WORKER_URL), [], {
    execArgv: workerExecArgv(process.execArgv),
    serialization: 'advanced',
    stdio: ['ignore', 2, 2, 'ipc'],
    env: folder ? { ...process.env, [STOW_DIR_ENV]: folder } : process.env,
  });
  child.on('message', (m: WorkerReply) => {
    let reply: WorkerReply;
    try {
      reply = stow.unstow(m);
    } catch (err) {
      reply = { id: m.id, ok: false, error: { name: 'Error', message: (err as Error).message } };
    }
    on.message(reply);
  });
  const exited = new Promise<void>((resolve) => {
    child.on('exit', (code, signal) => {
      removeStowFolder(folder);
      on.exit(signal ? `by signal ${signal}` : `with code ${code}`);
      resolve();
    });
    child.on('error', (err) => {
      on.error(err);
      // A process that never started has no 'exit' to wait for.
      if (child.pid === undefined) {
        removeStowFolder(folder);
        on.exit('before it started');
        resolve();
      }
    });
  });
  return {
    id: `process ${child.pid}`,
    post: (m) => void child.send(stow.stow(m) as object),
    end: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

/** Array folders of worker processes still running: removed when each exits, and at this process's exit. */
const stowFolders = new Set<string>();

function trackStowFolder(folder: string): void {
  if (stowFolders.size === 0) process.once('exit', removeAllStowFolders);
  stowFolders.add(folder);
}

function removeStowFolder(folder: string | undefined): void {
  if (!folder || !stowFolders.delete(folder)) return;
  fs.rmSync(folder, { recursive: true, force: true });
  if (stowFolders.size === 0) process.off('exit', removeAllStowFolders);
}

function removeAllStowFolders(): void {
  for (const f of stowFolders) fs.rmSync(f, { recursive: true, force: true });
  stowFolders.clear();
}

interface ChannelEvents {
  message: (reply: WorkerReply) => void;
  error: (err: unknown) => void;
  exit: (how: string) => void;
}

interface Pending {
  resolve: (r: WorkerResult) => void;
  reject: (e: unknown) => void;
  what: string;
}

export class DeviceWorker {
  private readonly channel: Channel;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private deadError: AsgdError | undefined;
  private terminated = false;
  /** Requests the worker is still executing after terminate() rejected them. */
  private readonly draining = new Set<number>();
  private drained: (() => void) | undefined;
  /** Settles when the thread or process has exited (for whatever reason). */
  readonly exited: Promise<void>;
  /** "thread N" or "process PID". */
  readonly id: string;

  constructor(readonly device: DeviceSpec, readonly isolation: WorkerIsolation = 'thread') {
    let exit!: () => void;
    this.exited = new Promise((resolve) => (exit = resolve));
    const events: ChannelEvents = {
      message: (reply) => this.onReply(reply),
      error: (err) => this.fail(err),
      exit: (how) => {
        running.delete(this.id);
        exits.delete(this.id);
        webgpuThreads.delete(this.id);
        if (!this.terminated) this.fail(new Error(`worker ${isolation === 'process' ? 'process ' : ''}exited ${how}`));
        exit();
      },
    };
    this.channel = isolation === 'process' ? processChannel(events) : threadChannel(events);
    this.id = this.channel.id;
    running.add(this.id);
    exits.set(this.id, this.exited);
    if (device.provider === 'webgpu' && isolation === 'thread') webgpuThreads.add(this.id);
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
      this.channel.post({ id, req }, transfer);
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

  private rebuildError(e: WireError, what: string): Error {
    const asgd = asgdErrorFromWire(e);
    if (asgd) return asgd;
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
   * Stops the worker: pending requests are rejected at once; a thread ends when the model call it is running returns
   * (at most TERMINATE_GRACE_MS), a process at once. Resolves once it has exited.
   */
  async terminate(graceMs = TERMINATE_GRACE_MS): Promise<void> {
    if (!this.terminated) {
      this.terminated = true;
      const cancelled = new AsgdError('Generation cancelled', { kind: 'cancelled' });
      for (const [id, p] of this.pending) {
        this.pending.delete(id);
        // A thread is waited for until it has answered; a process is killed (nothing to drain).
        if (this.isolation === 'thread') this.draining.add(id);
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
      await this.channel.end();
    }
    await this.exited;
  }
}
