/** Jazzer.js entry point (npm run fuzz -- dicom-part10): tools/fuzz-targets.ts states what counts as a finding. */
import { TARGETS } from '../../tools/fuzz-targets.js';

export const fuzz = TARGETS['dicom-part10'];
