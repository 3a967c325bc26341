import type { OperationOutcome, OperationOutcomeIssue } from '@medplum/fhirtypes';
import { ConfluxError, isErrorCode } from '../errors.js';

export type IssueCode = OperationOutcomeIssue['code'];

/**
 * A failure of a FHIR interaction: an HTTP status plus the OperationOutcome that explains it, answered as is.
 * Its code is the first issue's type ('not-found', 'invalid', 'conflict', …).
 */
export class FhirError extends ConfluxError {
  constructor(
    readonly status: number,
    readonly outcome: OperationOutcome,
    readonly headers: Record<string, string> = {},
  ) {
    const type = outcome.issue?.[0]?.code;
    super(isErrorCode(type) ? type : 'exception', outcome.issue?.map((i) => i.diagnostics ?? i.details?.text).join('; ') || `HTTP ${status}`, {
      status,
      issue: type ?? 'exception',
    });
  }

  override toOutcome(): OperationOutcome {
    return this.outcome;
  }

  static of(status: number, code: IssueCode, diagnostics: string, expression?: string): FhirError {
    return new FhirError(status, outcome('error', code, diagnostics, expression));
  }
}

export function outcome(
  severity: OperationOutcomeIssue['severity'],
  code: IssueCode,
  diagnostics: string,
  expression?: string,
): OperationOutcome {
  return {
    resourceType: 'OperationOutcome',
    issue: [{ severity, code, diagnostics, ...(expression ? { expression: [expression] } : {}) }],
  };
}

export const badRequest = (msg: string, expression?: string) => FhirError.of(400, 'invalid', msg, expression);
export const notFound = (msg: string) => FhirError.of(404, 'not-found', msg);
export const gone = (msg: string) => FhirError.of(410, 'deleted', msg);
export const conflict = (msg: string) => FhirError.of(409, 'conflict', msg);
export const preconditionFailed = (msg: string) => FhirError.of(412, 'conflict', msg);
export const forbidden = (msg: string) => FhirError.of(403, 'forbidden', msg);

export function allOk(msg = 'All OK'): OperationOutcome {
  return outcome('information', 'informational', msg);
}

/** For `.catch()` on a read whose absence is an answer: a 404 or 410 becomes undefined, any other failure stays one. */
export function absentIfGone(err: unknown): undefined {
  if (err instanceof FhirError && (err.status === 404 || err.status === 410)) return undefined;
  throw err;
}
