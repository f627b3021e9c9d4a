/**
 * Regions of a KernelMemory handed out and returned one by one, for work whose buffers live for different spans (the
 * stage-2 windows' outputs, kept until every tile they cover is fused); a returned region goes to the next request of
 * its size. Offsets only: a view taken before an alloc that grows the memory is no longer valid after it.
 * Portable: no Node APIs.
 */
import { alignUp, type KernelMemory } from './memory.ts';

export class KernelHeap {
  private top = 0;
  private readonly free = new Map<number, number[]>();

  constructor(readonly memory: KernelMemory) {}

  /** The offset of a region of `bytes`, or null where the memory cannot grow to hold it. */
  alloc(bytes: number): number | null {
    const size = alignUp(Math.max(1, bytes));
    const reused = this.free.get(size)?.pop();
    if (reused !== undefined) return reused;
    if (!this.memory.reserve(this.top + size)) return null;
    const at = this.top;
    this.top += size;
    return at;
  }

  /** Returns a region that alloc(bytes) gave. */
  release(offset: number, bytes: number): void {
    const size = alignUp(Math.max(1, bytes));
    const list = this.free.get(size);
    if (list) list.push(offset);
    else this.free.set(size, [offset]);
  }
}
