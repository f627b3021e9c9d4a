/** Errors across the worker boundary: an AsgdError keeps its kind, parameter, expected, received and hint. */
import { AsgdError, type ErrorKind } from '../../core/errors.ts';
import type { WireError } from './protocol.ts';

export function toWire(err: unknown): WireError {
  if (err instanceof AsgdError) {
    return { message: err.message, summary: err.summary, name: err.name, kind: err.kind, parameter: err.parameter, expected: err.expected, received: err.received, hint: err.hint };
  }
  if (err instanceof Error) return { message: err.message, name: err.name };
  return { message: String(err), name: 'Error' };
}

export function fromWire(e: WireError): Error {
  if (e.kind) {
    return new AsgdError(e.summary ?? e.message, { kind: e.kind as ErrorKind, parameter: e.parameter, expected: e.expected, received: e.received, hint: e.hint });
  }
  const err = new Error(e.message);
  err.name = e.name;
  return err;
}
