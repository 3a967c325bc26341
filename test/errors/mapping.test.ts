/**
 * The error model's mapping at each edge (docs/errors.md): the table of codes, and what each edge answers for a
 * failure of each kind. The edges' behaviour through their real interfaces is tested beside each one (HTTP here and
 * in test/fhir, MLLP in test/hl7v2/inbound.test.ts, DIMSE in test/dicom/dimse.test.ts, CLI in test/cli).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { OperationOutcome } from '@medplum/fhirtypes';
import { cliFailure, EXIT, usageError } from '../../src/cli-errors.js';
import type { Database } from '../../src/db/database.js';
import { ConfluxError, ERROR_CODES, type ErrorCode } from '../../src/errors.js';
import { httpFailure } from '../../src/http/error-outcome.js';
import { BlobNotFoundError } from '../../src/blob/index.js';
import { FhirError, conflict, notFound } from '../../src/index.js';
import { dimseFailure, IngestError, STATUS } from '../../facades/dicom/failure.js';
import { StudyIdentityConflict } from '../../facades/dicom/imaging-study.js';
import { MppsError } from '../../facades/dicom/mpps.js';
import { DicomParseError } from '../../facades/dicom/part10.js';
import { HL7_ERROR, Hl7DataError, Hl7RejectError, refusalFor } from '../../facades/hl7v2/inbound/ack.js';
import { Hl7ParseError } from '../../facades/hl7v2/message.js';
import { testDatabases } from '../helpers/db.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

describe('the table of codes', () => {
  it('gives every code an HTTP status and an OperationOutcome issue type', () => {
    for (const [code, m] of Object.entries(ERROR_CODES)) {
      expect(m.status, code).toBeGreaterThanOrEqual(200);
      expect(m.status, code).toBeLessThan(600);
      expect(m.issue, code).toMatch(/^[a-z-]+$/);
    }
  });

  it('a ConfluxError takes its status and issue type from its code, and answers an OperationOutcome naming them', () => {
    const e = new ConfluxError('identity-conflict', 'accession A1 already belongs to another patient', { expression: 'ServiceRequest.identifier' });
    expect(e).toMatchObject({ code: 'identity-conflict', httpStatus: 409, issueType: 'conflict', name: 'ConfluxError' });
    expect(e.toOutcome()).toEqual({
      resourceType: 'OperationOutcome',
      issue: [{ severity: 'error', code: 'conflict', diagnostics: 'accession A1 already belongs to another patient', expression: ['ServiceRequest.identifier'] }],
    });
  });

  it('a FhirError is a ConfluxError whose code is its issue type and whose status is its own', () => {
    const e = FhirError.of(415, 'not-supported', 'send application/fhir+json');
    expect(e).toBeInstanceOf(ConfluxError);
    expect(e).toMatchObject({ code: 'not-supported', httpStatus: 415, status: 415 });
    expect(notFound('Patient/x is not known').code).toBe('not-found');
  });

  it('the domain errors carry their codes', () => {
    const cases: Array<[Error, ErrorCode]> = [
      [new Hl7ParseError('MSH-1 missing'), 'hl7-parse'],
      [new Hl7DataError([{ code: 102, message: 'x' }]), 'hl7-data'],
      [new Hl7RejectError([{ code: 200, message: 'x' }]), 'hl7-reject'],
      [new DicomParseError('no preamble'), 'dicom-parse'],
      [new IngestError(0xa900, 'x'), 'dicom-refused'],
      [new IngestError(STATUS.identityConflict, 'x', { holdKind: 'identity-conflict' }), 'identity-conflict'],
      [new MppsError(0x0110, 'x'), 'dicom-refused'],
      [new StudyIdentityConflict('1.2', 'ImagingStudy/1', 'Patient/2'), 'identity-conflict'],
      [new BlobNotFoundError('a/b'), 'blob-not-found'],
      [usageError('missing --name'), 'usage'],
    ];
    for (const [err, code] of cases) expect((err as ConfluxError).code, err.constructor.name).toBe(code);
  });
});

describe('HTTP → status and OperationOutcome', () => {
  it('answers a ConfluxError with its status and outcome, a FhirError with its headers', () => {
    expect(httpFailure(new BlobNotFoundError('x/1'))).toMatchObject({ status: 404, outcome: { issue: [{ code: 'not-found', diagnostics: 'Blob "x/1" does not exist' }] }, internal: false });
    const auth = new FhirError(401, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'login', diagnostics: 'token needed' }] }, { 'WWW-Authenticate': 'Bearer' });
    expect(httpFailure(auth)).toMatchObject({ status: 401, headers: { 'WWW-Authenticate': 'Bearer' } });
    expect(httpFailure(conflict('busy')).status).toBe(409);
  });

  it("answers the body parser's failures, and hides anything else behind a 500 the log explains", () => {
    expect(httpFailure({ type: 'entity.too.large', limit: 10 })).toMatchObject({ status: 413, outcome: { issue: [{ code: 'too-costly' }] } });
    const bug = httpFailure(new TypeError('cannot read x of undefined'));
    expect(bug).toMatchObject({ status: 500, internal: true, outcome: { issue: [{ code: 'exception' }] } });
    expect(JSON.stringify(bug.outcome)).not.toContain('cannot read');
  });
});

describe('MLLP → acknowledgement code and ERR', () => {
  it('AR for a message this server does not take, AE for one it could not map or store', () => {
    const issue = { code: HL7_ERROR.unsupportedMessageType, segment: 'MSH', sequence: 1, field: 9, message: 'ZZZ^Z01 is not supported' };
    expect(refusalFor(new Hl7RejectError([issue]))).toEqual({ code: 'AR', issues: [issue] });
    expect(refusalFor(new Hl7DataError([issue]))).toEqual({ code: 'AE', issues: [issue] });
    expect(refusalFor(new Hl7ParseError('no field separator'))).toEqual({
      code: 'AE',
      issues: [{ code: HL7_ERROR.segmentSequence, segment: 'MSH', sequence: 1, field: 1, message: 'no field separator' }],
    });
  });

  it('AE 205 for an identity conflict, AE 207 naming the failure for anything else', () => {
    expect(refusalFor(new ConfluxError('identity-conflict', 'order 7 is another patient’s')).issues[0]).toMatchObject({ code: 205 });
    expect(refusalFor(new Error('connection terminated'))).toEqual({
      code: 'AE',
      issues: [{ code: HL7_ERROR.applicationInternalError, message: 'the resources could not be stored: connection terminated' }],
    });
  });
});

describe('DIMSE → status and Error Comment', () => {
  it('an error with a DIMSE status answers it; others by code, else the service fallback; comments fit an LO', () => {
    expect(dimseFailure(new IngestError(0xa900, 'long explanation', { comment: 'SOP class mismatch' }), 0xa700)).toMatchObject({ status: 0xa900, comment: 'SOP class mismatch' });
    expect(dimseFailure(new MppsError(0x0111, 'MPPS 1.2 already exists'), 0x0110)).toMatchObject({ status: 0x0111, comment: 'MPPS 1.2 already exists' });
    expect(dimseFailure(new DicomParseError('not DICOM'), 0xa700).status).toBe(STATUS.cannotUnderstand);
    expect(dimseFailure(new StudyIdentityConflict('1.2', 'ImagingStudy/1', 'Patient/2'), 0x0110).status).toBe(STATUS.identityConflict);
    const other = dimseFailure(new Error('x'.repeat(100)), 0xa700);
    expect(other).toMatchObject({ status: 0xa700, message: 'x'.repeat(100) });
    expect(other.comment).toHaveLength(64);
  });
});

describe('CLI → message and exit code', () => {
  it('2 for wrong use, 1 for any other failure; --json gets the error and its code', () => {
    expect(cliFailure(usageError('missing --name'))).toEqual({ exitCode: EXIT.usage, message: 'missing --name', json: { error: 'missing --name', code: 'usage' } });
    expect(cliFailure(notFound('message 7 not found'))).toMatchObject({ exitCode: EXIT.failure, json: { code: 'not-found' } });
    expect(cliFailure(new Error('data directory in use'))).toEqual({ exitCode: EXIT.failure, message: 'data directory in use', json: { error: 'data directory in use' } });
  });
});

describe.each(testDatabases().filter((d) => d.name === 'pglite'))('HTTP edge through the server on $name', (backend) => {
  let db: Database;
  let drop: () => Promise<void>;
  let server: TestServer;
  beforeAll(async () => {
    ({ db, drop } = await backend.open());
    server = await startTestServer(db);
  });
  afterAll(async () => {
    await server?.stop();
    await drop?.();
  });

  it('answers a missing resource with 404 and a not-found OperationOutcome, a broken body with 400 structure', async () => {
    const missing = await fetch(`${server.fhir}/Patient/nobody-here`);
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as OperationOutcome).issue?.[0]).toMatchObject({ code: 'not-found', diagnostics: expect.stringContaining('Patient/nobody-here') });
    const broken = await fetch(`${server.fhir}/Patient`, { method: 'POST', headers: { 'content-type': 'application/fhir+json' }, body: '{"resourceType":' });
    expect(broken.status).toBe(400);
    expect(((await broken.json()) as OperationOutcome).issue?.[0]).toMatchObject({ code: 'structure', diagnostics: expect.stringMatching(/not valid JSON/) });
  });
});
