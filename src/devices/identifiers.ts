import type { Identifier } from '@medplum/fhirtypes';
import { badRequest } from '../fhir/outcome.js';

/** IEEE EUI-64 (the OID IHE PCD uses for device identifiers in OBX-18 / PRT-10). */
export const EUI64_SYSTEM = 'urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680';
/** Serial numbers assigned by Conflux operators (manufacturer serial numbers are vendor-scoped). */
export const SERIAL_NUMBER_SYSTEM = 'urn:conflux:device:serial-number';
/** The serial port a device is attached to, e.g. /dev/ttyUSB0 on host "lab-pc-1". */
export const SERIAL_PORT_SYSTEM = 'urn:conflux:device:serial-port';

export interface NormalizedId {
  system: string;
  value: string;
}

/** Identifiers with a value, trimmed; system '' when absent. Duplicates removed. */
export function normalizeIdentifiers(ids: Identifier[] | undefined): NormalizedId[] {
  const seen = new Set<string>();
  const out: NormalizedId[] = [];
  for (const id of ids ?? []) {
    const value = id.value?.trim();
    if (!value) continue;
    const system = id.system?.trim() ?? '';
    const key = `${system}|${value}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push({ system, value });
  }
  return out;
}

/** 'Patient/abc' or 'abc' → 'abc'; throws on another type or a malformed id. */
export function bareId(ref: string, type: string): string {
  const m = /^(?:([A-Za-z]+)\/)?([A-Za-z0-9\-.]{1,64})$/.exec(ref.trim());
  if (!m) throw badRequest(`"${ref}" is not a ${type} id or reference (expected ${type}/<id>)`);
  if (m[1] && m[1] !== type) throw badRequest(`"${ref}" is a ${m[1]} reference, a ${type} was expected`);
  return m[2];
}
