/** What every part of the page shares: the API's types as the page reads them, the API itself, and DOM helpers. */
import type { GenerationProgress } from '../../src/core/generation/progress.ts';
import type { GenerationMetadata } from '../../src/core/metadata.ts';

export type Schema = {
  type?: string | string[];
  enum?: string[];
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  pattern?: string;
  default?: unknown;
  description?: string;
  properties?: Record<string, Schema>;
  required?: string[];
  items?: Schema;
};

/** Progress as the API sends it: the library's (its phase also 'load' and 'save'), the ETA and the preview's revision. */
export type Progress = Omit<GenerationProgress, 'phase'> & { phase: string; etaSeconds?: number; previewRevision: number };

export interface Job {
  id: string;
  state: 'queued' | 'running' | 'completed' | 'failed' | 'cancelled';
  /** The queue it waits in (a device set; in a fleet, a model's queue): positions count within it. */
  lane: string;
  spec: { kind: string; model?: string; settings: Record<string, unknown> };
  progress?: Progress;
  output?: string;
  error?: { message: string };
  /** What the run warned of, once completed (GET /api/v1/openapi.json: job.warnings). */
  warnings?: string[];
}

/** The generation settings embedded in an output (the library's own record). */
export type Metadata = GenerationMetadata;

export interface ModelEntry {
  name: string;
  nativeWidth?: number;
  nativeHeight?: number;
}

export interface Output {
  name: string;
  modified: string;
  metadata?: Metadata;
}

export const $ = <T extends HTMLElement>(sel: string): T => {
  const el = document.querySelector<T>(sel);
  if (!el) throw new Error(`missing ${sel}`);
  return el;
};

/** Fire and forget: a request that fails while the server is away is retried by the next poll. */
export function quietly(p: Promise<unknown>): void {
  p.catch(() => $('#devices').classList.add('offline'));
}

const token = new URLSearchParams(location.search).get('token');
/** Whether the page's address carries a token. */
export function apiTokenGiven(): boolean {
  return token !== null;
}
export function apiUrl(path: string): string {
  const url = `/api/v1${path}`;
  return token ? `${url}${url.includes('?') ? '&' : '?'}token=${encodeURIComponent(token)}` : url;
}
export async function api<T>(path: string, init: RequestInit = {}): Promise<{ status: number; body: T }> {
  const res = await fetch(apiUrl(path), { ...init, headers: { ...(init.body ? { 'content-type': 'application/json' } : {}), ...init.headers } });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T };
}

/** A field's label from its key: `methodOptions.stageSplit` -> "Stage split". */
export function label(key: string): string {
  const leaf = key.split('.').at(-1)!;
  const words = leaf.replace(/([A-Z])/g, ' $1').toLowerCase();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

export function button(text: string, id: string, onClick: () => void | Promise<void>): HTMLButtonElement {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = text;
  b.id = id;
  b.addEventListener('click', () => {
    const r = onClick();
    if (r) quietly(r);
  });
  return b;
}

/** "N UNet evaluations · about T" (the time once the server has measured a job). */
export function describeCost(units: number, seconds: number | undefined): string {
  const time = seconds === undefined ? '' : ` · about ${seconds < 60 ? `${Math.ceil(seconds)} s` : `${Math.round(seconds / 60)} min`}`;
  return `${units} UNet evaluations${time}`;
}
