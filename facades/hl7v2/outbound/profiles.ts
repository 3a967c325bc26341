/**
 * Dialects. Every receiving interface wants slightly different HL7: Epic Bridges result/order inbound
 * interfaces are usually built on v2.3-era specs with the MRN alone in PID-3 and local wall-clock
 * timestamps; Oracle Health (Cerner) Open Engine takes v2.5.1 with every patient identifier and
 * timestamps with offsets. A profile is a set of defaults; a destination's `options` override any of them,
 * because each site's interface analyst has the last word.
 */
export type ProfileName = 'epic' | 'cerner' | 'generic';
export const PROFILE_NAMES: readonly ProfileName[] = ['epic', 'cerner', 'generic'];

export interface Dialect {
  /** MSH-12. */
  version: string;
  /** MSH-3 / MSH-4: who we are. MSH-5 / MSH-6: the receiving application and facility. */
  sendingApplication: string;
  sendingFacility: string;
  receivingApplication: string;
  receivingFacility: string;
  /** MSH-11. */
  processingId: string;
  /** MSH-10 is this prefix plus the outbox row id: unique per database, and traceable to the row. */
  controlIdPrefix: string;
  /** Add the message structure (ORU_R01) as MSH-9.3; v2.3.1 and later define it. */
  messageStructure: boolean;
  /** Orders go out as ORM^O01 or OML^O21. */
  orderMessage: 'ORM' | 'OML';
  /** Coded values (OBX-2 for coded results, OBX-3, OBR-4): CE before v2.5, CWE since. */
  codedType: 'CE' | 'CWE';
  /** Dates with time: TS before v2.5, DTM since (OBX-2 for dateTime results). */
  dateTimeType: 'TS' | 'DTM';
  /** A quantity with a comparator (<5): SN keeps it structured, ST sends the text "<5". */
  comparatorType: 'SN' | 'ST';
  /** OBX-6: 'ucum' sends code^text^UCUM, 'text' only the unit text (some receivers take nothing else). */
  units: 'ucum' | 'text';
  /** Timestamps: 'keep' the precision the store has, or cut/pad to 'second' or 'minute'. */
  timestampPrecision: 'keep' | 'second' | 'minute';
  /** 'keep' writes the offset the value has (+0100), 'omit' writes wall-clock time without one. */
  timestampOffset: 'keep' | 'omit';
  /** IANA zone to convert timestamps into before writing (e.g. the receiver's "America/Chicago"). */
  timeZone?: string;
  /** PID-3: the MRN alone (Epic patient matching) or every identifier the patient has. */
  pid3: 'mrn' | 'all';
  /** Identifier type (CX-5) written for the MRN ('mrn' mode: always; 'all' mode: when it carries none). '' = as stored. */
  mrnTypeCode: string;
  /** FHIR identifier system of the MRN; otherwise the first identifier typed MR, otherwise the first. */
  mrnSystem?: string;
  /** CX-4 for identifiers whose system maps to no assigning authority (Epic sites often use "EPI"). */
  defaultAssigningAuthority?: string;
  /** Identifier system URI → CX-4 / EI namespace (reverse of the inbound identifierSystems map). */
  assigningAuthorities: Record<string, string>;
  /** Coding system URI → HL7 coding system name (CWE-3); merged over the HL7 table 0396 names. */
  codingSystemNames: Record<string, string>;
  /** Order status map override (FHIR ServiceRequest.status → ORC-5). */
  orderStatus: Record<string, string>;
  /**
   * Also send resources that came from an HL7 v2 message with MSH-11 T or D (tagged by the inbound
   * mapper); such messages then carry that processing id in MSH-11. Off: only production data goes out.
   */
  forwardNonProduction: boolean;
}

const BASE: Dialect = {
  version: '2.5.1',
  sendingApplication: 'CONFLUX',
  sendingFacility: 'CONFLUX',
  receivingApplication: '',
  receivingFacility: '',
  processingId: 'P',
  controlIdPrefix: 'CFX',
  messageStructure: true,
  orderMessage: 'ORM',
  codedType: 'CWE',
  dateTimeType: 'DTM',
  comparatorType: 'SN',
  units: 'ucum',
  timestampPrecision: 'keep',
  timestampOffset: 'keep',
  pid3: 'all',
  mrnTypeCode: '',
  assigningAuthorities: {},
  codingSystemNames: {},
  orderStatus: {},
  forwardNonProduction: false,
};

export const PROFILES: Record<ProfileName, Dialect> = {
  generic: BASE,
  epic: {
    ...BASE,
    version: '2.3',
    receivingApplication: 'EPIC',
    messageStructure: false,
    codedType: 'CE',
    dateTimeType: 'TS',
    units: 'text',
    timestampPrecision: 'second',
    timestampOffset: 'omit',
    pid3: 'mrn',
    mrnTypeCode: 'MRN',
  },
  cerner: {
    ...BASE,
    version: '2.5.1',
    receivingApplication: 'CERNER',
    orderMessage: 'OML',
    timestampPrecision: 'second',
    timestampOffset: 'keep',
    pid3: 'all',
    mrnTypeCode: 'MRN',
  },
};

/** The profile's defaults with the destination's overrides on top (unknown keys are refused earlier). */
export function dialectFor(profile: ProfileName, options: Partial<Dialect> = {}): Dialect {
  const base = PROFILES[profile];
  return {
    ...base,
    ...options,
    assigningAuthorities: { ...base.assigningAuthorities, ...options.assigningAuthorities },
    codingSystemNames: { ...base.codingSystemNames, ...options.codingSystemNames },
    orderStatus: { ...base.orderStatus, ...options.orderStatus },
  };
}

export const DIALECT_KEYS = new Set(Object.keys(BASE).concat(['timeZone', 'mrnSystem', 'defaultAssigningAuthority']));
