/**
 * The DIMSE edge of the error model (docs/errors.md): every failure a DICOM peer is answered with becomes a DIMSE
 * status and an Error Comment (0000,0902) here, and STOW-RS reports the same status as its FailureReason.
 */
import { ConfluxError, type ErrorCode, type HoldKind } from '../../src/index.js';
import { MppsError } from './mpps.js';
import { DicomParseError } from './part10.js';

/** DIMSE status codes reused as STOW-RS FailureReason (PS3.4 B.2.3, PS3.18 Table 10.5.3-1). */
export const STATUS = {
  success: 0x0000,
  outOfResources: 0xa700,
  sopClassMismatch: 0xa900,
  cannotUnderstand: 0xc000,
  processingFailure: 0x0110,
  sopClassNotSupported: 0x0122,
  /**
   * The instance's Study (Series, SOP Instance) UID already belongs to another patient. PS3.4 B.2.3 has no
   * status for it; of its failure classes, Cxxx "Error: Cannot understand" (implementation-specific low bits)
   * is the one that fits: A7xx "Refused: Out of Resources" tells a modality to retry later (it would resend
   * the refused instance until someone acts) and A9xx claims the data set does not match its SOP class,
   * which is false. 0xC001 keeps it apart from 0xC000 (malformed data) in logs and STOW FailureReason.
   */
  identityConflict: 0xc001,
} as const;

export interface IngestErrorDetail {
  /** What the sender reads in Error Comment (0000,0902), an LO of at most 64 characters; default: the message. */
  comment?: string;
  /** Set when the instance is kept in the message log as held for an operator instead of as an error. */
  holdKind?: HoldKind;
  sopUid?: string;
  sopClassUid?: string;
}

/** A DICOM instance or query refused with a DIMSE status (also what STOW-RS reports per instance). */
export class IngestError extends ConfluxError {
  constructor(
    readonly dimseStatus: number,
    message: string,
    readonly detail: IngestErrorDetail = {},
  ) {
    super(detail.holdKind === 'identity-conflict' ? 'identity-conflict' : 'dicom-refused', message);
  }

  /** The Error Comment: DIMSE and STOW-RS both carry it as LO (64 characters at most). */
  get comment(): string {
    return (this.detail.comment ?? this.message).slice(0, 64);
  }
}


/** The status of a failure that carries none of its own, by code; any other code gets the service's fallback. */
export const DIMSE_STATUS_BY_CODE: Partial<Record<ErrorCode, number>> = {
  'dicom-parse': STATUS.cannotUnderstand,
  'identity-conflict': STATUS.identityConflict,
};

export interface DimseFailure {
  status: number;
  /** Error Comment: an LO, 64 characters at most. */
  comment: string;
  /** The whole message, for the log. */
  message: string;
}

/**
 * The DIMSE answer to a failure. IngestError and MppsError carry their own status; other errors of the model are
 * mapped by code; anything else (a bug, a lost database) answers `fallback`, the service's generic failure status.
 */
export function dimseFailure(err: unknown, fallback: number): DimseFailure {
  const message = err instanceof Error ? err.message : String(err);
  if (err instanceof IngestError) return { status: err.dimseStatus, comment: err.comment, message };
  if (err instanceof MppsError) return { status: err.dimseStatus, comment: message.slice(0, 64), message };
  const byCode = err instanceof ConfluxError ? DIMSE_STATUS_BY_CODE[err.code] : undefined;
  return { status: byCode ?? fallback, comment: message.slice(0, 64), message };
}

/** A failure while storing an instance, as the IngestError that is logged and answered (C-STORE, STOW-RS). */
export function asIngestError(err: unknown): IngestError {
  if (err instanceof IngestError) return err;
  if (err instanceof DicomParseError) return new IngestError(STATUS.cannotUnderstand, err.message);
  return new IngestError(STATUS.outOfResources, `instance could not be stored: ${err instanceof Error ? err.message : String(err)}`);
}
