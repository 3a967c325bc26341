import type { Bundle, Identifier } from '@medplum/fhirtypes';
import type { KeyOrigin } from './bundle-builder.js';

/** What a mapper hands to the processor: the transaction Bundle and what it needs to file it. */
export interface MappedMessage {
  bundle: Bundle;
  /** The urn:uuid of the Patient entry, when the message identified one. */
  patientRef?: string;
  patientKey?: Identifier;
  /** Per bundle entry, the segment and field its business key came from (for the ERR of a refused key). */
  keyOrigins?: Array<KeyOrigin | undefined>;
  /** A device message without a patient identifier: the patient must come from an association. */
  needsAssociation?: { deviceIdentifiers: Identifier[]; location?: string; at: Date };
  /**
   * ADT merges (A40/A34/A39 …): after the Bundle is written, the processor merges each prior record into its
   * survivor through the core's patient merge, in the same transaction. Values are Bundle entry fullUrls.
   */
  merges?: Array<{ survivor: string; merged: string }>;
}
