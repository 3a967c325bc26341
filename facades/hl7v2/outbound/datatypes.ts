/**
 * FHIR data types → HL7 v2 data types: the reverse of inbound/datatypes.ts, so that what the inbound
 * mapper turned into FHIR comes back out as the same v2 (codes and their coding-system names,
 * identifiers and their assigning authorities, timestamps). Every value is escaped here; callers
 * assemble components with the raw delimiters.
 */
import type { Address, CodeableConcept, Coding, ContactPoint, HumanName, Identifier, Reference } from '@medplum/fhirtypes';
import { escapeHl7 } from '../escape.js';
import { CX6_EXTENSION, HD_EXTENSION } from '../inbound/datatypes.js';
import { DEFAULT_CODING_SYSTEMS } from '../inbound/mapping-config.js';
import { DEFAULT_DELIMITERS } from '../message.js';
import type { Dialect } from './profiles.js';

const D = DEFAULT_DELIMITERS;
export const esc = (v: string | number | undefined | null): string => (v === undefined || v === null ? '' : escapeHl7(String(v), D));

/** Components → one field value, dropping trailing empty components. */
export function comps(...values: string[]): string {
  let n = values.length;
  while (n > 0 && !values[n - 1]) n--;
  return values.slice(0, n).join(D.component);
}
export function subs(...values: string[]): string {
  let n = values.length;
  while (n > 0 && !values[n - 1]) n--;
  return values.slice(0, n).join(D.subcomponent);
}
export const reps = (values: string[]): string => values.filter(Boolean).join(D.repetition);

// Preferred HL7 name per system URI: the first name in table order wins (LN over LOINC, SCT over SNM).
const SYSTEM_NAMES: Record<string, string> = {};
for (const [name, uri] of Object.entries(DEFAULT_CODING_SYSTEMS)) SYSTEM_NAMES[uri] ??= name;
SYSTEM_NAMES['http://hl7.org/fhir/sid/icd-10-cm'] = 'I10C';

const LOCAL_CS = 'urn:conflux:hl7v2:cs:';
const LOCAL_AA = 'urn:conflux:hl7v2:aa:';

/** A FHIR coding system URI → the HL7 coding system name (CWE-3). */
export function codingSystemName(system: string | undefined, d: Dialect): string {
  if (!system) return '';
  if (d.codingSystemNames[system]) return d.codingSystemNames[system];
  if (system.startsWith(LOCAL_CS)) return decodeURIComponent(system.slice(LOCAL_CS.length));
  return SYSTEM_NAMES[system] ?? system;
}

/** CodeableConcept → CE/CWE: the first coding as the identifier, the second as the alternate, text in CWE-9. */
export function cwe(cc: CodeableConcept | undefined, d: Dialect): string {
  if (!cc) return '';
  const codings = (cc.coding ?? []).filter((c) => c.code);
  const one = (c: Coding | undefined) => (c ? [esc(c.code), esc(c.display), esc(codingSystemName(c.system, d))] : ['', '', '']);
  const [a, b] = [codings[0], codings[1]];
  if (!a && cc.text) return comps('', esc(cc.text));
  const parts = [...one(a), ...one(b)];
  const original = cc.text && cc.text !== a?.display && d.codedType === 'CWE' ? cc.text : '';
  if (original) parts.push('', '', esc(original));
  return comps(...parts);
}

/** An HD kept by the inbound mapper as an extension (namespace, universal id, its type), or undefined. */
function keptHd(id: Identifier | undefined, url: string): [string, string, string] | undefined {
  const ext = id?.extension?.find((e) => e.url === url);
  if (!ext?.extension?.length) return undefined;
  const part = (k: string) => ext.extension!.find((e) => e.url === k)?.valueString ?? '';
  return [part('namespace'), part('universalId'), part('universalIdType')];
}

/**
 * Identifier system → HD (namespace & universal id & type). A site's `assigningAuthorities` entry wins; then
 * the HD as it was received (kept by the inbound mapper on the Identifier), so `MPI&2.16.840…&ISO` leaves as
 * it came; then what the system itself says.
 */
export function hd(system: string | undefined, d: Dialect, id?: Identifier): string {
  if (system && d.assigningAuthorities[system]) return esc(d.assigningAuthorities[system]);
  const kept = keptHd(id, HD_EXTENSION);
  if (kept) return subs(...kept.map(esc));
  if (!system) return esc(d.defaultAssigningAuthority ?? '');
  if (system.startsWith(LOCAL_AA)) return esc(decodeURIComponent(system.slice(LOCAL_AA.length)));
  if (system.startsWith('urn:oid:')) return subs('', esc(system.slice(8)), 'ISO');
  if (d.defaultAssigningAuthority) return esc(d.defaultAssigningAuthority);
  return subs('', esc(system), 'URI');
}

const V2_0203 = 'http://terminology.hl7.org/CodeSystem/v2-0203';
export function identifierTypeCode(id: Identifier): string | undefined {
  return id.type?.coding?.find((c) => c.system === V2_0203 || !c.system)?.code;
}

/** Identifier → CX: value ^^^ assigning authority ^ identifier type ^ assigning facility (CX-6, when received). */
export function cx(id: Identifier, d: Dialect, typeOverride?: string): string {
  const facility = keptHd(id, CX6_EXTENSION);
  return comps(esc(id.value), '', '', hd(id.system, d, id), esc(typeOverride ?? identifierTypeCode(id) ?? ''), facility ? subs(...facility.map(esc)) : '');
}

/** Identifier → EI (placer/filler order numbers): entity id ^ namespace ^ universal id ^ type. */
export function ei(id: Identifier | undefined, d: Dialect): string {
  if (!id?.value) return '';
  // HD's subcomponents become EI's components 2-4.
  const h = hd(id.system, d, id).split(D.subcomponent);
  return comps(esc(id.value), h[0] ?? '', h[1] ?? '', h[2] ?? '');
}

const NAME_USE: Record<string, string> = { official: 'L', usual: 'D', maiden: 'M', nickname: 'N', anonymous: 'A' };
export function xpn(n: HumanName): string {
  return comps(esc(n.family), esc(n.given?.[0]), esc(n.given?.slice(1).join(' ')), esc(n.suffix?.[0]), esc(n.prefix?.[0]), '', n.use ? (NAME_USE[n.use] ?? '') : '');
}

const ADDRESS_USE: Record<string, string> = { home: 'H', work: 'B', temp: 'C', billing: 'BA' };
export function xad(a: Address): string {
  return comps(esc(a.line?.[0]), esc(a.line?.slice(1).join(' ')), esc(a.city), esc(a.state), esc(a.postalCode), esc(a.country), a.use ? (ADDRESS_USE[a.use] ?? '') : '');
}

export function xtn(t: ContactPoint, useCode: string): string {
  if (t.system === 'email') return comps('', 'NET', 'Internet', esc(t.value));
  const equip = t.system === 'fax' ? 'FX' : t.use === 'mobile' ? 'CP' : 'PH';
  return comps(esc(t.value), useCode, equip);
}

/** Reference to a practitioner (identifier + display "Given Family") → XCN: id ^ family ^ given ^^^ prefix ^^^ authority. */
export function xcn(r: Reference | undefined, d: Dialect): string {
  if (!r) return '';
  const words = (r.display ?? '').trim().split(/\s+/).filter(Boolean);
  const family = words.length ? words[words.length - 1]! : '';
  const given = words.length > 1 ? words[0]! : '';
  const middle = words.length > 2 ? words.slice(1, -1).join(' ') : '';
  const id = r.identifier;
  return comps(esc(id?.value), esc(family), esc(given), esc(middle), '', '', '', '', id?.value ? hd(id.system, d) : '');
}

const FHIR_DT = /^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/;

/**
 * FHIR date/dateTime/instant → HL7 TS/DTM per the dialect: precision as stored (or cut to seconds or
 * minutes), the value's own offset or none, optionally converted to the receiver's time zone first.
 */
export function ts(value: string | undefined, d: Dialect): string {
  if (!value) return '';
  const m = FHIR_DT.exec(value);
  if (!m) return '';
  let [, y, mo, da, h, mi, s, frac, zone] = m;
  if (h === undefined) return `${y}${mo ?? ''}${da ?? ''}`;
  let offset = zone === undefined ? '' : zone === 'Z' ? '+0000' : zone.replace(':', '');
  if (d.timeZone && zone !== undefined) {
    const at = new Date(value);
    const parts = zoned(at, d.timeZone);
    [y, mo, da, h, mi, s] = [parts.year, parts.month, parts.day, parts.hour, parts.minute, parts.second];
    offset = parts.offset;
  }
  let out = `${y}${mo}${da}${h}${mi}`;
  if (d.timestampPrecision === 'keep') out += `${s ?? ''}${s !== undefined ? (frac ?? '') : ''}`;
  else if (d.timestampPrecision === 'second') out += s ?? '00';
  if (d.timestampOffset === 'keep') out += offset;
  return out;
}

const zoneFormats = new Map<string, Intl.DateTimeFormat>();
function zoned(at: Date, timeZone: string) {
  let f = zoneFormats.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit',
      timeZoneName: 'longOffset',
    });
    zoneFormats.set(timeZone, f);
  }
  const p = Object.fromEntries(f.formatToParts(at).map((x) => [x.type, x.value]));
  const gmt = String(p.timeZoneName ?? 'GMT');
  const off = gmt === 'GMT' ? '+0000' : gmt.replace('GMT', '').replace(':', '');
  return { year: p.year!, month: p.month!, day: p.day!, hour: p.hour!, minute: p.minute!, second: p.second!, offset: off };
}

/** A decimal as HL7 NM: no exponent, no locale. */
export function nm(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return '';
  const s = String(n);
  if (!/e/i.test(s)) return s;
  return n.toFixed(20).replace(/0+$/, '').replace(/\.$/, '');
}
