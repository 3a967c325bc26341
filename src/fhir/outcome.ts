import type { OperationOutcome, OperationOutcomeIssue } from '@medplum/fhirtypes';

export type IssueCode = OperationOutcomeIssue['code'];

/**
 * A failure a client can act on: an HTTP status plus the OperationOutcome that explains it.
 * Thrown anywhere below the HTTP adapter; the adapter turns it into the response as is.
 */
export class FhirError extends Error {
  constructor(
    readonly status: number,
    readonly outcome: OperationOutcome,
    readonly headers: Record<string, string> = {},
  ) {
    super(outcome.issue?.map((i) => i.diagnostics ?? i.details?.text).join('; ') || `HTTP ${status}`);
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
