/** The progress events of a generation, the same from the Node pipeline and the browser pipeline. Portable. */
/** What a progress event is about: encoding the prompt, denoising, or VAE decoding. */
export type GenerationPhase = 'text' | 'denoise' | 'decode';

export interface GenerationProgress {
  phase: GenerationPhase;
  /** 1 or 2 for the two-stage methods, 1 otherwise. */
  stage: number;
  /** Steps completed (0..totalSteps). */
  step: number;
  totalSteps: number;
  /** UNet evaluations completed and planned in total. */
  unitsDone: number;
  unitsTotal: number;
  /** VAE tiles decoded so far, during 'decode'. */
  tilesDone?: number;
  tilesTotal?: number;
}
