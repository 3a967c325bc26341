/**
 * Conflux's one error model (docs/errors.md). Every failure a caller can act on is a ConfluxError: a stable
 * `code` to branch on, the HTTP status and OperationOutcome issue type it means, and a message that says what
 * was wrong. Each edge maps it in one place: HTTP → OperationOutcome (src/http/error-outcome.ts), MLLP → ACK code
 * + ERR (facades/hl7v2/inbound/ack.ts), DIMSE → status + Error Comment (facades/dicom/dimse/failure.ts),
 * CLI → message + exit code (src/cli-errors.ts). Anything that is not a ConfluxError is a bug: every edge answers
 * it as an internal error and logs it.
 */
import type { OperationOutcome, OperationOutcomeIssue } from '@medplum/fhirtypes';

export type IssueType = OperationOutcomeIssue['code'];

/**
 * The stable codes, with the HTTP status and OperationOutcome issue type each one means. FHIR failures (FhirError)
 * use their issue type as code; the others name what went wrong in the domain that raised them.
 */
export const ERROR_CODES = {
  // FHIR interaction failures (FhirError: its own status, its first issue's type as code).
  invalid: { status: 400, issue: 'invalid' },
  structure: { status: 400, issue: 'structure' },
  required: { status: 400, issue: 'required' },
  value: { status: 400, issue: 'value' },
  'code-invalid': { status: 400, issue: 'code-invalid' },
  login: { status: 401, issue: 'login' },
  forbidden: { status: 403, issue: 'forbidden' },
  'not-found': { status: 404, issue: 'not-found' },
  'not-supported': { status: 405, issue: 'not-supported' },
  conflict: { status: 409, issue: 'conflict' },
  duplicate: { status: 409, issue: 'duplicate' },
  deleted: { status: 410, issue: 'deleted' },
  'too-costly': { status: 413, issue: 'too-costly' },
  processing: { status: 422, issue: 'processing' },
  'business-rule': { status: 422, issue: 'business-rule' },
  informational: { status: 200, issue: 'informational' },
  exception: { status: 500, issue: 'exception' },
  timeout: { status: 504, issue: 'timeout' },
  // Domain failures.
  /** An identifier (order number, accession, UID, sample id) already belongs to another patient (DESIGN principle 5). */
  'identity-conflict': { status: 409, issue: 'conflict' },
  /** An HL7 v2 message that cannot be parsed at all (MSH unreadable). */
  'hl7-parse': { status: 400, issue: 'structure' },
  /** An HL7 v2 message whose fields cannot be mapped (ERR names each one). */
  'hl7-data': { status: 422, issue: 'processing' },
  /** An HL7 v2 message this server does not take (type, version, processing id). */
  'hl7-reject': { status: 422, issue: 'not-supported' },
  /** A DICOM object that cannot be parsed. */
  'dicom-parse': { status: 400, issue: 'structure' },
  /** A DICOM instance or query refused with a DIMSE status of its own. */
  'dicom-refused': { status: 409, issue: 'processing' },
  /** A DICOM transfer syntax or encoding the fast path does not read (internal: the slow path takes over). */
  'dicom-unsupported': { status: 415, issue: 'not-supported' },
  'blob-not-found': { status: 404, issue: 'not-found' },
  /** An outbound MLLP peer that cannot be reached, timed out or dropped the connection. */
  'mllp-transport': { status: 502, issue: 'transient' },
  /** An outbound peer answered with something that is not a usable ACK. */
  'ack-protocol': { status: 502, issue: 'invalid' },
  /** An outbound message that cannot be built from the stored resources (becomes a dead letter). */
  'outbound-build': { status: 422, issue: 'processing' },
  /** OAuth 2.0 / SMART failure, answered per RFC 6749 by smart/. */
  oauth: { status: 400, issue: 'security' },
  'scope-invalid': { status: 400, issue: 'invalid' },
  /** A refresh token presented again after rotation: the family was revoked. */
  'token-reuse': { status: 400, issue: 'security' },
  /** Wrong command-line use (unknown command, missing or conflicting flags). */
  usage: { status: 400, issue: 'invalid' },
  /** The database was migrated by a newer Conflux than this one (a rolling upgrade in the wrong order). */
  'schema-too-new': { status: 503, issue: 'not-supported' },
  /** Internal control flow (a stopped job, a lost claim): never reaches a user. */
  cancelled: { status: 503, issue: 'transient' },
} as const satisfies Record<string, { status: number; issue: IssueType }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface ConfluxErrorOptions {
  /** Overrides the code's HTTP status (FhirError: 405, 406 and 415 are all 'not-supported'). */
  status?: number;
  issue?: IssueType;
  /** FHIRPath of the element at fault, for the OperationOutcome. */
  expression?: string;
  cause?: unknown;
}

export class ConfluxError extends Error {
  readonly code: ErrorCode;
  /** The HTTP status this failure answers with. */
  readonly httpStatus: number;
  readonly issueType: IssueType;
  readonly expression?: string;

  constructor(code: ErrorCode, message: string, opts: ConfluxErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.code = code;
    this.httpStatus = opts.status ?? ERROR_CODES[code].status;
    this.issueType = opts.issue ?? ERROR_CODES[code].issue;
    this.expression = opts.expression;
  }

  /** The OperationOutcome this failure is answered with over HTTP. */
  toOutcome(): OperationOutcome {
    return {
      resourceType: 'OperationOutcome',
      issue: [{ severity: 'error', code: this.issueType, diagnostics: this.message, ...(this.expression ? { expression: [this.expression] } : {}) }],
    };
  }
}

/** True for a code of this model (an OperationOutcome issue type that is not one is answered as 'exception'). */
export function isErrorCode(code: string | undefined): code is ErrorCode {
  return code !== undefined && Object.hasOwn(ERROR_CODES, code);
}
