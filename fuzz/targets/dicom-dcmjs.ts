/** Jazzer.js entry point (npm run fuzz -- dicom-dcmjs): tools/fuzz-targets.ts states what counts as a finding. */
import { TARGETS } from '../../tools/fuzz-targets.js';

export const fuzz = TARGETS['dicom-dcmjs'];
