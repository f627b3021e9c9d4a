/**
 * The API's error answers: `{ error, field?, message }`, the message naming the field, what was expected and what
 * was received, as the library's errors do. Schema (Ajv) failures, the library's own errors and Fastify's
 * built-in ones (a body that is not JSON, too large, of another content type) all answer in this shape.
 */
import { describe } from '../core/errors.ts';
import { METHOD_OPTIONS } from '../core/options/registry.ts';
import { apiWording } from '../core/options/api-wording.ts';
import type { JsonSchema } from './schema.ts';

export { apiWording };

export interface ApiErrorBody {
  error: string;
  field?: string;
  message: string;
}

/** An error that answers with its own status and body. */
export class ApiError extends Error {
  constructor(readonly status: number, readonly body: ApiErrorBody) {
    super(body.message);
  }
}

/** An Ajv error as Fastify passes it; `data` and `parentSchema` are there with Ajv's `verbose` option. */
export interface SchemaError {
  keyword: string;
  instancePath: string;
  params: Record<string, unknown>;
  message?: string;
  data?: unknown;
  parentSchema?: JsonSchema;
}

/** What values of fields with a pattern look like, in words (the pattern itself says little to a person). */
const PATTERN_TEXT: Record<string, string> = {
  seed: 'a decimal string of an integer 0 .. 2^64-1',
  originalSize: 'WIDTHxHEIGHT in pixels, e.g. "1024x1024"',
  finished: 'a whole number of at most 6 digits',
};

const RECEIVED_MAX = 80;

/** A received value for a message, cut short when long. */
export function received(value: unknown): string {
  const text = describe(value);
  return text.length > RECEIVED_MAX ? `${text.slice(0, RECEIVED_MAX)}... (${text.length} characters)` : text;
}

/** A JSON schema in words: "one of a, b", "an integer in [1, 1000]", the description of a patterned string. */
export function expectedOf(schema: JsonSchema | undefined, field: string): string {
  if (!schema) return 'a valid value';
  const types = (Array.isArray(schema['type']) ? schema['type'] : [schema['type']]) as (string | undefined)[];
  const orNull = types.includes('null') ? ' (or null)' : '';
  const type = types.find((t) => t !== 'null');
  if (Array.isArray(schema['enum'])) return `one of ${(schema['enum'] as unknown[]).map(String).join(', ')}${orNull}`;
  if (type === 'number' || type === 'integer') {
    const lo = (schema['exclusiveMinimum'] ?? schema['minimum']) as number | undefined;
    const hi = schema['maximum'] as number | undefined;
    const open = schema['exclusiveMinimum'] !== undefined;
    const range = lo !== undefined && hi !== undefined ? ` in ${open ? '(' : '['}${lo}, ${hi}]` : lo !== undefined ? ` ${open ? '>' : '>='} ${lo}` : hi !== undefined ? ` <= ${hi}` : '';
    return `${type === 'integer' ? 'an integer' : 'a number'}${range}${orNull}`;
  }
  if (type === 'string' && schema['pattern'] !== undefined) {
    const name = field.split('.').at(-1)!;
    return PATTERN_TEXT[name] ?? (typeof schema['description'] === 'string' ? schema['description'] : `a string matching ${String(schema['pattern'])}`);
  }
  const plain: Record<string, string> = { string: 'a string', boolean: 'true or false', array: 'a list', object: 'an object' };
  return `${(type && plain[type]) ?? 'a valid value'}${orNull}`;
}

/**
 * The answer to a schema failure of the request's `part` ('body', 'querystring', 'params'): the field as its path
 * in the body (methodOptions.windowStride), what the schema expects and what was sent.
 */
export function schemaErrorBody(v: SchemaError, part: string | undefined): ApiErrorBody {
  const missing = v.params['missingProperty'] as string | undefined;
  const extra = v.params['additionalProperty'] as string | undefined;
  const path = v.instancePath.split('/').filter(Boolean).map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
  const field = [...path, ...(missing ?? extra ? [(missing ?? extra)!] : [])].join('.') || (part === 'querystring' ? 'query' : part ?? 'body');
  const properties = (v.parentSchema?.['properties'] ?? {}) as Record<string, JsonSchema>;
  if (extra !== undefined) {
    const value = (v.data as Record<string, unknown> | undefined)?.[extra];
    return { error: 'invalid-argument', field, message: `Invalid ${field}: not a known setting; expected one of ${Object.keys(properties).join(', ')}; received ${received(value)}` };
  }
  if (missing !== undefined) {
    const what = properties[missing];
    const description = typeof what?.['description'] === 'string' ? ` (${what['description']})` : '';
    return { error: 'invalid-argument', field, message: `Invalid ${field}: it is required; expected ${expectedOf(what, field)}${description}; received nothing` };
  }
  return { error: 'invalid-argument', field, message: `Invalid ${field}; expected ${expectedOf(v.parentSchema, field)}; received ${received(v.data)}` };
}

/**
 * A library error's parameter as the field of the request body: method options are named alone by the library
 * (windowStride), the API names their place (methodOptions.windowStride), as its schema errors do.
 */
export function bodyField(parameter: string | undefined): string | undefined {
  if (parameter === undefined) return undefined;
  return METHOD_OPTIONS.some((s) => s.key === parameter) ? `methodOptions.${parameter}` : parameter;
}

function bytes(n: number): string {
  return n >= 1024 * 1024 && n % (1024 * 1024) === 0 ? `${n / (1024 * 1024)} MiB` : n >= 1024 && n % 1024 === 0 ? `${n / 1024} KiB` : `${n} bytes`;
}

/**
 * Fastify's own errors (code FST_ERR_...) in the API's shape; undefined for others. `limit` is the route's body
 * limit, `contentType` what was sent.
 */
export function fastifyErrorBody(code: string | undefined, o: { limit?: number; contentType: string; expectedTypes: string }): { status: number; body: ApiErrorBody } | undefined {
  switch (code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return { status: 413, body: { error: 'payload-too-large', field: 'body', message: `Invalid body: too large; expected at most ${o.limit !== undefined ? bytes(o.limit) : 'the size limit'}; received more` } };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return { status: 415, body: { error: 'unsupported-media-type', field: 'content-type', message: `Invalid content-type; expected ${o.expectedTypes}; received ${o.contentType || 'none'}` } };
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return { status: 400, body: { error: 'invalid-json', field: 'body', message: 'Invalid body; expected a JSON object; received an empty body (with content-type application/json)' } };
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return { status: 400, body: { error: 'bad-request', field: 'content-length', message: 'Invalid content-length; expected the length of the body sent; received another' } };
    default:
      return undefined;
  }
}

/** The answer for a JSON body that does not parse, or that parses but holds a prototype-poisoning key. */
export function jsonBodyError(text: string): ApiError {
  try {
    JSON.parse(text);
  } catch (err) {
    return new ApiError(400, { error: 'invalid-json', field: 'body', message: `Invalid body; expected JSON; received text that does not parse as JSON (${(err as Error).message})` });
  }
  return new ApiError(400, {
    error: 'forbidden-key', field: 'body',
    message: 'Invalid body; expected JSON without "__proto__" or "constructor": {"prototype"} keys (refused: they could alter objects\' prototypes); received a body with one',
  });
}

/**
 * A run's error as a job reports it: the outputs folder's absolute path left out of the message (an output is
 * named as the API names it), the CLI's flags named as the API's fields (apiWording), and for an upscale the source
 * image's parameter as the API's (`name`, the output it was asked for). Other errors as they are.
 */
export function jobErrorOf<E>(err: E, outputsDir: string, kind: 'generate' | 'upscale'): E | { message: string; kind?: string; parameter?: string } {
  const e = err as { message?: unknown; kind?: string; parameter?: string } | null;
  if (!e || typeof e.message !== 'string') return err;
  const folder = outputsDir.endsWith('/') || outputsDir.endsWith('\\') ? outputsDir : `${outputsDir}${outputsDir.includes('\\') ? '\\' : '/'}`;
  const parameter = kind === 'upscale' && e.parameter === 'image' ? 'name' : e.parameter;
  const message = apiWording(e.message.split(folder).join('').split(outputsDir).join('the outputs folder'));
  if (message === e.message && parameter === e.parameter) return err;
  return { message, ...(e.kind ? { kind: e.kind } : {}), ...(parameter ? { parameter } : {}) };
}
