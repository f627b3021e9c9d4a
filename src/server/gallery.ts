/**
 * The outputs folder as the server's gallery: which files are outputs, their embedded metadata and what an upscale
 * sees of them (each read once per version of the file), their thumbnails (made once, kept beside them), and
 * deletion. No HTTP here: app.ts turns the answers into replies.
 */
import fs from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import type { GenerationMetadata } from '../core/metadata.ts';
import { inspectSourceImage } from '../node/image/read.ts';
import { readImageMetadata } from '../node/image/write.ts';
import { OUTPUT_NAME } from './output-names.ts';

/** The side of a thumbnail's bounding square, in px. */
export const THUMB_SIZE = 256;

export interface OutputDescription {
  name: string;
  size: number;
  modified: string;
  metadata?: GenerationMetadata;
}

/** An output as an upscale sees it: its oriented size and embedded prompts. */
export type SourceView = Awaited<ReturnType<typeof inspectSourceImage>>;

export class OutputGallery {
  readonly dir: string;
  private readonly sources = new Map<string, { mtimeMs: number; bytes: number; seen?: SourceView }>();
  private readonly metadata = new Map<string, { mtimeMs: number; metadata?: GenerationMetadata }>();

  /** Creates the folder when missing. */
  constructor(dir: string) {
    this.dir = path.resolve(dir);
    fs.mkdirSync(this.dir, { recursive: true });
  }

  /** The path of output `name`: 'invalid' where the name cannot be an output's, 'missing' where there is none. */
  file(name: string): string | 'invalid' | 'missing' {
    if (!OUTPUT_NAME.test(name)) return 'invalid';
    const file = path.resolve(this.dir, name);
    if (path.dirname(file) !== this.dir || !fs.existsSync(file) || !fs.statSync(file).isFile()) return 'missing';
    return file;
  }

  /** Every output, newest first. */
  async list(): Promise<OutputDescription[]> {
    const names = fs.readdirSync(this.dir).filter((n) => OUTPUT_NAME.test(n) && fs.statSync(path.join(this.dir, n)).isFile());
    const outputs = await Promise.all(names.map((n) => this.describe(n)));
    return outputs.sort((a, b) => b.modified.localeCompare(a.modified) || b.name.localeCompare(a.name));
  }

  /** An output's size, time and embedded metadata (none where it holds none or cannot be read). */
  async describe(name: string): Promise<OutputDescription> {
    const file = path.join(this.dir, name);
    const st = fs.statSync(file);
    let cached = this.metadata.get(name);
    if (!cached || cached.mtimeMs !== st.mtimeMs) {
      let metadata: GenerationMetadata | undefined;
      try {
        metadata = (await readImageMetadata(file)).metadata;
      } catch {
        metadata = undefined;
      }
      cached = { mtimeMs: st.mtimeMs, metadata };
      this.metadata.set(name, cached);
    }
    return { name, size: st.size, modified: st.mtime.toISOString(), ...(cached.metadata ? { metadata: cached.metadata } : {}) };
  }

  /** What an upscale sees of output `name` at `file`; undefined where it is not a readable image. */
  async source(name: string, file: string): Promise<SourceView | undefined> {
    const st = fs.statSync(file);
    let cached = this.sources.get(name);
    if (!cached || cached.mtimeMs !== st.mtimeMs || cached.bytes !== st.size) {
      let seen: SourceView | undefined;
      try {
        seen = await inspectSourceImage(file);
      } catch {
        seen = undefined;
      }
      cached = { mtimeMs: st.mtimeMs, bytes: st.size, ...(seen ? { seen } : {}) };
      this.sources.set(name, cached);
    }
    return cached.seen;
  }

  /**
   * The WebP thumbnail of output `name` at `file`, made when missing or older than the file; undefined where the
   * file is not a readable image.
   */
  async thumbnail(name: string, file: string): Promise<Buffer | undefined> {
    const thumbs = path.join(this.dir, '.thumbnails');
    const thumb = path.join(thumbs, `${name}.webp`);
    if (!fs.existsSync(thumb) || fs.statSync(thumb).mtimeMs < fs.statSync(file).mtimeMs) {
      fs.mkdirSync(thumbs, { recursive: true });
      let bytes: Buffer;
      try {
        // Turned as its EXIF orientation says, as the upscale reads it.
        bytes = await sharp(file).autoOrient().resize(THUMB_SIZE, THUMB_SIZE, { fit: 'inside', withoutEnlargement: true }).webp().toBuffer();
      } catch {
        return undefined;
      }
      const tmp = `${thumb}.${process.pid}.tmp`;
      fs.writeFileSync(tmp, bytes);
      fs.renameSync(tmp, thumb);
    }
    return fs.readFileSync(thumb);
  }

  /** Deletes output `name` at `file` and its thumbnail. */
  remove(name: string, file: string): void {
    fs.rmSync(file);
    fs.rmSync(path.join(this.dir, '.thumbnails', `${name}.webp`), { force: true });
    this.metadata.delete(name);
    this.sources.delete(name);
  }
}
