/**
 * Whether the tile states of 'exact' tiled VAE statistics stay on the device (src/onnx/tile-states.ts): on the webgpu
 * provider they do, unless ASGD_DEVICE_TILE_STATES=0 brings them back to the host after every segment (the earlier
 * behaviour, kept for benchmarks: docs/vae-tiling.md).
 */
import type { ProviderName } from '../onnx/io.ts';
import { DeviceTileStates } from '../onnx/tile-states.ts';

export const DEVICE_TILE_STATES_ENV = 'ASGD_DEVICE_TILE_STATES';

/** A store for the states a session of `provider` keeps on its device; undefined where they come back to the host. */
export function deviceTileStates(provider: ProviderName): DeviceTileStates | undefined {
  return provider === 'webgpu' && process.env[DEVICE_TILE_STATES_ENV] !== '0' ? new DeviceTileStates() : undefined;
}
