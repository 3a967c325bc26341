/**
 * The public module of the core: what facades (facades/*) and the authorization server (smart/) may use.
 * Anything not exported here is an implementation detail of src/.
 */
export { ConfluxError, ERROR_CODES, isErrorCode, type ErrorCode, type IssueType } from './errors.js';
export type { Database, Queryable, Tx, QueryResult } from './db/database.js';
export type { Config } from './config.js';
export { openBlobStore, type BlobStore } from './blob/index.js';
export type { Facade, FacadeContext, Logger, RunningFacade } from './facade.js';
export type { Runtime } from './runtime.js';
export { type AccessPolicy, type Interaction, systemAccess } from './fhir/access.js';
export { FhirError, absentIfGone, outcome, allOk, badRequest, notFound, gone, conflict, preconditionFailed, forbidden } from './fhir/outcome.js';
export { Repository, type ChangeEvent, type ChangeHook, type WriteResult, type StoredVersion, parseQuery, parseETag } from './fhir/repository.js';
export { FhirRouter, type FhirRequest, type FhirResponse, type HttpMethod } from './fhir/router.js';
export { systemWriter, responseBundle, type SystemWriter, type WriteRequest, type WrittenEntry, type FailedEntry } from './fhir/write.js';
export { loadFhirDefinitions } from './fhir/definitions.js';
export { assertValidResource, isResourceType } from './fhir/validation.js';
export { Sql } from './fhir/search/query.js';
export { searchResources, searchIds, patientCompartmentsOf, type SearchAccess, type SearchRequest } from './fhir/search/index.js';
export { VERSION } from './runtime.js';
export { mergePatients, isMergeRepoint, PATIENT_AUDIT_SYSTEM, type PatientMergeRequest, type PatientMergeResult } from './fhir/patient-merge.js';
export * from './devices/index.js';
export * from './messages/message-log.js';
export { guardPatientIdentity, type ConflictPolicy, type GuardResult, type IdentityConflict } from './fhir/identity-guard.js';
export * from './messages/held-resolution.js';
