/**
 * Reusable Float32Array buffers. Allocating fresh 64 KB typed arrays costs about 50 us each in V8 (zeroed
 * memory, first-touch page faults), which is most of the host work of a step when 49 windows are cut out;
 * reuse avoids it. A buffer that was transferred to a worker (its ArrayBuffer detached, length 0) is
 * replaced by a new one. Portable: no Node APIs.
 */
export class BufferPool {
  private readonly slots: Float32Array[] = [];

  /** The buffer for `slot`, `length` values long (contents undefined unless `zero`). */
  take(slot: number, length: number, zero = false): Float32Array {
    let buf = this.slots[slot];
    if (buf === undefined || buf.length !== length || buf.buffer.byteLength === 0) {
      buf = new Float32Array(length);
      this.slots[slot] = buf;
    } else if (zero) {
      buf.fill(0);
    }
    return buf;
  }
}

/**
 * Reusable Float32Arrays of one length for buffers whose lifetimes overlap in no fixed pattern (the stage-2
 * dataflow's window inputs and outputs): take one, give it back when done with it.
 */
export class BufferStack {
  private readonly free: Float32Array[] = [];

  take(length: number): Float32Array {
    const buf = this.free.pop();
    return buf !== undefined && buf.length === length ? buf : new Float32Array(length);
  }

  give(buf: Float32Array): void {
    if (buf.buffer.byteLength !== 0) this.free.push(buf);
  }
}
