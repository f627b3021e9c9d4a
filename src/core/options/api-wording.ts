/**
 * Library messages in the words of an API caller: the CLI flags a message names (`--scheduler`, `-W/-H`) become the
 * settings' names (`scheduler`, `width/height`), for the HTTP API and the browser pipeline, whose callers set those.
 * Portable: no Node APIs.
 */
import { METHOD_OPTIONS, PARAM_OPTIONS, UPSCALE_OPTIONS, VAE_OPTIONS } from './registry.ts';
import type { OptionSpec } from './spec.ts';

/** Each CLI flag of a setting the API takes (long and short), and the request field it is there. */
const FLAG_FIELDS: [RegExp, string][] = (() => {
  const fields: [OptionSpec, string][] = [
    ...[...PARAM_OPTIONS, ...UPSCALE_OPTIONS].map((s): [OptionSpec, string] => [s, s.key]),
    ...METHOD_OPTIONS.map((s): [OptionSpec, string] => [s, `methodOptions.${s.key}`]),
    ...VAE_OPTIONS.map((s): [OptionSpec, string] => [s, `vae.${s.key}`]),
  ];
  return fields.flatMap(([s, field]) => [s.cli?.flag, s.cli?.short].filter((f): f is string => f !== undefined)
    .map((flag): [RegExp, string] => [new RegExp(`(?<=^|[\\s(/'"\`])${flag}(?=$|[\\s)/,.;:'"\`])`, 'g'), field]));
})();

/**
 * A library message in the API's words: the CLI flags it names (`--scheduler`, `-W/-H`) become the settings'
 * names (`scheduler`, `width/height`; method options as `methodOptions.<name>`, VAE options as `vae.<name>`). Flags
 * of what a generation cannot set (`--devices`) stay: they speak to whoever runs the server or loads the pipeline.
 */
export function apiWording(message: string): string {
  let out = message;
  for (const [flag, field] of FLAG_FIELDS) out = out.replace(flag, field);
  return out;
}
