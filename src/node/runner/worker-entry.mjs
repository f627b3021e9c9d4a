// Worker bootstrap: worker threads do not inherit the parent's TypeScript loader on every Node version,
// so register tsx here, then load the worker itself.
import { register } from 'tsx/esm/api';

register();
await import('./worker.ts');
