/** Exit codes of `asgd`: 0 success, 1 internal error, 2 bad arguments, 3 model, 4 output, 5 device, 130 cancelled. */
import { AsgdError, type ErrorKind } from '../core/errors.ts';

export const EXIT: Record<ErrorKind | 'ok', number> = {
  ok: 0,
  internal: 1,
  'invalid-argument': 2,
  model: 3,
  output: 4,
  device: 5,
  cancelled: 130,
};

export function exitCodeFor(err: unknown): number {
  return err instanceof AsgdError ? EXIT[err.kind] : EXIT.internal;
}
