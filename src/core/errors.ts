/**
 * Every user-facing failure is an AsgdError: it names the parameter (or component), what was expected,
 * what was received, and what to do. The CLI maps `kind` to an exit code.
 */
import type { AbortSignalLike } from './platform.ts';
export type ErrorKind =
  | 'invalid-argument' // bad option value or combination (exit 2)
  | 'model' // model folder missing, unreadable, or not matching the contract (exit 3)
  | 'output' // output path cannot be written (exit 4)
  | 'device' // execution provider or worker problem (exit 5)
  | 'cancelled' // AbortSignal or Ctrl-C (exit 130)
  | 'internal'; // a bug (exit 1)

export interface AsgdErrorDetails {
  kind: ErrorKind;
  /** The option, file or component the problem is about, e.g. "width" or "unet/model.onnx". */
  parameter?: string;
  expected?: string;
  received?: string;
  /** What the user should do about it. */
  hint?: string;
  cause?: unknown;
}

export class AsgdError extends Error {
  readonly kind: ErrorKind;
  /** The first sentence of the message, before expected/received/hint were added to it. */
  readonly summary: string;
  readonly parameter?: string;
  readonly expected?: string;
  readonly received?: string;
  readonly hint?: string;

  constructor(message: string, details: AsgdErrorDetails) {
    const parts = [message];
    if (details.expected !== undefined) parts.push(`expected ${details.expected}`);
    if (details.received !== undefined) parts.push(`received ${details.received}`);
    let text = parts.join('; ');
    if (details.hint) text += `. ${details.hint}`;
    super(text, details.cause !== undefined ? { cause: details.cause } : undefined);
    this.name = 'AsgdError';
    this.kind = details.kind;
    this.summary = message;
    this.parameter = details.parameter;
    this.expected = details.expected;
    this.received = details.received;
    this.hint = details.hint;
  }
}

export function invalidArgument(
  parameter: string,
  expected: string,
  received: unknown,
  hint?: string,
): AsgdError {
  return new AsgdError(`Invalid ${parameter}`, {
    kind: 'invalid-argument',
    parameter,
    expected,
    received: describe(received),
    hint,
  });
}

export function cancelled(): AsgdError {
  return new AsgdError('Generation cancelled', { kind: 'cancelled' });
}

export function throwIfAborted(signal: AbortSignalLike | undefined): void {
  if (signal?.aborted) throw cancelled();
}

/** A short human rendering of a received value for error messages. */
export function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean') return String(value);
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return `[${value.map(describe).join(', ')}]`;
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}

/** An error as it crosses a worker boundary (structured clone): an AsgdError keeps every field, so it is rebuilt whole. */
export interface WireError {
  message: string;
  /** AsgdError's summary (its message before the details). */
  summary?: string;
  name: string;
  kind?: string;
  parameter?: string;
  expected?: string;
  received?: string;
  hint?: string;
  stack?: string;
}

export function errorToWire(err: unknown): WireError {
  if (err instanceof AsgdError) {
    return { message: err.message, summary: err.summary, name: err.name, kind: err.kind, parameter: err.parameter, expected: err.expected, received: err.received, hint: err.hint, stack: err.stack };
  }
  if (err instanceof Error) return { message: err.message, name: err.name, stack: err.stack };
  return { message: String(err), name: 'Error' };
}

/** The AsgdError a wire error came from (its stack as the cause), or undefined where it was another error. */
export function asgdErrorFromWire(e: WireError): AsgdError | undefined {
  if (!e.kind) return undefined;
  return new AsgdError(e.summary ?? e.message, {
    kind: e.kind as ErrorKind, parameter: e.parameter, expected: e.expected, received: e.received, hint: e.hint, cause: e.stack,
  });
}
