import assert from 'node:assert/strict';
import { test } from 'node:test';
import { float16ToFloat32, float32ToFloat16, fromFloat16Bits, toFloat16Bits } from '../src/core/float16.ts';

test('float16 encodes known values exactly', () => {
  // Reference bit patterns from IEEE 754 binary16.
  const cases: [number, number][] = [
    [0, 0x0000], [-0, 0x8000], [1, 0x3c00], [-2, 0xc000], [0.5, 0x3800], [65504, 0x7bff],
    [Infinity, 0x7c00], [-Infinity, 0xfc00], [2 ** -24, 0x0001], [2 ** -14, 0x0400], [1 / 3, 0x3555], [70000, 0x7c00],
  ];
  for (const [v, bits] of cases) assert.equal(toFloat16Bits(v), bits, `encode ${v}`);
  assert.ok(Number.isNaN(fromFloat16Bits(toFloat16Bits(NaN))));
});

test('float16 round trip is exact for every half value and rounds to nearest even', () => {
  for (let h = 0; h < 0x10000; h++) {
    const v = fromFloat16Bits(h);
    if (Number.isNaN(v)) continue;
    assert.equal(toFloat16Bits(v), h, `bits ${h.toString(16)}`);
  }
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1).
  assert.equal(toFloat16Bits(1 + 2 ** -11), 0x3c00);
  assert.equal(toFloat16Bits(1 + 3 * 2 ** -11), 0x3c02);
  const src = new Float32Array([0.1, -3.25, 1000]);
  const back = float16ToFloat32(float32ToFloat16(src));
  for (let i = 0; i < src.length; i++) assert.ok(Math.abs(back[i]! - src[i]!) <= Math.abs(src[i]!) * 2 ** -11);
});
