/**
 * The benchmark scripts' command line, shared: node's `parseArgs` in strict mode (a misspelt or unknown flag is an
 * error, never silently ignored), `--help` / `-h` printing the script's usage, and wrong arguments reported as one
 * line and a pointer to `--help` (exit code 2) instead of a stack trace or a run with the defaults.
 *
 *   const { model, sizes } = benchCli(USAGE, { options: { model: { type: 'string' }, sizes: { type: 'string' } } },
 *     ({ values }) => ({ model: values.model, sizes: intList('--sizes', values.sizes ?? '512', 64) }));
 */
import path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';

/** A wrong command line: the message names the flag or value; the script's usage goes with it. */
export class BenchUsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BenchUsageError';
  }
}

export type BenchParsed<T extends ParseArgsConfig> = ReturnType<typeof parseArgs<T>>;

/**
 * Parses `config.args` (default: this process's arguments) strictly and hands the result to `read`, which checks
 * and converts the values (throwing BenchUsageError, e.g. through the helpers below). 'help' when the arguments ask
 * for it. Throws BenchUsageError for an unknown flag, a missing value or an unexpected positional argument.
 */
export function readBenchArgs<T extends ParseArgsConfig, R>(config: T, read: (parsed: BenchParsed<T>) => R): { help: true } | { help: false; value: R } {
  const args = config.args ?? process.argv.slice(2);
  const end = args.indexOf('--');
  const flags = end >= 0 ? args.slice(0, end) : args;
  if (flags.includes('--help') || flags.includes('-h')) return { help: true };
  let parsed: BenchParsed<T>;
  try {
    parsed = parseArgs({ strict: true, ...config, args } as T);
  } catch (err) {
    // node's parse errors (ERR_PARSE_ARGS_*) are the user's: unknown option, missing value, stray positional.
    if (err instanceof Error && String((err as { code?: unknown }).code ?? '').startsWith('ERR_PARSE_ARGS')) throw new BenchUsageError(err.message);
    throw err;
  }
  return { help: false, value: read(parsed) };
}

/**
 * The script's entry point for its arguments: `--help` prints `usage` and exits 0; a wrong command line prints the
 * problem and exits 2 before any work starts.
 */
export function benchCli<T extends ParseArgsConfig, R>(usage: string, config: T, read: (parsed: BenchParsed<T>) => R): R {
  const script = path.basename(process.argv[1] ?? 'bench');
  let r: ReturnType<typeof readBenchArgs<T, R>>;
  try {
    r = readBenchArgs(config, read);
  } catch (err) {
    if (!(err instanceof BenchUsageError)) throw err;
    process.stderr.write(`${script}: ${err.message}\nRun with --help for the options.\n`);
    process.exit(2);
  }
  if (r.help) {
    process.stdout.write(`${usage.trim()}\n`);
    process.exit(0);
  }
  return r.value;
}

/** An integer of at least `min` (and at most `max`). */
export function intArg(name: string, value: string, min: number, max = Infinity): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isInteger(n) || n < min || n > max) {
    throw new BenchUsageError(`${name}: expected an integer ${max === Infinity ? `of at least ${min}` : `from ${min} to ${max}`}, received ${JSON.stringify(value)}`);
  }
  return n;
}

/** A finite number from `min` to `max`. */
export function numberArg(name: string, value: string, min = -Infinity, max = Infinity): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < min || n > max) {
    throw new BenchUsageError(`${name}: expected a number${min > -Infinity ? ` from ${min}` : ''}${max < Infinity ? ` to ${max}` : ''}, received ${JSON.stringify(value)}`);
  }
  return n;
}

/** A comma-separated list of integers of at least `min`. */
export function intList(name: string, value: string, min: number): number[] {
  const parts = value.split(',').map((s) => s.trim());
  if (parts.some((s) => s === '')) throw new BenchUsageError(`${name}: expected comma-separated integers, received ${JSON.stringify(value)}`);
  return parts.map((s) => intArg(name, s, min));
}

/** One of `choices`. */
export function choiceArg<C extends string>(name: string, value: string, choices: readonly C[]): C {
  if (!(choices as readonly string[]).includes(value)) throw new BenchUsageError(`${name}: expected one of ${choices.join(', ')}, received ${JSON.stringify(value)}`);
  return value as C;
}

/** A comma-separated subset of `choices` (each name checked: a misspelt one is an error, not dropped). */
export function choiceList<C extends string>(name: string, value: string, choices: readonly C[]): C[] {
  const parts = value.split(',').map((s) => s.trim());
  const wrong = parts.filter((p) => !(choices as readonly string[]).includes(p));
  if (parts.length === 0 || wrong.length > 0) {
    throw new BenchUsageError(`${name}: expected a comma-separated subset of ${choices.join(', ')}; unknown: ${wrong.map((w) => JSON.stringify(w)).join(', ')}`);
  }
  return parts as C[];
}

/** Positional integers in order (`[name, default, min]` each), for scripts called as `script.ts [jobs] [workers]`. */
export function positionalInts(positionals: string[], spec: readonly (readonly [name: string, fallback: number, min: number])[]): number[] {
  if (positionals.length > spec.length) {
    throw new BenchUsageError(`expected at most ${spec.length} arguments (${spec.map(([n]) => n).join(', ')}), received ${positionals.map((p) => JSON.stringify(p)).join(' ')}`);
  }
  return spec.map(([name, fallback, min], i) => (positionals[i] === undefined ? fallback : intArg(name, positionals[i]!, min)));
}
