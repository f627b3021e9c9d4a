/**
 * How loud ONNX Runtime and the GPU driver stack under it may be. ONNX Runtime's own messages follow a severity
 * (set per session); Dawn, the WebGPU implementation inside the WebGPU provider, prints some warnings straight to
 * the process's stderr from native code (on software Vulkan drivers such as lavapipe: "maxDynamic...
 * artificially reduced ..."), which no JavaScript stream and no ONNX Runtime option reaches. At the default
 * level those lines are caught while a WebGPU session is created: file descriptor 2 points at a temporary file
 * for that time, and every captured line that is not one of the known driver notes is written back to stderr.
 *
 * The level is read from ASGD_RUNTIME_LOG (error, warning, info, verbose; default error) so that device worker
 * threads, which share the environment, follow the CLI's --verbose.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { invalidArgument } from '../core/errors.ts';

export const RUNTIME_LOG_LEVELS = ['error', 'warning', 'info', 'verbose'] as const;
export type RuntimeLogLevel = (typeof RUNTIME_LOG_LEVELS)[number];

/** The environment variable that sets the level (the CLI's --verbose sets it to 'warning'). */
export const RUNTIME_LOG_ENV = 'ASGD_RUNTIME_LOG';

export function runtimeLogLevel(): RuntimeLogLevel {
  const v = process.env[RUNTIME_LOG_ENV];
  if (v === undefined || v === '') return 'error';
  if (!(RUNTIME_LOG_LEVELS as readonly string[]).includes(v)) {
    throw invalidArgument(RUNTIME_LOG_ENV, `one of ${RUNTIME_LOG_LEVELS.join(', ')}`, v);
  }
  return v as RuntimeLogLevel;
}

/**
 * A session's severity number for a level (0 verbose ... 2 warning). At 'error' only fatal messages (4): an error
 * of a session reaches the user as the error thrown with ONNX Runtime's message, so its log line (red, timestamped,
 * the same text) would say it twice, and even under -q.
 */
export function ortSeverity(level: RuntimeLogLevel): 0 | 1 | 2 | 4 {
  return level === 'verbose' ? 0 : level === 'info' ? 1 : level === 'warning' ? 2 : 4;
}

/** Lines the driver stack prints that say nothing a user can act on (filtered at the 'error' level only). */
const DRIVER_NOTES: readonly RegExp[] = [
  /^Warning: maxDynamic\w+ artificially reduced from \d+ to \d+/,
  // ONNX Runtime's default logger (before a session's own severity applies), e.g. node-placement notes.
  /^(\x1b\[[0-9;]*m)?\d{4}-\d\d-\d\d [\d:.]+ \[[WI]:onnxruntime:/,
];

export function isDriverNote(line: string): boolean {
  return DRIVER_NOTES.some((re) => re.test(line));
}

/**
 * Closes descriptor 2. Node warns once per thread ("File descriptor 2 closed but not opened in unmanaged mode")
 * when a thread closes a descriptor it did not open; that warning is about this deliberate close alone.
 */
function closeStderr(): void {
  const emit = process.emitWarning;
  process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
    const text = typeof warning === 'string' ? warning : warning.message;
    if (/^File descriptor 2 closed/.test(text)) return;
    (emit as (...a: unknown[]) => void).call(process, warning, ...rest);
  }) as typeof process.emitWarning;
  try {
    fs.closeSync(2);
  } finally {
    process.emitWarning = emit;
  }
}

let captureDepth = 0;
const lockDir = path.join(os.tmpdir(), `asgd-stderr-${process.pid}.lock`);

/** A process-wide lock (file descriptors are shared by all threads): a directory that only one can create. */
async function lock(): Promise<() => void> {
  for (;;) {
    try {
      fs.mkdirSync(lockDir);
      return () => fs.rmSync(lockDir, { recursive: true, force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') return () => undefined;
      await sleep(5);
    }
  }
}

/**
 * Runs `fn` with native writes to stderr caught and filtered (see the module comment). Where stderr cannot be
 * reopened through /proc (it is closed, or a socket, which is what Node gives a child process for 'pipe'; a
 * terminal, a file or a shell pipe can be) or the level is above 'error', `fn` runs as is. When `fn` fails, the
 * lines kept go with its error (`driverOutput`) instead of to stderr: the error that reports the failure says them.
 */
export async function withDriverNotesFiltered<T>(fn: () => Promise<T>): Promise<T> {
  if (runtimeLogLevel() !== 'error' || captureDepth > 0 || process.platform !== 'linux') return fn();
  const unlock = await lock();
  let saved: number;
  try {
    saved = fs.openSync('/proc/self/fd/2', 'a');
  } catch {
    unlock();
    return fn();
  }
  const file = path.join(os.tmpdir(), `asgd-stderr-${process.pid}-${Date.now()}.txt`);
  let captured = false;
  let failure: unknown;
  captureDepth++;
  try {
    closeStderr();
    const fd = fs.openSync(file, 'w+');
    captured = fd === 2;
    if (!captured) {
      // Another thread took descriptor 2 in between: give ours back and run unfiltered.
      fs.closeSync(fd);
      fs.openSync(`/proc/self/fd/${saved}`, 'a');
    }
    return await fn().catch((err: unknown) => {
      failure = err;
      throw err;
    });
  } finally {
    captureDepth--;
    if (captured) {
      closeStderr();
      fs.openSync(`/proc/self/fd/${saved}`, 'a');
    }
    fs.closeSync(saved);
    unlock();
    let text = '';
    try {
      text = fs.readFileSync(file, 'utf8');
      fs.rmSync(file, { force: true });
    } catch {
      // Nothing was captured.
    }
    const kept = text.split('\n').filter((l, i, all) => !(i === all.length - 1 && l === '') && !isDriverNote(l));
    if (kept.length && failure instanceof Error) (failure as Error & { driverOutput?: string[] }).driverOutput = kept;
    else if (kept.length) process.stderr.write(kept.join('\n') + '\n');
  }
}
