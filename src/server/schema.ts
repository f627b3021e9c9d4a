/**
 * JSON schemas of the API, built from the option registry (core/options/registry.ts): names, kinds, defaults,
 * ranges, choices and help come from there, so the API, the CLI and the README cannot disagree. The seed is a
 * decimal string (seeds go up to 2^64 - 1, beyond JSON's exact integers).
 */
import { METHOD_OPTIONS, PARAM_OPTIONS, UPSCALE_COMMAND_DIFFERENCES, UPSCALE_OPTIONS, VAE_OPTIONS } from '../core/options/registry.ts';
import type { OptionSpec } from '../core/options/spec.ts';

export type JsonSchema = Record<string, unknown>;

/** The JSON schema of one option. */
export function optionSchema(s: OptionSpec): JsonSchema {
  let out: JsonSchema;
  switch (s.kind) {
    case 'number':
    case 'integer':
      out = { type: s.kind };
      if (s.min !== undefined) out[s.exclusiveMin ? 'exclusiveMinimum' : 'minimum'] = s.min;
      if (s.max !== undefined) out['maximum'] = s.max;
      break;
    case 'boolean':
      out = { type: 'boolean' };
      break;
    case 'choice':
      out = { type: 'string', enum: [...s.choices!] };
      break;
    case 'string':
      out = { type: 'string' };
      break;
    case 'list':
      out = { type: 'array', items: { type: 'string' } };
      break;
  }
  if (s.nullable) out['type'] = [out['type'], 'null'];
  const scope = s.methods ? ` (${s.methods.join(', ')})` : '';
  out['description'] = `${s.help}${scope}${s.defaultText ? `; default: ${s.defaultText}` : ''}`;
  if (s.default !== undefined) out['default'] = s.default;
  return out;
}

/** Overrides of the plain mapping where JSON needs another form than the library's value. */
const PARAM_FORMS: Record<string, JsonSchema> = {
  // 0 .. 2^64 - 1 as decimal digits; the exact range is checked by the library.
  seed: { type: 'string', pattern: '^[0-9]{1,20}$' },
  originalSize: { type: 'string', pattern: '^[0-9]{1,5}x[0-9]{1,5}$' },
};

function objectSchema(specs: readonly OptionSpec[], description: string): JsonSchema {
  return {
    type: 'object',
    description,
    additionalProperties: false,
    properties: Object.fromEntries(specs.map((s) => [s.key, optionSchema(s)])),
  };
}

/** The body of POST /api/v1/jobs: the generation settings under the library's names, and the model's name. */
export function generateRequestSchema(): JsonSchema {
  const properties: Record<string, JsonSchema> = {
    model: { type: 'string', description: 'model name (GET /api/v1/models); default: the first' },
  };
  for (const s of PARAM_OPTIONS) {
    const base = optionSchema(s);
    properties[s.key] = PARAM_FORMS[s.key] ? { ...PARAM_FORMS[s.key], description: base['description'] } : base;
  }
  properties['methodOptions'] = objectSchema(METHOD_OPTIONS, 'options of the high-resolution method');
  properties['vae'] = objectSchema(VAE_OPTIONS, 'VAE decoding');
  return {
    type: 'object',
    additionalProperties: false,
    required: PARAM_OPTIONS.filter((s) => s.key === 'prompt').map((s) => s.key),
    properties,
  };
}

/**
 * The body of POST /api/v1/outputs/{name}/upscale: the upscale settings (scale or width/height, strength,
 * structure source, pixel limit) and the generation settings, all optional; the prompt defaults to the one embedded
 * in the source image.
 */
export function upscaleRequestSchema(): JsonSchema {
  const base = generateRequestSchema() as { properties: Record<string, JsonSchema> };
  const properties: Record<string, JsonSchema> = { ...base.properties };
  for (const s of UPSCALE_OPTIONS) properties[s.key] = optionSchema(s);
  // The size the upscale makes (any, at least the input's), the prompts' and the scheduler's defaults.
  for (const [key, change] of Object.entries(UPSCALE_COMMAND_DIFFERENCES)) {
    const spec = PARAM_OPTIONS.find((s) => s.key === key);
    if (spec) properties[key] = optionSchema({ ...spec, ...change } as OptionSpec);
  }
  return { type: 'object', additionalProperties: false, properties };
}

export const progressSchema: JsonSchema = {
  type: 'object',
  properties: {
    phase: { type: 'string', enum: ['load', 'text', 'encode', 'denoise', 'decode', 'save'] },
    stage: { type: 'integer' },
    step: { type: 'integer' },
    totalSteps: { type: 'integer' },
    unitsDone: { type: 'integer' },
    unitsTotal: { type: 'integer' },
    tilesDone: { type: 'integer' },
    tilesTotal: { type: 'integer' },
    etaSeconds: { type: 'number' },
    previewRevision: { type: 'integer' },
    devices: {
      type: 'array',
      description: "what each device of the engine's device set is doing, in the order of the device list (absent before the model is loaded)",
      items: {
        type: 'object',
        required: ['id', 'busy', 'calls'],
        properties: {
          id: { type: 'string', description: 'the device label: cpu#0, cpu#1, cuda:0, webgpu:0' },
          busy: { type: 'boolean', description: 'running a model call now' },
          calls: { type: 'integer', description: 'UNet calls it completed in this job' },
          lost: { type: 'boolean', description: 'given up after a failure' },
        },
      },
    },
  },
};

export const jobSchema: JsonSchema = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    state: { type: 'string', enum: ['queued', 'running', 'completed', 'failed', 'cancelled'] },
    spec: { type: 'object', properties: { kind: { type: 'string', enum: ['generate', 'upscale'] }, model: { type: 'string' }, settings: { type: 'object' }, size: { type: 'object', description: 'the size an upscale denoises (from its source)', properties: { width: { type: 'integer' }, height: { type: 'integer' } } } } },
    lane: { type: 'string', description: 'the device set that runs it' },
    createdAt: { type: 'string', format: 'date-time' },
    startedAt: { type: 'string', format: 'date-time' },
    finishedAt: { type: 'string', format: 'date-time' },
    attempts: { type: 'integer' },
    progress: progressSchema,
    output: { type: 'string', description: 'output file name (GET /api/v1/outputs/{name})' },
    warnings: { type: 'array', items: { type: 'string' }, description: "what the run warned of (a prompt cut to the model's length, a scheduler replaced, ...), once completed; absent when nothing" },
    error: { type: 'object', properties: { message: { type: 'string' }, kind: { type: 'string' }, parameter: { type: 'string' } } },
  },
};

/** The data of the events of GET /api/v1/jobs/{id}/events: `state` carries the job, `progress` its progress. */
export const jobEventSchema: JsonSchema = {
  description: 'Each event has an `id` (resume with Last-Event-ID), an `event` name and JSON `data`: for `event: state` the job (as GET /api/v1/jobs/{id}), for `event: progress` its progress (phase, stage, step, units, ETA, preview revision, devices).',
  oneOf: [jobSchema, progressSchema],
};

export const moveRequestSchema: JsonSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['position'],
  properties: { position: { type: 'integer', minimum: 0, description: 'new place among the queued jobs of its lane (0: next)' } },
};

export const errorSchema: JsonSchema = {
  type: 'object',
  properties: { error: { type: 'string' }, message: { type: 'string' }, field: { type: 'string' } },
};

/** An uploaded picture as the gallery holds it (`created` false: the same bytes were uploaded before). */
export const uploadSchema: JsonSchema = {
  type: 'object',
  properties: { name: { type: 'string' }, width: { type: 'integer' }, height: { type: 'integer' }, created: { type: 'boolean' } },
};

export const outputSchema: JsonSchema = {
  type: 'object',
  properties: {
    name: { type: 'string' },
    size: { type: 'integer' },
    modified: { type: 'string', format: 'date-time' },
    metadata: { type: 'object', description: "the generation's settings embedded in the file" },
  },
};
