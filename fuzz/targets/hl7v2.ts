/** Jazzer.js entry point (npm run fuzz -- hl7v2): tools/fuzz-targets.ts states what counts as a finding. */
import { TARGETS } from '../../tools/fuzz-targets.js';

export const fuzz = TARGETS['hl7v2'];
