// Worker bootstrap when running from the TypeScript sources (tests, benches in a clone): worker threads do not
// inherit the parent's TypeScript loader on every Node version, so register tsx here, then load the worker.
// The built package starts dist/node/runner/worker.js directly; this file is not shipped.
import { register } from 'tsx/esm/api';

register();
await import('./worker.ts');
