/**
 * AuditEvents for token issue, refusal, login and launch, written through the core's system write port
 * (docs/design.md principle 1), so they are versioned, searchable and exported like any resource.
 */
import type { AuditEvent, AuditEventAgent } from '@medplum/fhirtypes';
import type { SystemWriter } from '../src/index.js';

export const AUDIT_SUBTYPE_SYSTEM = 'https://conflux.dev/fhir/CodeSystem/smart-audit';

export type AuditAction =
  | 'token-issued'
  | 'token-refused'
  | 'authorize-refused'
  | 'login-failed'
  | 'launch-created'
  | 'code-reused'
  | 'refresh-reused'
  | 'token-revoked';

export interface AuditInfo {
  action: AuditAction;
  success: boolean;
  detail: string;
  clientId?: string;
  /** 'Practitioner/1' or a username when the user has no FHIR identity. */
  user?: string;
  patient?: string;
  ip?: string;
}

export type Auditor = (info: AuditInfo) => Promise<void>;

export function makeAuditor(write: SystemWriter, log: { error(msg: string): void }): Auditor {
  return async (info) => {
    const agents: AuditEventAgent[] = [];
    const network = info.ip ? { address: info.ip, type: '2' as const } : undefined;
    if (info.user) {
      agents.push({
        who: /^[A-Za-z]+\/[^/]+$/.test(info.user) ? { reference: info.user } : { display: info.user },
        requestor: true,
        ...(network ? { network } : {}),
      });
    }
    if (info.clientId) {
      agents.push({
        who: { identifier: { system: 'urn:conflux:smart:client', value: info.clientId } },
        requestor: !info.user,
        ...(network && !info.user ? { network } : {}),
      });
    }
    if (!agents.length) agents.push({ who: { display: 'unidentified client' }, requestor: true, ...(network ? { network } : {}) });
    const event: AuditEvent = {
      resourceType: 'AuditEvent',
      type: { system: 'http://dicom.nema.org/resources/ontology/DCM', code: '110114', display: 'User Authentication' },
      subtype: [{ system: AUDIT_SUBTYPE_SYSTEM, code: info.action }],
      action: 'E',
      recorded: new Date().toISOString(),
      outcome: info.success ? '0' : '4',
      outcomeDesc: info.detail,
      agent: agents,
      source: {
        observer: { display: 'Conflux SMART authorization server' },
        type: [{ system: 'http://terminology.hl7.org/CodeSystem/security-source-type', code: '4', display: 'Application Server' }],
      },
      ...(info.patient ? { entity: [{ what: { reference: `Patient/${info.patient}` } }] } : {}),
    };
    try {
      await write.transaction({ actor: 'smart:audit', entries: [{ resource: event, request: { method: 'POST', url: 'AuditEvent' } }] });
    } catch (err) {
      // Issuing callers check `strictAudit`; a refusal is answered the same whether or not its audit was stored.
      log.error(`AuditEvent ${info.action} could not be written: ${(err as Error).message}`);
      throw err;
    }
  };
}
