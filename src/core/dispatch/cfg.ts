/**
 * Classifier-free guidance: eps = eps_u + s * (eps_c - eps_u). One function, used by the UNet adapter (both halves
 * in one batch-2 call) and by the coordinator (halves run as separate batch-1 calls), so that both paths round
 * identically. Portable: no Node APIs.
 */
export function combineCfg(
  uncond: Float32Array,
  cond: Float32Array,
  scale: number,
  out: Float32Array = new Float32Array(uncond.length),
): Float32Array {
  if (cond.length !== uncond.length || out.length !== uncond.length) {
    throw new Error(`combineCfg: lengths differ (uncond ${uncond.length}, cond ${cond.length}, out ${out.length})`);
  }
  for (let i = 0; i < uncond.length; i++) {
    const u = uncond[i]!;
    out[i] = u + scale * (cond[i]! - u);
  }
  return out;
}
