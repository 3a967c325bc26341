/** DICOM facade settings, read once from the environment at start (see docs/dicom.md): the plug-in's config module. */
import { readFileSync } from 'node:fs';
import { ConfigError, envReader, type Environment, type PluginConfig } from '../../src/index.js';

export interface KnownAe {
  aeTitle: string;
  /** Where C-MOVE sends to; without host/port the AE may only call us. */
  host?: string;
  port?: number;
  /** Modalities this station performs: worklist entries of that modality are scheduled on it. */
  modalities?: string[];
}

export interface DicomConfig {
  /** DIMSE listener (DICOM_PORT; 0 picks a free one). */
  port: number;
  aeTitle: string;
  acceptAnyAe: boolean;
  aes: KnownAe[];
  /** Issuer used for PatientID when an instance names none (default: the sending AE title). */
  defaultIssuer?: string;
  /** Identifier-system overrides by issuer, as in the HL7 facade's mapping file (identifierSystems). */
  identifierSystems: Record<string, string>;
  /** IID viewer URL template: {studyUID}, {accessionNumber}, {patientID}, {dicomweb} are substituted. */
  viewerUrlTemplate: string;
}

/** What src/plugins.ts calls at start. */
export function config(env: Environment): PluginConfig<DicomConfig> {
  const settings = loadDicomConfig(env);
  return { settings, ports: [{ variable: 'DICOM_PORT', label: 'DIMSE', port: settings.port }] };
}

export function loadDicomConfig(env: Environment): DicomConfig {
  const read = envReader(env);
  let aes: KnownAe[] = [];
  if (env.DICOM_AES_FILE) {
    try {
      const parsed = JSON.parse(readFileSync(env.DICOM_AES_FILE, 'utf8')) as unknown;
      const list = Array.isArray(parsed) ? parsed : (parsed as { aes?: unknown }).aes;
      if (!Array.isArray(list)) throw new Error('expected a JSON array of {aeTitle, host, port, modalities}');
      aes = list.map((a, i) => {
        const ae = a as KnownAe;
        if (!ae || typeof ae.aeTitle !== 'string' || !ae.aeTitle.trim()) throw new Error(`entry ${i} has no aeTitle`);
        if (ae.port !== undefined && !Number.isInteger(ae.port)) throw new Error(`entry ${i} (${ae.aeTitle}): port must be an integer`);
        return { ...ae, aeTitle: ae.aeTitle.trim() };
      });
    } catch (err) {
      throw new ConfigError('DICOM_AES_FILE', `DICOM_AES_FILE ${env.DICOM_AES_FILE}: ${(err as Error).message}`);
    }
  }
  let identifierSystems: Record<string, string> = {};
  if (env.HL7_MAPPING_FILE) {
    try {
      identifierSystems = (JSON.parse(readFileSync(env.HL7_MAPPING_FILE, 'utf8')) as { identifierSystems?: Record<string, string> }).identifierSystems ?? {};
    } catch {
      // The HL7 facade reports a broken mapping file; here it only refines identifier systems.
    }
  }
  return {
    port: read.port('DICOM_PORT', 11112),
    aeTitle: (env.DICOM_AE_TITLE ?? 'CONFLUX').trim(),
    acceptAnyAe: read.bool('DICOM_ACCEPT_ANY_AE', false),
    aes,
    defaultIssuer: env.DICOM_DEFAULT_ISSUER || undefined,
    identifierSystems,
    viewerUrlTemplate: env.DICOM_VIEWER_URL ?? '{dicomweb}/studies/{studyUID}',
  };
}

/**
 * PatientID issuer → FHIR Identifier.system, by the HL7 facade's rules for an assigning authority
 * (CX-4), so the same patient arriving by ADT and by C-STORE is one Patient.
 */
export function issuerToSystem(issuer: string, universalId: string, universalType: string, cfg: DicomConfig): string {
  const map = cfg.identifierSystems;
  if (issuer && map[issuer]) return map[issuer];
  if (universalId && map[universalId]) return map[universalId];
  if (universalId && /^ISO$/i.test(universalType)) return `urn:oid:${universalId}`;
  if (universalId && /^(URI|URL)$/i.test(universalType)) return universalId;
  if (issuer) return `urn:conflux:hl7v2:aa:${encodeURIComponent(issuer)}`;
  if (universalId) return `urn:conflux:hl7v2:aa:${encodeURIComponent(universalId)}`;
  return `urn:conflux:hl7v2:aa:unknown`;
}

/** The inverse, for worklist responses: the IssuerOfPatientID a modality should echo back. */
export function systemToIssuer(system: string | undefined, cfg: DicomConfig): string {
  if (!system) return '';
  for (const [k, v] of Object.entries(cfg.identifierSystems)) if (v === system) return k;
  if (system.startsWith('urn:conflux:hl7v2:aa:')) return decodeURIComponent(system.slice('urn:conflux:hl7v2:aa:'.length));
  if (system.startsWith('urn:oid:')) return system.slice(8);
  return system;
}
