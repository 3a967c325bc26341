/**
 * Site-specific mapping is configuration, not code: identifier systems per assigning authority, local
 * code → LOINC maps, unit fixes, accepted OBX value types, the time zone of timestamps sent without
 * one. Loaded from the JSON file named by HL7_MAPPING_FILE, merged over these defaults.
 */
import { readFileSync } from 'node:fs';
import { ConfigError } from '../../../src/index.js';

export interface CodeTarget {
  system: string;
  code: string;
  display?: string;
}

export interface MappingConfig {
  /** Assigning authority (CX-4.1 namespace, or CX-4.2 universal id) → identifier system URI. */
  identifierSystems: Record<string, string>;
  /** HL7 coding system names (CWE-3) → FHIR system URIs; merged with the HL7 table 0396 defaults below. */
  codingSystems: Record<string, string>;
  /** Local codes → a standard code, keyed by 'system|code' where system is CWE-3 as sent (or '' when absent). */
  codeMap: Record<string, CodeTarget>;
  /** Unit strings as sent → UCUM (e.g. "mmhg" → "mm[Hg]"). */
  unitFixes: Record<string, string>;
  /** OBX-2 value types accepted; others are answered AE (102). */
  acceptedValueTypes: string[];
  /** Offset for timestamps that carry a time but no zone, e.g. "+01:00"; "Z" by default. */
  defaultTimezone: string;
  /** MSH-12 versions accepted (prefix match: "2.5" accepts 2.5 and 2.5.1). */
  versions: string[];
  /** MSH-11 processing ids accepted. */
  processingIds: string[];
}

export const DEFAULT_CODING_SYSTEMS: Record<string, string> = {
  LN: 'http://loinc.org',
  LOINC: 'http://loinc.org',
  SCT: 'http://snomed.info/sct',
  SNM: 'http://snomed.info/sct',
  SNOMED: 'http://snomed.info/sct',
  SNM3: 'http://snomed.info/sct',
  UCUM: 'http://unitsofmeasure.org',
  MDC: 'urn:iso:std:iso:11073:10101',
  I9: 'http://hl7.org/fhir/sid/icd-9-cm',
  I9C: 'http://hl7.org/fhir/sid/icd-9-cm',
  I10: 'http://hl7.org/fhir/sid/icd-10',
  I10C: 'http://hl7.org/fhir/sid/icd-10-cm',
  CPT: 'http://www.ama-assn.org/go/cpt',
  CPT4: 'http://www.ama-assn.org/go/cpt',
  RXNORM: 'http://www.nlm.nih.gov/research/umls/rxnorm',
  CVX: 'http://hl7.org/fhir/sid/cvx',
  NDC: 'http://hl7.org/fhir/sid/ndc',
  HL70078: 'http://terminology.hl7.org/CodeSystem/v2-0078',
  HL70136: 'http://terminology.hl7.org/CodeSystem/v2-0136',
};

export const DEFAULT_MAPPING: MappingConfig = {
  identifierSystems: {},
  codingSystems: {},
  codeMap: {},
  unitFixes: {
    mmhg: 'mm[Hg]',
    'mm hg': 'mm[Hg]',
    bpm: '/min',
    'beats/min': '/min',
    'breaths/min': '/min',
    'deg c': 'Cel',
    degc: 'Cel',
    'deg f': '[degF]',
    degf: '[degF]',
    '%': '%',
    percent: '%',
    'x10e3/ul': '10*3/uL',
    'x10e6/ul': '10*6/uL',
    'k/ul': '10*3/uL',
    'm/ul': '10*6/uL',
  },
  acceptedValueTypes: ['NM', 'ST', 'TX', 'FT', 'CE', 'CWE', 'CNE', 'CF', 'SN', 'DT', 'DTM', 'TS', 'TM', 'ED', 'NA', 'ID', 'IS', 'XCN', 'RP', 'NR', 'CX', 'AD', 'XAD', 'XPN', 'XON', 'XTN', 'CP', 'MO'],
  defaultTimezone: 'Z',
  versions: ['2.1', '2.2', '2.3', '2.4', '2.5', '2.6', '2.7', '2.8'],
  processingIds: ['P', 'T', 'D'],
};

export function loadMappingConfig(file: string | undefined): MappingConfig {
  if (!file) return DEFAULT_MAPPING;
  let parsed: Partial<MappingConfig>;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8')) as Partial<MappingConfig>;
  } catch (err) {
    throw new ConfigError('HL7_MAPPING_FILE', `HL7_MAPPING_FILE ${file}: ${(err as Error).message}`);
  }
  return mergeMapping(parsed);
}

export function mergeMapping(over: Partial<MappingConfig>): MappingConfig {
  const d = DEFAULT_MAPPING;
  return {
    identifierSystems: { ...d.identifierSystems, ...over.identifierSystems },
    codingSystems: { ...d.codingSystems, ...over.codingSystems },
    codeMap: { ...d.codeMap, ...over.codeMap },
    unitFixes: { ...d.unitFixes, ...Object.fromEntries(Object.entries(over.unitFixes ?? {}).map(([k, v]) => [k.toLowerCase(), v])) },
    acceptedValueTypes: over.acceptedValueTypes ?? d.acceptedValueTypes,
    defaultTimezone: over.defaultTimezone ?? d.defaultTimezone,
    versions: over.versions ?? d.versions,
    processingIds: over.processingIds ?? d.processingIds,
  };
}
export { ucumUnit } from './codes.js';
