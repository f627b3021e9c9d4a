/**
 * What an option is: its name in the library, its kind, default, range and one line of help, and, for those the
 * command line has, its flag. Validation, CLI flags, help text and the README's option table all read these.
 * Portable.
 */
import { AsgdError, describe, invalidArgument } from '../errors.ts';

export type OptionKind = 'number' | 'integer' | 'boolean' | 'choice' | 'string' | 'list';

/** Where an option goes: generation settings, method options, VAE decoding, pipeline loading, upscaling, or the CLI only. */
export type OptionScope = 'params' | 'method' | 'vae' | 'pipeline' | 'upscale' | 'cli';

export interface OptionSpec {
  /** The name in the library's option object (GenerateParams, MethodOptions, VaeDecodeOptions, PipelineOptions). */
  key: string;
  scope: OptionScope;
  kind: OptionKind;
  /** The default; undefined when there is none or it depends on the model (then `defaultText` says which). */
  default?: unknown;
  defaultText?: string;
  /** Method options only: the default when upscaling an image, where it differs (measured: docs/upscale.md). */
  upscaleDefault?: unknown;
  min?: number;
  max?: number;
  /** min is exclusive (value > min). */
  exclusiveMin?: boolean;
  /** Integers only: the value must be a multiple of this. */
  multipleOf?: number;
  choices?: readonly string[];
  /** null is a valid value (it means "derive it", as `defaultText` explains). */
  nullable?: boolean;
  help: string;
  /** For booleans whose default is true: what the `--no-` flag does. */
  offHelp?: string;
  /** What to do about a bad value. */
  hint?: string;
  /** The methods that read it (shown in the help); absent: every method. */
  methods?: readonly string[];
  /** The command-line flag; absent: library only. Booleans whose default is true get `--no-<flag>`. */
  cli?: { flag: string; short?: string; arg?: string };
}

function describeRange(s: OptionSpec): string {
  const lo = s.min;
  const hi = s.max;
  if (lo !== undefined && hi !== undefined) return ` in ${s.exclusiveMin ? '(' : '['}${lo}, ${hi}]`;
  if (lo !== undefined) return ` ${s.exclusiveMin ? '>' : '>='} ${lo}`;
  if (hi !== undefined) return ` <= ${hi}`;
  return '';
}

/** What a valid value looks like, in words (used in error messages and docs). */
export function expectedText(s: OptionSpec): string {
  const nullText = s.nullable ? ' (or null)' : '';
  switch (s.kind) {
    case 'number':
      return `${describeRange(s) ? 'a number' : 'a finite number'}${describeRange(s)}${nullText}`;
    case 'integer':
      if (s.multipleOf !== undefined && s.min !== undefined && s.max !== undefined) return `a multiple of ${s.multipleOf} between ${s.min} and ${s.max}${nullText}`;
      return `an integer${describeRange(s)}${nullText}`;
    case 'boolean':
      return 'true or false';
    case 'choice':
      return `one of ${s.choices!.join(', ')}`;
    case 'string':
      return 'a string';
    case 'list':
      return 'a list of strings';
  }
}

/**
 * Refuses a key of `o` that is not one of `known` (a misspelt option would otherwise be ignored without a word),
 * naming it, `what` it should be with the list, and `hint`; a key set to undefined is as good as absent.
 */
export function refuseUnknownKeys(o: object, known: readonly string[], what: string, hint = 'Check the spelling'): void {
  for (const [key, value] of Object.entries(o)) {
    if (value !== undefined && !known.includes(key)) throw invalidArgument(key, `${what}: ${known.join(', ')}`, value, hint);
  }
}

/**
 * refuseUnknownKeys for an object of settings inside the settings (`vae`, `methodOptions`): the key is named by its
 * place, `field.key`, worded as the HTTP API's schema words the same body.
 */
export function refuseUnknownFields(o: object, known: readonly string[], field: string): void {
  for (const [key, value] of Object.entries(o)) {
    if (value === undefined || known.includes(key)) continue;
    throw new AsgdError(`Invalid ${field}.${key}: not a known setting`, {
      kind: 'invalid-argument', parameter: `${field}.${key}`, expected: `one of ${known.join(', ')}`, received: describe(value), hint: 'Check the spelling',
    });
  }
}

/** Checks one value against its spec; throws an AsgdError naming `name` (default: the key). */
export function checkOption<T = unknown>(s: OptionSpec, value: unknown, name: string = s.key): T {
  if (value === null && s.nullable) return value as T;
  let ok: boolean;
  switch (s.kind) {
    case 'number':
    case 'integer': {
      const n = value as number;
      ok = typeof value === 'number' && Number.isFinite(n) && (s.kind === 'number' || Number.isInteger(n));
      if (ok && s.min !== undefined) ok = s.exclusiveMin ? n > s.min : n >= s.min;
      if (ok && s.max !== undefined) ok = n <= s.max;
      if (ok && s.multipleOf !== undefined) ok = n % s.multipleOf === 0;
      break;
    }
    case 'boolean':
      ok = typeof value === 'boolean';
      break;
    case 'choice':
      ok = typeof value === 'string' && s.choices!.includes(value);
      break;
    case 'string':
      ok = typeof value === 'string';
      break;
    case 'list':
      ok = Array.isArray(value) && value.every((v) => typeof v === 'string');
      break;
  }
  if (!ok) throw invalidArgument(name, expectedText(s), value, s.hint);
  return value as T;
}

/** The CLI flag text of a spec as commander takes it, e.g. `-s, --steps <n>` or `--no-mask`. */
export function flagText(s: OptionSpec): string {
  if (!s.cli) throw new Error(`option ${s.key} has no CLI flag`);
  const negated = s.kind === 'boolean' && s.default === true;
  const long = negated ? s.cli.flag.replace(/^--/, '--no-') : s.cli.flag;
  const arg = s.kind === 'boolean' ? '' : ` ${s.cli.arg ?? '<value>'}`;
  return `${s.cli.short ? `${s.cli.short}, ` : ''}${long}${arg}`;
}

/** The default as the docs show it. */
export function defaultText(s: OptionSpec): string {
  if (s.defaultText !== undefined) return s.defaultText;
  if (s.default === undefined) return '';
  if (Array.isArray(s.default)) return s.default.length ? s.default.join(',') : '(all)';
  return String(s.default);
}
