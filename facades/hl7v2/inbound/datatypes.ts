/**
 * HL7 v2 data types → FHIR data types, following the HL7 v2-to-FHIR IG datatype maps (TS/DTM →
 * dateTime, CWE → CodeableConcept, CX → Identifier, XPN → HumanName, XAD → Address, XTN → ContactPoint,
 * XCN → Reference). A value that cannot be converted raises an Hl7DataError naming its location.
 */
import type { Address, CodeableConcept, Coding, ContactPoint, Extension, HumanName, Identifier, Quantity, Reference } from '@medplum/fhirtypes';
import type { Rep, Segment } from '../message.js';
import { HL7_ERROR, Hl7DataError, issueAt } from './ack.js';
import { DEFAULT_CODING_SYSTEMS, type MappingConfig } from './mapping-config.js';
import { MDC_SYSTEM, mdcUnitToUcum, ucumUnit } from './codes.js';

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

/**
 * The assigning authority (HD) exactly as received, on the Identifier, when its FHIR system does not say all
 * of it: `MPI&2.16.840.1.113883.19.3.2.1&ISO` becomes the system `urn:oid:2.16.…` and would lose `MPI`;
 * a site map (`HOSP` → `http://hospital.example/mrn`) would lose `HOSP`. The outbound builder writes the
 * HD back from this extension, so identifiers leave as they came. Sub-extensions: namespace (HD-1),
 * universalId (HD-2), universalIdType (HD-3), each a string, present when received.
 */
export const HD_EXTENSION = 'urn:conflux:extension:hl7v2-assigning-authority';
/** CX-6 assigning facility (an HD), kept the same way; the mapping does not use it otherwise. */
export const CX6_EXTENSION = 'urn:conflux:extension:hl7v2-assigning-facility';

export function hdExtension(url: string, namespace: string, universalId: string, universalIdType: string): Extension | undefined {
  const parts = ([['namespace', namespace], ['universalId', universalId], ['universalIdType', universalIdType]] as const)
    .filter(([, v]) => v.trim() !== '')
    .map(([k, v]) => ({ url: k, valueString: v.trim() }));
  return parts.length ? { url, extension: parts } : undefined;
}

/** The HD of an identifier as received, or undefined when the system alone gives it back (no extension needed). */
function authorityExtension(system: string, namespace: string, universalId: string, universalIdType: string): Extension | undefined {
  const ns = namespace.trim();
  const uid = universalId.trim();
  const type = universalIdType.trim();
  if (ns && !uid && !type && system === `urn:conflux:hl7v2:aa:${encodeURIComponent(ns)}`) return undefined;
  if (!ns && uid && /^ISO$/.test(type) && system === `urn:oid:${uid}`) return undefined;
  if (!ns && !uid && !type) return undefined;
  return hdExtension(HD_EXTENSION, ns, uid, type);
}

/** CX → Identifier, with the system from the assigning authority (CX-4) via config. */
export function toIdentifier(rep: Rep, ctx: MapContext): Identifier | undefined {
  const value = rep.c(1).trim();
  if (!value) return undefined;
  const type = fhirCode(rep.c(5));
  const system = identifierSystem(rep.c(4, 1), rep.c(4, 2), rep.c(4, 3), ctx);
  const ext = [authorityExtension(system, rep.c(4, 1), rep.c(4, 2), rep.c(4, 3)), hdExtension(CX6_EXTENSION, rep.c(6, 1), rep.c(6, 2), rep.c(6, 3))].filter(
    (e): e is Extension => !!e,
  );
  return clean({
    extension: ext.length ? ext : undefined,
    system,
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

/** EI (entity identifier: placer/filler order numbers) → Identifier; EI-2..4 (an HD) kept as received, as for CX. */
export function eiToIdentifier(rep: Rep | undefined, ctx: MapContext, typeCode?: 'PLAC' | 'FILL'): Identifier | undefined {
  if (!rep) return undefined;
  const value = rep.c(1).trim();
  if (!value) return undefined;
  const system = identifierSystem(rep.c(2), rep.c(3), rep.c(4), ctx);
  const ext = authorityExtension(system, rep.c(2), rep.c(3), rep.c(4));
  return clean({
    extension: ext ? [ext] : undefined,
    system,
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

/**
 * The R4 core extension for "the same quantity in another unit code system" (ISO 21090 PQ.translation): the unit
 * code a result arrived with when it is not the UCUM code filed (Cerner's local `CD:289^mg/dL`, an MDC unit
 * `262688^MDC_DIM_PERCENT^MDC`, the alternate triplet of OBX-6). Outbound writes it back as CWE-4..6.
 */
export const PQ_TRANSLATION = 'http://hl7.org/fhir/StructureDefinition/iso21090-PQ-translation';

type UnitParts = Pick<Quantity, 'unit' | 'system' | 'code'>;

/**
 * OBX-6 → the Quantity's unit (UCUM when the unit is UCUM, also when a local or MDC code's text or table entry
 * is) and the received code when it is not that UCUM code. A triplet marked UCUM wins, in either position;
 * a unit no table knows keeps its code and coding system when it names one (FHIR: code only with a system).
 */
export function unitOf(unit: Rep, ctx: MapContext): { quantity: UnitParts; original?: UnitParts } {
  const triplet = (base: number) => ({ code: unit.c(base).trim(), text: unit.c(base + 1).trim(), system: unit.c(base + 2).trim() });
  const first = triplet(1);
  const alt = triplet(4);
  const coded = (t: typeof first): UnitParts | undefined =>
    t.code && t.system ? clean({ code: t.code, unit: t.text || undefined, system: /^MDC$/i.test(t.system) ? MDC_SYSTEM : codingSystem(t.system, ctx) }) : t.code ? clean({ code: t.code, unit: t.text || undefined }) : undefined;
  const ucumOf = (t: typeof first): string | undefined => {
    if (/^UCUM$/i.test(t.system)) return t.code || undefined;
    // A local unit code with UCUM as its text (Cerner's `CD:289^mg/dL`) is still UCUM: the text is the unit.
    if (/^MDC$/i.test(t.system)) return mdcUnitToUcum(t.text || t.code);
    return ucumUnit(t.code, ctx.config.unitFixes) ?? ucumUnit(t.text, ctx.config.unitFixes);
  };
  const ucumFirst = ucumOf(first);
  const ucumAlt = !ucumFirst && alt.code ? ucumOf(alt) : undefined;
  const ucum = ucumFirst ?? ucumAlt;
  // Which triplet the UCUM code came from, and the other one (the received code that is not that UCUM code).
  const [main, other] = ucumAlt ? [alt, first] : [first, alt.code ? alt : undefined];
  if (!ucum) {
    const q: UnitParts = clean({ unit: first.text || first.code });
    if (first.code && first.system) Object.assign(q, { system: /^MDC$/i.test(first.system) ? MDC_SYSTEM : codingSystem(first.system, ctx), code: first.code });
    return { quantity: q, original: other ? coded(other) : undefined };
  }
  const text = main.text && !/^MDC_/.test(main.text) ? main.text : ucum;
  const quantity: UnitParts = { unit: text, system: 'http://unitsofmeasure.org', code: ucum };
  // The received code, when it is more than the UCUM code itself (a bare `mg/dL` or `mg/dL^^UCUM` is not).
  const received = /^UCUM$/i.test(main.system) ? other : main.code && (main.code !== ucum || main.system) ? main : other;
  return { quantity, original: received ? coded(received) : undefined };
}
