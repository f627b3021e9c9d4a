/** A dense float32 tensor in row-major (NCHW) order. Portable: no Node APIs. */
export interface Tensor {
  data: Float32Array;
  shape: number[];
}

export function sizeOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function tensor(data: Float32Array, shape: number[]): Tensor {
  if (data.length !== sizeOf(shape)) {
    throw new Error(`tensor: data has ${data.length} elements, shape [${shape.join(', ')}] needs ${sizeOf(shape)}`);
  }
  return { data, shape };
}

export function zeros(shape: number[]): Tensor {
  return { data: new Float32Array(sizeOf(shape)), shape };
}

/** How many values of `x` are NaN or infinite. */
export function nonFinite(x: ArrayLike<number>): number {
  let n = 0;
  for (let i = 0; i < x.length; i++) if (!Number.isFinite(x[i]!)) n++;
  return n;
}
