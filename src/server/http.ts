/** Small HTTP helpers of the server: content types, the Host header, and comparing secrets. */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { createHash, timingSafeEqual } from 'node:crypto';
import path from 'node:path';

/** The media type of a request's body (its content-type without parameters), lower case; '' when none. */
export function mediaType(req: FastifyRequest): string {
  return String(req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
}

/** 415 naming the content-type header, what the route takes and what was sent. */
export function unsupportedType(req: FastifyRequest, reply: FastifyReply, types: readonly string[]): FastifyReply {
  return reply.code(415).send({ error: 'unsupported-media-type', field: 'content-type', message: `Invalid content-type; expected ${types.join(', ')}; received ${mediaType(req) || 'none'}` });
}

/** A Host header as URL.host writes it (no default port). */
export function normalHost(host: string): string {
  try {
    return new URL(`http://${host}`).host;
  } catch {
    return host;
  }
}

/** The content type of a file of the page, by its extension. */
export function contentType(file: string): string {
  const ext = path.extname(file).toLowerCase();
  const types: Record<string, string> = {
    '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8',
    '.svg': 'image/svg+xml', '.png': 'image/png', '.json': 'application/json', '.ico': 'image/x-icon', '.webp': 'image/webp',
  };
  return types[ext] ?? 'application/octet-stream';
}

/** Compares a presented token with the server's in time that does not depend on where they differ. */
export function sameSecret(presented: string | null | undefined, expected: string): boolean {
  if (typeof presented !== 'string') return false;
  // Hashing first gives both sides one length, so the length of the token leaks no more than its content.
  return timingSafeEqual(createHash('sha256').update(presented).digest(), createHash('sha256').update(expected).digest());
}
