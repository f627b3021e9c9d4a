/**
 * `asgd`: the command-line tool (generate, upscale, read, info, devices, tune, serve, worker; each command runs from
 * a file of its own, this one builds the program). Every failure prints one clear message on stderr and exits with
 * a code from exit-codes.ts; outputs are written atomically.
 */
import { Command, CommanderError, Option } from 'commander';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AsgdError, invalidArgument } from '../core/errors.ts';
import { EXIT, exitCodeFor } from './exit-codes.ts';
import { addOptions, givenValues, helpText } from './options.ts';
import { ALL_OPTIONS, CLI_OPTIONS, PIPELINE_OPTIONS, UPSCALE_COMMAND_OPTIONS, optionSpec } from '../core/options/registry.ts';
import { RUNTIME_LOG_ENV } from '../onnx/runtime-log.ts';
import type { PipelineOptions } from '../node/pipeline.ts';
import { PACKAGE_VERSION } from '../node/version.ts';
import { defaultModelDir } from './model-dir.ts';
import { runGenerate, runUpscale } from './generate.ts';
import { INFO_PIPELINE_OPTIONS, runDevices, runInfo, runRead, runTune, TUNE_PIPELINE_OPTIONS, wholeFlag, workersFlag, type TuneFlags } from './inspect.ts';
import { parseMaxPixels, runServe, runWorker } from './servers.ts';

export function buildProgram(setExit: (code: number) => void): Command {
  const program = new Command('asgd')
    .description('High-resolution images from Stable Diffusion ONNX models with ASGDiffusion, on one or several devices')
    .version(PACKAGE_VERSION)
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();

  const generate = program
    .command('generate')
    .description('Generate an image (default method: asg, the high-resolution method)');
  addOptions(generate, ALL_OPTIONS);
  generate.action(async (_flags: unknown, cmd: Command) => setExit(await runGenerate(cmd)));

  const upscale = program
    .command('upscale')
    .description('Upscale an image: resize, re-noise to --strength and denoise at the new size (default method: asg, structure from the input)')
    .argument('[image]', 'the image to upscale (PNG, JPEG or WebP)');
  addOptions(upscale, UPSCALE_COMMAND_OPTIONS);
  upscale.action(async (image: string | undefined, _flags: unknown, cmd: Command) => setExit(await runUpscale(image, cmd)));

  const serveCmd = program
    .command('serve')
    .description('Start the web app and its HTTP API (http://127.0.0.1:7860 by default)')
    .addOption(new Option('--port <n>', 'port').default(7860).argParser((v: string) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0 || n > 65535) throw invalidArgument('--port', 'an integer in [0, 65535]', v);
      return n;
    }))
    .option('--host <address>', 'address to listen on (other than loopback requires a token)', '127.0.0.1')
    .option('--outputs <dir>', 'the gallery: outputs and the queue state are kept here', 'outputs')
    .addOption(new Option(`-m, --model <dir...>`, helpText(CLI_OPTIONS.find((s) => s.key === 'model')!)))
    .option('--token <token>', 'require this token on API requests (generated and printed for a non-loopback host)')
    .option('--queue <address>', 'a Redis address (redis://HOST:PORT, unix:///PATH): jobs run on `asgd worker`s (see docs/fleet.md)')
    .option('--prefix <name>', 'key prefix in Redis, to keep several fleets apart', 'asgd');
  addOptions(serveCmd, [...PIPELINE_OPTIONS, optionSpec(CLI_OPTIONS, 'verbose')]);
  serveCmd.action(async (_flags: unknown, cmd: Command) => setExit(await runServe(cmd)));

  const workerCmd = program
    .command('worker')
    .description("Take jobs from a fleet's queue (started by `asgd serve --queue`) and run them; any number on any machines")
    .requiredOption('--queue <address>', 'the Redis address the server uses (redis://HOST:PORT, rediss://, unix:///PATH)')
    .option('--outputs <dir>', "the server's outputs folder, shared with this machine (outputs are written there)", 'outputs')
    .addOption(new Option(`-m, --model <dir...>`, helpText(CLI_OPTIONS.find((s) => s.key === 'model')!)))
    .option('--prefix <name>', 'key prefix in Redis (as the server\'s)', 'asgd')
    .addOption(new Option('--max-pixels <n>', 'the largest width x height this worker takes: a number, or METHOD=N pairs (e.g. direct=1048576,asg=16777216)').argParser(parseMaxPixels));
  addOptions(workerCmd, [...PIPELINE_OPTIONS, optionSpec(CLI_OPTIONS, 'verbose')]);
  workerCmd.action(async (_flags: unknown, cmd: Command) => setExit(await runWorker(cmd)));

  const infoCmd = program
    .command('info')
    .description('Show what the loader finds in a model folder (on --devices: what it notes for those devices)')
    .argument('[model]', 'model folder', undefined)
    .option('--json', 'machine-readable output')
    .option('--no-probe', 'skip building the attention probe');
  addOptions(infoCmd, INFO_PIPELINE_OPTIONS);
  infoCmd.action(async (dir: string | undefined, opts: { json?: boolean; probe?: boolean }, cmd: Command) =>
    setExit(await runInfo(dir ?? defaultModelDir(), opts, givenValues(cmd, INFO_PIPELINE_OPTIONS) as PipelineOptions)));

  const tuneCmd = program
    .command('tune')
    .description('Time the UNet on a device and say which loading settings are fastest there (--fuse-attention, --split-cfg, --probe-session, and how many workers)')
    .argument('[model]', 'model folder', undefined)
    .option('--json', 'machine-readable output')
    .addOption(new Option('--iters <n>', 'timed calls of each kind').default(10).argParser(wholeFlag('--iters', 1)))
    .addOption(new Option('--warmup <n>', 'untimed calls before them').default(2).argParser(wholeFlag('--warmup', 0)))
    .addOption(new Option('--latent <n>', "latent side of the calls (default: the model's native one)").argParser(wholeFlag('--latent', 8)))
    .addOption(new Option('--workers <list>', 'worker counts to time a short generation with, e.g. 1,2,4 (CPU lists: by default 1, 2, 4, ... up to the cores, at most 8, or none; a GPU list: its first device repeated, only when given)').argParser(workersFlag));
  addOptions(tuneCmd, [...TUNE_PIPELINE_OPTIONS, optionSpec(CLI_OPTIONS, 'verbose')]);
  tuneCmd.action(async (dir: string | undefined, opts: TuneFlags, cmd: Command) =>
    setExit(await runTune(dir ?? defaultModelDir(), opts, givenValues(cmd, TUNE_PIPELINE_OPTIONS) as PipelineOptions)));

  program
    .command('devices')
    .description('List the execution providers this machine offers')
    .option('--json', 'machine-readable output')
    .option('--verbose', optionSpec(CLI_OPTIONS, 'verbose').help)
    .action(async (opts: { json?: boolean }) => setExit(await runDevices(opts)));

  // Device workers read the runtime's log level from the environment (src/onnx/runtime-log.ts).
  program.hook('preAction', (_program, action) => {
    if (action.opts()['verbose'] === true) process.env[RUNTIME_LOG_ENV] ||= 'warning';
  });

  program
    .command('read')
    .description('Print the generation parameters embedded in an image')
    .argument('<image>', 'an image written by asgd generate')
    .option('--json', 'print the JSON metadata')
    .action(async (file: string, opts: { json?: boolean }) => setExit(await runRead(file, opts)));

  return program;
}

export async function main(argv: string[]): Promise<number> {
  let code = EXIT.ok;
  const program = buildProgram((c) => (code = c));
  try {
    await program.parseAsync(argv, { from: 'user' });
    return code;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help asked for (--help, asgd help) is a success; help shown because the command is missing is not.
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || (err.code === 'commander.help' && err.exitCode === 0)) return EXIT.ok;
      return EXIT['invalid-argument'];
    }
    err = withFlagName(err);
    const msg = err instanceof Error ? err.message : String(err);
    process.stderr.write(`asgd: ${msg}\n`);
    if (!(err instanceof AsgdError) && err instanceof Error && process.env['ASGD_DEBUG']) process.stderr.write(`${err.stack}\n`);
    return exitCodeFor(err);
  }
}

/**
 * A library error about a setting ("Invalid seed", "Invalid vae.overlap"), named by the flag the user gave instead
 * (--seed, --vae-tile-overlap): same expected, received and hint.
 */
function withFlagName(err: unknown): unknown {
  if (!(err instanceof AsgdError) || err.kind !== 'invalid-argument' || !err.parameter) return err;
  const [prefix, key] = err.parameter.includes('.') ? err.parameter.split('.', 2) : [undefined, err.parameter];
  const scope = prefix === 'vae' ? 'vae' : prefix === 'methodOptions' ? 'method' : undefined;
  if (prefix !== undefined && scope === undefined) return err;
  const spec = ALL_OPTIONS.find((s) => s.cli && s.key === key && (scope === undefined || s.scope === scope));
  const named = `Invalid ${err.parameter}`;
  if (!spec?.cli || !err.summary.startsWith(named)) return err;
  return new AsgdError(`Invalid ${spec.cli.flag}${err.summary.slice(named.length)}`, {
    kind: err.kind, parameter: spec.cli.flag, expected: err.expected, received: err.received, hint: err.hint, cause: err.cause,
  });
}

const invokedDirectly = process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (invokedDirectly) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
