/**
 * Command-line flags made from the option registry (core/options/registry.ts): flag text, help with the
 * default, value parsing and validation that names the flag, and reading the given flags back into the library's
 * option objects. Only flags the user gave (on the command line) are read, so `--from` can supply the rest.
 */
import { Option, type Command } from 'commander';
import { invalidArgument } from '../core/errors.ts';
import { checkOption, defaultText, flagText, type OptionSpec } from '../core/options/spec.ts';

/** The help line of a spec: which methods read it, what it does, its default. */
export function helpText(s: OptionSpec): string {
  const scope = s.methods ? `${s.methods.join('/')}: ` : '';
  if (s.kind === 'boolean') return `${scope}${s.default === true ? s.offHelp ?? `do not ${s.help}` : s.help}`;
  const d = defaultText(s);
  return `${scope}${s.help}${d ? ` (default: ${d})` : ''}`;
}

function parser(s: OptionSpec, flag: string): ((value: string) => unknown) | undefined {
  if (s.kind === 'number' || s.kind === 'integer') {
    // Decimal notation only: Number() would also take 0x80, 0b1 or an empty string.
    const syntax = s.kind === 'integer' ? /^[+-]?\d+$/ : /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;
    return (value: string) => {
      const v = syntax.test(value.trim()) ? Number(value) : NaN;
      try {
        return checkOption(s, v, flag);
      } catch {
        throw invalidArgument(flag, checkExpected(s), value, s.hint ?? nearestMultiple(s, v));
      }
    };
  }
  if (s.kind === 'list') return (value: string) => value.split(/[,\s]+/).map((x) => x.trim()).filter(Boolean);
  return undefined;
}

/** For a size that must be a multiple (of 8): the nearest one in range, as a hint. */
function nearestMultiple(s: OptionSpec, v: number): string | undefined {
  if (!s.multipleOf || !Number.isFinite(v)) return undefined;
  const near = Math.round(v / s.multipleOf) * s.multipleOf;
  const clamped = Math.min(s.max ?? near, Math.max(s.min ?? near, near));
  return `Try ${clamped}`;
}

function checkExpected(s: OptionSpec): string {
  try {
    checkOption(s, Symbol('probe'));
  } catch (e) {
    return (e as { expected?: string }).expected ?? '';
  }
  return '';
}

/** Commander's Option for a spec (`--mask-layers` splits on commas, `--no-mask` for a default-true boolean). */
export function cliOption(s: OptionSpec): Option {
  const o = new Option(flagText(s), helpText(s));
  const p = parser(s, s.cli!.flag);
  if (p) o.argParser(p);
  if (s.kind === 'choice') o.choices([...s.choices!]);
  return o;
}

/**
 * A method option's on/off flag the other way (`--mask` for `--no-mask`, `--no-guidance-sync` for
 * `--guidance-sync`): it sets the default again, which only matters over a value `--from` read. Not in the help.
 */
export function oppositeOption(s: OptionSpec): Option | undefined {
  if (s.kind !== 'boolean' || s.scope !== 'method' || !s.cli) return undefined;
  const flag = s.default === true ? s.cli.flag : s.cli.flag.replace(/^--/, '--no-');
  return new Option(flag, `back to the default (over a value --from read)`).hideHelp();
}

/** Adds a flag for every spec that has one (and the opposite of a method's on/off flag). */
export function addOptions(cmd: Command, specs: readonly OptionSpec[]): Command {
  for (const s of specs) {
    if (!s.cli) continue;
    cmd.addOption(cliOption(s));
    const opposite = oppositeOption(s);
    if (opposite) cmd.addOption(opposite);
  }
  return cmd;
}

/** The values of the flags the user gave (command line or environment), under the specs' library keys. */
export function givenValues(cmd: Command, specs: readonly OptionSpec[]): Record<string, unknown> {
  const values = cmd.opts();
  const out: Record<string, unknown> = {};
  for (const s of specs) {
    if (!s.cli) continue;
    const attr = cliOption(s).attributeName();
    const source = cmd.getOptionValueSource(attr);
    if (source === 'cli' || source === 'env') out[s.key] = values[attr];
  }
  return out;
}

const SCOPE_OBJECT: Record<Exclude<OptionSpec['scope'], 'params' | 'cli'>, string> = {
  method: 'methodOptions', vae: 'vae', pipeline: 'PipelineOptions', upscale: 'UpscaleSettings',
};

/** The README's table of `asgd generate` options (scripts/options-table.ts writes it; a test checks it). */
export function optionsTable(specs: readonly OptionSpec[]): string {
  const esc = (t: string) => t.replace(/\|/g, '\\|');
  const rows = specs.filter((s) => s.cli).map((s) => {
    const d = s.kind === 'boolean' ? '' : defaultText(s);
    const scope = s.methods ? `${s.methods.join('/')}: ` : '';
    const meaning = s.kind === 'boolean' && s.default === true ? s.offHelp ?? `do not ${s.help}` : s.help;
    const library = s.scope === 'cli' ? '' : `\`${s.scope === 'params' ? '' : `${SCOPE_OBJECT[s.scope]}.`}${s.key}\``;
    const choices = s.kind === 'choice' ? `: ${s.choices!.map((c) => `\`${c}\``).join(', ')}` : '';
    return `| \`${esc(flagText(s))}\` | ${library} | ${esc(d)} | ${esc(scope + meaning + choices)} |`;
  });
  return ['| option | library | default | meaning |', '| --- | --- | --- | --- |', ...rows].join('\n');
}
