/**
 * The attention-probe UNet derived in the browser: the same graph surgery as in Node (src/graph/attention-probe.ts)
 * on the UNet's bytes, kept in memory (the weights stay inline). Loaded by the device worker on demand, so pages
 * that turn the probe off never load the protobuf code.
 */
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema } from 'onnx-buf';
import { addAttentionProbe } from '../../graph/attention-probe.ts';

export function probeModelBytes(unet: Uint8Array): { bytes: Uint8Array; layers: string[] } | { reason: string } {
  let model;
  try {
    model = fromBinary(ModelProtoSchema, unet);
  } catch (err) {
    return { reason: `the UNet could not be parsed (${err instanceof Error ? err.message : String(err)})` };
  }
  const surgery = addAttentionProbe(model);
  if ('reason' in surgery) return surgery;
  return { bytes: toBinary(ModelProtoSchema, model), layers: surgery.layers };
}
