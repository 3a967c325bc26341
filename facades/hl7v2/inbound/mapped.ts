import type { Bundle, Identifier } from '@medplum/fhirtypes';

/** What a mapper hands to the processor: the transaction Bundle and what it needs to file it. */
export interface MappedMessage {
  bundle: Bundle;
  /** The urn:uuid of the Patient entry, when the message identified one. */
  patientRef?: string;
  patientKey?: Identifier;
  /** A device message without a patient identifier: the patient must come from an association. */
  needsAssociation?: { deviceIdentifiers: Identifier[]; location?: string; at: Date };
}
