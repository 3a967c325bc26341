/** MSH, PID and PV1 shared by every outbound message; fields arrive already escaped. */
import type { Encounter, Identifier, Patient } from '@medplum/fhirtypes';
import { DEFAULT_DELIMITERS } from '../message.js';
import { comps, cx, esc, identifierTypeCode, reps, ts, xad, xcn, xpn, xtn } from './datatypes.js';
import type { Dialect } from './profiles.js';

const F = DEFAULT_DELIMITERS.field;

/** Fields 1..n of a segment; trailing empty fields are dropped. */
export function segment(name: string, fields: string[]): string {
  let n = fields.length;
  while (n > 0 && !fields[n - 1]) n--;
  return [name, ...fields.slice(0, n)].join(F);
}

export interface MessageHeader {
  code: string;
  trigger: string;
  structure: string;
  controlId: string;
  at: Date;
}

export function msh(d: Dialect, h: MessageHeader): string {
  const type = comps(h.code, h.trigger, d.messageStructure ? h.structure : '');
  const now = ts(h.at.toISOString(), { ...d, timestampPrecision: 'second' });
  // MSH-1 is the field separator itself, so the list starts at MSH-2.
  return `MSH${F}${[
    '^~\\&',
    esc(d.sendingApplication),
    esc(d.sendingFacility),
    esc(d.receivingApplication),
    esc(d.receivingFacility),
    now,
    '',
    type,
    esc(h.controlId),
    esc(d.processingId),
    esc(d.version),
  ].join(F)}`;
}

/** The identifier Epic matches patients on: configured system, else typed MR/MRN, else the first. */
export function pickMrn(ids: Identifier[], d: Dialect): Identifier | undefined {
  if (d.mrnSystem) {
    const bySystem = ids.find((i) => i.system === d.mrnSystem);
    if (bySystem) return bySystem;
  }
  return ids.find((i) => ['MR', 'MRN'].includes(identifierTypeCode(i) ?? '')) ?? ids[0];
}

export function pid(p: Patient | undefined, d: Dialect): string {
  if (!p) return segment('PID', ['1']);
  const ids = (p.identifier ?? []).filter((i) => i.value);
  let pid3: string;
  if (d.pid3 === 'mrn') {
    const mrn = pickMrn(ids, d);
    pid3 = mrn ? cx(mrn, d, d.mrnTypeCode || undefined) : '';
  } else {
    const mrn = pickMrn(ids, d);
    pid3 = reps(ids.map((i) => cx(i, d, identifierTypeCode(i) ?? (i === mrn && d.mrnTypeCode ? d.mrnTypeCode : undefined))));
  }
  const gender = p.gender ? ({ male: 'M', female: 'F', other: 'O', unknown: 'U' } as Record<string, string>)[p.gender] ?? '' : '';
  const home = (p.telecom ?? []).filter((t) => t.use !== 'work').map((t) => xtn(t, 'PRN'));
  const work = (p.telecom ?? []).filter((t) => t.use === 'work').map((t) => xtn(t, 'WPN'));
  const death = p.deceasedDateTime ? ts(p.deceasedDateTime, d) : '';
  const fields: string[] = [];
  fields[0] = '1';
  fields[2] = pid3;
  fields[4] = reps((p.name ?? []).map(xpn));
  fields[6] = p.birthDate ? p.birthDate.replace(/-/g, '') : '';
  fields[7] = gender;
  fields[10] = reps((p.address ?? []).map(xad));
  fields[12] = reps(home);
  fields[13] = reps(work);
  fields[15] = esc(p.maritalStatus?.coding?.[0]?.code);
  fields[28] = death;
  fields[29] = death ? 'Y' : p.deceasedBoolean === true ? 'Y' : p.deceasedBoolean === false ? 'N' : '';
  return segment('PID', Array.from(fields, (f) => f ?? ''));
}

const CLASS: Record<string, string> = { IMP: 'I', AMB: 'O', EMER: 'E', PRENC: 'P', ACUTE: 'I', NONAC: 'I', OBSENC: 'O', SS: 'O', HH: 'O', VR: 'O' };

/** PV1 when the result or order belongs to a visit: patient class, attending, visit number (PV1-19). */
export function pv1(e: Encounter | undefined, d: Dialect): string | undefined {
  if (!e) return undefined;
  const fields: string[] = new Array(44).fill('');
  fields[0] = '1';
  fields[1] = CLASS[e.class?.code ?? ''] ?? 'U';
  fields[2] = esc(e.location?.[0]?.location?.display);
  fields[6] = xcn(e.participant?.[0]?.individual, d);
  fields[18] = e.identifier?.[0] ? cx(e.identifier[0], d) : '';
  fields[43] = ts(e.period?.start, d);
  fields[44] = ts(e.period?.end, d);
  return segment('PV1', fields);
}
