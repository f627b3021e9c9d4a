/**
 * A server with the fake engine in its own process, for tests that kill it. Prints `port <n>` when it listens.
 * argv: <stateDir> <outputsDir> <logFile> <stepMs>
 */
import { createServer } from '../../src/server/app.ts';
import { LocalJobQueue } from '../../src/server/local-queue.ts';
import { FakeEngine } from './fake-engine.ts';

const [stateDir, outputsDir, log, stepMs] = process.argv.slice(2);
const queue = new LocalJobQueue({ dir: stateDir! });
const app = await createServer({ queue, engine: new FakeEngine({ log, stepMs: Number(stepMs) }), outputsDir: outputsDir! });
await app.listen({ port: 0, host: '127.0.0.1' });
const addr = app.server.address();
process.stdout.write(`port ${typeof addr === 'object' && addr ? addr.port : 0}\n`);
