import { existsSync } from 'node:fs';
import path from 'node:path';

/**
 * The shared test material (HL7 v2 corpus, DICOM files, FHIR bundles), kept outside the repository:
 * `CONFLUX_SHARED_DATA`, else `../shared/data` next to the checkout, else the workplace's `/work/shared/data`.
 */
const candidates = [
  process.env.CONFLUX_SHARED_DATA,
  path.resolve(import.meta.dirname, '../../shared/data'),
  '/work/shared/data',
];

export const SHARED_DATA: string = candidates.find((p): p is string => !!p && existsSync(p)) ?? '/work/shared/data';

export const sharedPath = (...parts: string[]): string => path.join(SHARED_DATA, ...parts);
