/**
 * The API's routes as data (method, path, schemas, responses, handler), from which app.ts registers them with
 * Fastify and writes the OpenAPI document: one description serves validation and documentation.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { PACKAGE_VERSION } from '../node/version.ts';
import { errorSchema, type JsonSchema } from './schema.ts';

export interface Route {
  method: 'GET' | 'POST' | 'PATCH' | 'DELETE';
  url: string;
  summary: string;
  body?: JsonSchema;
  /** Query parameters by name (strings: the query is validated as sent, without type coercion). */
  query?: Record<string, JsonSchema>;
  /** A body that is not JSON: the content types taken (the route's own parser is registered), and a size limit. */
  rawBody?: { types: readonly string[]; limit: number };
  /** `type`: the content type when not JSON; `schema` describes the body (for an event stream: each event's data). */
  responses: Record<string, { description: string; schema?: JsonSchema; type?: string }>;
  handler: (req: FastifyRequest, reply: FastifyReply) => Promise<unknown>;
}

/** A route's URL as a pattern of paths (each :param one segment). */
export function routePattern(url: string): RegExp {
  return new RegExp(`^${url.split('/').map((seg) => (seg.startsWith(':') ? '[^/]+' : seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))).join('/')}/?$`);
}

/** What any route with a JSON body can answer besides its own responses. */
const jsonBodyResponses: Route['responses'] = {
  400: { description: 'the body is not JSON, or holds a prototype-poisoning key', schema: errorSchema },
  413: { description: 'the body is larger than the limit (1 MiB unless the server sets another)', schema: errorSchema },
  415: { description: 'a content type other than application/json', schema: errorSchema },
};

export function openApiDocument(routes: Route[]): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const p = r.url.replace(/:(\w+)/g, '{$1}');
    const names = [...r.url.matchAll(/:(\w+)/g)].map((m) => m[1]!);
    paths[p] ??= {};
    paths[p][r.method.toLowerCase()] = {
      summary: r.summary,
      ...(names.length || r.query
        ? { parameters: [...names.map((n) => ({ name: n, in: 'path', required: true, schema: { type: 'string' } })), ...Object.entries(r.query ?? {}).map(([n, schema]) => ({ name: n, in: 'query', required: false, schema }))] }
        : {}),
      ...(r.body ? { requestBody: { required: true, content: { 'application/json': { schema: r.body } } } } : {}),
      ...(r.rawBody ? { requestBody: { required: true, content: Object.fromEntries(r.rawBody.types.map((t) => [t, { schema: { type: 'string', format: 'binary' } }])) } } : {}),
      responses: Object.fromEntries(Object.entries({ ...(r.body ? jsonBodyResponses : {}), ...r.responses }).map(([code, v]) => [code, {
        description: v.description,
        ...(v.schema || v.type ? { content: { [v.type ?? 'application/json']: v.schema ? { schema: v.schema } : {} } } : {}),
      }])),
    };
  }
  return {
    openapi: '3.1.0',
    info: { title: 'asgdiffusion', version: PACKAGE_VERSION, description: 'Queue high-resolution Stable Diffusion generations and browse the outputs. Seeds are decimal strings.' },
    paths,
  };
}
