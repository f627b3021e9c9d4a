/**
 * The `--queue` address: redis://[user:password@]host[:port][/db], rediss:// (TLS), or unix:///path/to/redis.sock
 * (optionally ?db=N), turned into ioredis options. Valkey speaks the same protocol.
 */
import type { RedisOptions as BullRedisOptions } from 'bullmq';
import { Redis, type RedisOptions } from 'ioredis';
import { AsgdError, invalidArgument } from '../../core/errors.ts';

export function redisOptions(address: string, flag = '--queue'): RedisOptions {
  let url: URL;
  try {
    url = new URL(address);
  } catch {
    throw invalidArgument(flag, 'redis://HOST:PORT, rediss://HOST:PORT or unix:///PATH/redis.sock', address);
  }
  const db = (v: string | null | undefined) => {
    if (v === null || v === undefined || v === '') return 0;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw invalidArgument(flag, 'a database number (an integer >= 0) after the address', v);
    return n;
  };
  const auth = {
    ...(url.username ? { username: decodeURIComponent(url.username) } : {}),
    ...(url.password ? { password: decodeURIComponent(url.password) } : {}),
  };
  if (url.protocol === 'unix:') {
    if (!url.pathname) throw invalidArgument(flag, 'unix:///PATH/redis.sock', address);
    return { path: decodeURIComponent(url.pathname), db: db(url.searchParams.get('db')), ...auth };
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
    throw invalidArgument(flag, 'an address starting with redis://, rediss:// or unix://', address);
  }
  return {
    host: url.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1',
    port: url.port ? Number(url.port) : 6379,
    db: db(url.pathname.replace(/^\//, '')),
    ...auth,
    ...(url.protocol === 'rediss:' ? { tls: {} } : {}),
  };
}

/** The address without its password, for messages. */
export function shownAddress(address: string): string {
  try {
    const u = new URL(address);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return address;
  }
}

/** The same options typed as BullMQ takes them (BullMQ passes them on to ioredis). */
export function bullConnection(o: RedisOptions): BullRedisOptions {
  return o as unknown as BullRedisOptions;
}

/**
 * Fails at once, naming the address, when no Redis answers there: a server or worker started against the wrong
 * address would otherwise wait without a word (their connections retry for ever, as BullMQ needs).
 */
export async function checkReachable(address: string, flag = '--queue'): Promise<void> {
  const redis = new Redis({ ...redisOptions(address, flag), maxRetriesPerRequest: 1 });
  let lastError: Error | undefined;
  redis.on('error', (err: Error) => (lastError = err));
  try {
    await redis.ping();
  } catch (err) {
    const why = lastError?.message ?? (err instanceof Error ? err.message : String(err));
    throw new AsgdError(`Cannot reach the queue's Redis at ${shownAddress(address)} (${why})`, {
      kind: 'invalid-argument', parameter: flag, hint: 'Start Redis there, or give its address: redis://HOST:PORT or unix:///PATH/redis.sock',
    });
  } finally {
    redis.disconnect();
  }
}
