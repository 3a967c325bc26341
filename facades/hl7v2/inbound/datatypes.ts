/**
 * HL7 v2 data types → FHIR data types, following the HL7 v2-to-FHIR IG datatype maps (TS/DTM →
 * dateTime, CWE → CodeableConcept, CX → Identifier, XPN → HumanName, XAD → Address, XTN → ContactPoint,
 * XCN → Reference). A value that cannot be converted raises an Hl7DataError naming its location.
 */
import type { Address, CodeableConcept, Coding, ContactPoint, HumanName, Identifier, Reference } from '@medplum/fhirtypes';
import type { Rep, Segment } from '../message.js';
import { HL7_ERROR, Hl7DataError, issueAt } from './ack.js';
import { DEFAULT_CODING_SYSTEMS, type MappingConfig } from './mapping-config.js';

export interface MapContext {
  config: MappingConfig;
  /** MSH-4 (or MSH-3): the namespace for identifiers that name no assigning authority. */
  senderNamespace: string;
}

const TS = /^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,4})?([+-]\d{4})?$/;

/** HL7 TS/DTM/DT → FHIR dateTime (or date); '' → undefined; malformed → Hl7DataError at that field. */
export function toDateTime(value: string, ctx: MapContext, seg: Segment, field: number): string | undefined {
  const v = value.trim();
  if (!v) return undefined;
  const m = TS.exec(v);
  const bad = () => new Hl7DataError([issueAt(seg, field, HL7_ERROR.dataTypeError, `'${value}' is not an HL7 timestamp (YYYY[MM[DD[HHMM[SS[.S]]]]][+/-ZZZZ])`)]);
  if (!m) throw bad();
  const [, y, mo, d, h, mi, s, frac, tz] = m;
  if (mo && (+mo < 1 || +mo > 12)) throw bad();
  if (d && (+d < 1 || +d > 31)) throw bad();
  if (h && (+h > 23 || (mi !== undefined && +mi > 59) || (s !== undefined && +s > 59))) throw bad();
  if (!mo) return y;
  if (!d) return `${y}-${mo}`;
  if (!h) return `${y}-${mo}-${d}`;
  const zone = tz ? `${tz.slice(0, 3)}:${tz.slice(3)}` : ctx.config.defaultTimezone;
  return `${y}-${mo}-${d}T${h}:${mi ?? '00'}:${s ?? '00'}${frac ?? ''}${zone}`;
}

/** A Date for comparisons (association windows); undefined when absent. */
export function dateOf(dt: string | undefined): Date | undefined {
  if (!dt) return undefined;
  const x = new Date(dt.length === 4 ? `${dt}-01-01` : dt.length === 7 ? `${dt}-01` : dt);
  return Number.isNaN(x.getTime()) ? undefined : x;
}

export function codingSystem(name: string, ctx: MapContext): string | undefined {
  if (!name) return undefined;
  const key = name.trim();
  return ctx.config.codingSystems[key] ?? DEFAULT_CODING_SYSTEMS[key.toUpperCase()] ?? (/^[a-z]+:/.test(key) ? key : `urn:conflux:hl7v2:cs:${encodeURIComponent(key)}`);
}

/** CE/CWE/CNE → CodeableConcept with primary and alternate codings, plus mapped codes from config. */
export function toCodeableConcept(rep: Rep | undefined, ctx: MapContext): CodeableConcept | undefined {
  if (!rep) return undefined;
  const codings: Coding[] = [];
  for (const base of [1, 4]) {
    const code = fhirCode(rep.c(base));
    const display = rep.c(base + 1);
    const sysName = rep.c(base + 2);
    if (!code) continue;
    const mapped = ctx.config.codeMap[`${sysName}|${code}`];
    if (mapped) codings.push({ system: mapped.system, code: mapped.code, display: mapped.display ?? (display || undefined) });
    codings.push(clean({ system: codingSystem(sysName, ctx), code, display: display || undefined }));
  }
  const text = rep.c(9) || rep.c(2) || undefined;
  if (codings.length === 0 && !text) return undefined;
  const seen = new Set<string>();
  const unique = codings.filter((c) => {
    const k = `${c.system}|${c.code}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
  return clean({ coding: unique.length ? unique : undefined, text });
}

/** CX → Identifier, with the system from the assigning authority (CX-4) via config. */
export function toIdentifier(rep: Rep, ctx: MapContext): Identifier | undefined {
  const value = rep.c(1).trim();
  if (!value) return undefined;
  const type = fhirCode(rep.c(5));
  return clean({
    system: identifierSystem(rep.c(4, 1), rep.c(4, 2), rep.c(4, 3), ctx),
    value,
    type: type ? { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: type }] } : undefined,
  });
}

export function identifierSystem(namespace: string, universalId: string, universalType: string, ctx: MapContext): string {
  const cfg = ctx.config.identifierSystems;
  if (namespace && cfg[namespace]) return cfg[namespace];
  if (universalId && cfg[universalId]) return cfg[universalId];
  if (universalId && /^ISO$/i.test(universalType)) return `urn:oid:${universalId}`;
  if (universalId && /^(URI|URL)$/i.test(universalType)) return universalId;
  if (namespace) return `urn:conflux:hl7v2:aa:${encodeURIComponent(namespace)}`;
  if (universalId) return `urn:conflux:hl7v2:aa:${encodeURIComponent(universalId)}`;
  // No authority at all: an id is unique only within the system that sent it.
  return `urn:conflux:hl7v2:aa:${encodeURIComponent(ctx.senderNamespace || 'unknown')}`;
}

/** EI (entity identifier: placer/filler order numbers) → Identifier. */
export function eiToIdentifier(rep: Rep | undefined, ctx: MapContext, typeCode?: 'PLAC' | 'FILL'): Identifier | undefined {
  if (!rep) return undefined;
  const value = rep.c(1).trim();
  if (!value) return undefined;
  return clean({
    system: identifierSystem(rep.c(2), rep.c(3), rep.c(4), ctx),
    value,
    type: typeCode ? { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: typeCode }] } : undefined,
  });
}

export function toHumanName(rep: Rep): HumanName | undefined {
  const family = rep.c(1, 1);
  const given = [rep.c(2), rep.c(3)].filter(Boolean);
  const suffix = rep.c(4);
  const prefix = rep.c(5);
  if (!family && given.length === 0) return undefined;
  const use = ({ L: 'official', D: 'usual', M: 'maiden', N: 'nickname', A: 'anonymous' } as Record<string, HumanName['use']>)[rep.c(7)];
  return clean({ family: family || undefined, given: given.length ? given : undefined, suffix: suffix ? [suffix] : undefined, prefix: prefix ? [prefix] : undefined, use });
}

export function toAddress(rep: Rep): Address | undefined {
  const line = [rep.c(1, 1), rep.c(2)].filter(Boolean);
  const a = clean<Address>({
    line: line.length ? line : undefined,
    city: rep.c(3) || undefined,
    state: rep.c(4) || undefined,
    postalCode: rep.c(5) || undefined,
    country: rep.c(6) || undefined,
    use: ({ H: 'home', B: 'work', O: 'work', C: 'temp', BA: 'billing' } as Record<string, Address['use']>)[rep.c(7)],
  });
  return Object.keys(a).length ? a : undefined;
}

export function toContactPoint(rep: Rep, use: ContactPoint['use']): ContactPoint | undefined {
  const equip = rep.c(3);
  const email = rep.c(4);
  const number = rep.c(1) || [rep.c(5) && `+${rep.c(5)}`, rep.c(6), rep.c(7), rep.c(8) && `x${rep.c(8)}`].filter(Boolean).join(' ');
  if (equip === 'Internet' || (email && !number)) return { system: 'email', value: email || number, use };
  if (!number) return undefined;
  return { system: equip === 'FX' ? 'fax' : equip === 'CP' ? 'phone' : 'phone', value: number, use: equip === 'CP' ? 'mobile' : use };
}

/** XCN (a person: ordering provider, performer) → logical Reference by identifier, with a display. */
export function toPractitionerRef(rep: Rep | undefined, ctx: MapContext): Reference | undefined {
  if (!rep) return undefined;
  const id = rep.c(1);
  const name = [rep.c(6), rep.c(3), rep.c(4), rep.c(2, 1)].filter(Boolean).join(' ');
  if (!id && !name) return undefined;
  return clean({
    identifier: id ? { system: identifierSystem(rep.c(9, 1), rep.c(9, 2), rep.c(9, 3), ctx), value: id } : undefined,
    display: name || undefined,
  });
}

/** A value usable as a FHIR code (no leading/trailing or double whitespace), or undefined. */
export function fhirCode(v: string): string | undefined {
  const t = v.trim();
  return t && /^[^\s]+( [^\s]+)*$/.test(t) ? t : undefined;
}

/** Drops undefined members so that resources compare and validate cleanly. */
export function clean<T extends object>(o: T): T {
  for (const k of Object.keys(o) as (keyof T)[]) if (o[k] === undefined) delete o[k];
  return o;
}
