/** Errors across the browser's worker boundary: an AsgdError is rebuilt whole, another error keeps its name and message. */
import { asgdErrorFromWire, type WireError } from '../../core/errors.ts';

export { errorToWire as toWire } from '../../core/errors.ts';

export function fromWire(e: WireError): Error {
  const asgd = asgdErrorFromWire(e);
  if (asgd) return asgd;
  const err = new Error(e.message);
  err.name = e.name;
  return err;
}
