import type { CodeableConcept, Identifier, Observation } from '@medplum/fhirtypes';

/** One result, protocol-neutral: what an ASTM R record or a device line says, before FHIR. */
export interface ObservationDraft {
  /** The instrument's test id as sent (identity of the test for idempotence). */
  testId: string;
  code: CodeableConcept;
  loinc?: string;
  value:
    | { kind: 'quantity'; value: number; comparator?: '<' | '<=' | '>=' | '>'; unit?: string; ucum?: string }
    | { kind: 'string'; value: string }
    | { kind: 'none' };
  referenceRange?: { low?: number; high?: number; unit?: string; text?: string };
  interpretation: string[];
  status: Observation['status'];
  /** The reading's own time: FHIR dateTime (with offset) and the instant. */
  effective?: string;
  at?: Date;
  /** When the result was issued (ASTM R-13, test completed), when it differs from the effective time's source. */
  issued?: Date;
  /** Analyzer module / instrument id of the R record, if any. */
  instrument?: string;
  notes: string[];
}

/** One O record (or one device line): the unit that is filed or held together. */
export interface ReportDraft {
  /** Specimen id (O-3) or undefined for device lines. */
  sampleId?: string;
  /** DiagnosticReport code; absent → no DiagnosticReport (plain device readings). */
  code?: CodeableConcept;
  status: 'registered' | 'partial' | 'preliminary' | 'final' | 'amended' | 'corrected' | 'cancelled';
  effective?: string;
  at?: Date;
  observations: ObservationDraft[];
  /** Patient identifiers found in the P record (practice-, lab-assigned, third id). */
  patientIdentifiers: Identifier[];
  patientName?: string;
  notes: string[];
}

/** A whole transmission's readings and who sent them. */
export interface ReadingSet {
  /** Identifiers of the sending instrument (from the H record, the port, the configuration). */
  deviceIdentifiers: Identifier[];
  deviceName: string;
  /** When the instrument says it sent the message (H-14). */
  sentAt?: Date;
  reports: ReportDraft[];
  warnings: string[];
  /** Message control id (H-3), when the instrument sends one. */
  controlId?: string;
  /** Processing id (H-12): P production, Q quality control, T training, D debugging. */
  processingId?: string;
}
