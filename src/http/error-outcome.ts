/**
 * The HTTP edge of the error model (docs/errors.md): every failure an HTTP client is answered with becomes a status
 * and an OperationOutcome here. A ConfluxError answers with its own status and outcome; Express's body parser
 * failures with 413/400; anything else is a bug: 500 with no detail (the server log has it).
 */
import type { OperationOutcome } from '@medplum/fhirtypes';
import { ConfluxError } from '../errors.js';
import { FhirError, outcome } from '../fhir/outcome.js';

export interface HttpFailure {
  status: number;
  outcome: OperationOutcome;
  headers: Record<string, string>;
  /** False for a failure the client caused and was told about; true when the server log must have it. */
  internal: boolean;
}

export function httpFailure(err: unknown): HttpFailure {
  if (err instanceof ConfluxError) {
    return { status: err.httpStatus, outcome: err.toOutcome(), headers: err instanceof FhirError ? err.headers : {}, internal: err.httpStatus >= 500 && !(err instanceof FhirError) };
  }
  const e = err as { type?: string; message?: string; limit?: number } | undefined;
  if (e?.type === 'entity.too.large') {
    return { status: 413, outcome: outcome('error', 'too-costly', `Request body is larger than the limit of ${e.limit} bytes (MAX_BODY_BYTES)`), headers: {}, internal: false };
  }
  if (e?.type === 'entity.parse.failed' || e?.type === 'encoding.unsupported') {
    return { status: 400, outcome: outcome('error', 'structure', `Request body could not be read: ${e.message}`), headers: {}, internal: false };
  }
  return { status: 500, outcome: outcome('error', 'exception', 'Internal server error; the details are in the server log'), headers: {}, internal: true };
}
