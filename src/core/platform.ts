/**
 * The few web-standard globals the portable core uses, typed here so that the core compiles with no Node or DOM
 * types (tsconfig.core.json) while running unchanged on Node, in browsers and in workers, which all have them.
 */

/** The part of `AbortSignal` the core reads; a real AbortSignal satisfies it. */
export interface AbortSignalLike {
  readonly aborted: boolean;
  addEventListener(type: 'abort', listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: 'abort', listener: () => void): void;
}

interface TextEncoderLike {
  encode(text: string): Uint8Array;
}
interface TextDecoderLike {
  decode(bytes: Uint8Array): string;
}

const globals = globalThis as unknown as {
  TextEncoder: new () => TextEncoderLike;
  TextDecoder: new (label?: string) => TextDecoderLike;
};

export function utf8Encode(text: string): Uint8Array {
  return new globals.TextEncoder().encode(text);
}

export function textDecoder(label: 'utf-8' | 'latin1' | 'utf-16be' | 'utf-16le'): TextDecoderLike {
  return new globals.TextDecoder(label);
}

interface ZlibGlobals {
  Blob: new (parts: Uint8Array[]) => { stream(): { pipeThrough(transform: unknown): unknown } };
  DecompressionStream: new (format: 'deflate') => unknown;
  Response: new (body: unknown) => { arrayBuffer(): Promise<ArrayBuffer> };
}

/** Inflates zlib data with the platform's DecompressionStream (browsers, workers, Node >= 18); rejects on damaged data. */
export async function inflateZlib(data: Uint8Array): Promise<Uint8Array> {
  const g = globalThis as unknown as ZlibGlobals;
  const stream = new g.Blob([data]).stream().pipeThrough(new g.DecompressionStream('deflate'));
  return new Uint8Array(await new g.Response(stream).arrayBuffer());
}
