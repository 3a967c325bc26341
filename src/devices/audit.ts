import type { AuditEvent, AuditEventAgent } from '@medplum/fhirtypes';

/**
 * AuditEvent for a safety-relevant change made by an operator: an association opened or closed, a held
 * reading filed to a patient or discarded. `what` are the references the change touched.
 */
export function deviceAuditEvent(opts: {
  action: 'C' | 'U' | 'D';
  subtype: 'associate' | 'release' | 'assign-held' | 'discard-held' | 'device-add' | 'location-add';
  who: string;
  what: Array<{ reference?: string; display?: string }>;
  description: string;
  at?: Date;
}): AuditEvent {
  const who: NonNullable<AuditEventAgent['who']> = /^[A-Za-z]+\/[A-Za-z0-9\-.]+$/.test(opts.who)
    ? ({ reference: opts.who } as NonNullable<AuditEventAgent['who']>)
    : { display: opts.who };
  return {
    resourceType: 'AuditEvent',
    type: { system: 'http://dicom.nema.org/resources/ontology/DCM', code: '110110', display: 'Patient Record' },
    subtype: [{ system: 'urn:conflux:audit:devices', code: opts.subtype }],
    action: opts.action,
    recorded: (opts.at ?? new Date()).toISOString(),
    outcome: '0',
    outcomeDesc: opts.description,
    agent: [{ who, requestor: true }],
    source: { observer: { display: 'Conflux patient–device association' } },
    entity: opts.what.map((w) => ({ what: w.reference ? { reference: w.reference } : { display: w.display } })),
  };
}
