/**
 * The public module of the core: what facades (facades/*) and the authorization server (smart/) may use, each
 * export named on purpose (docs/architecture.md lists them by area). Anything not exported here is an
 * implementation detail of src/. Config modules import it too (the supervisor loads them, so it loads the core once).
 */
export { ConfluxError, ERROR_CODES, isErrorCode, type ErrorCode, type IssueType } from './errors.js';
export type { Database, Queryable, Tx, QueryResult } from './db/database.js';
export type { Config } from './config.js';
export { ConfigError, envReader, type Environment, type ListenPort, type PluginConfig } from './env.js';
export type { BlobStore } from './blob/index.js';
export type { Facade, FacadeContext, Logger, RunningFacade } from './facade.js';
export type { Runtime } from './runtime.js';
export { type AccessPolicy, type Interaction, systemAccess } from './fhir/access.js';
export { FhirError, absentIfGone, outcome, allOk, badRequest, notFound, gone, conflict, preconditionFailed, forbidden } from './fhir/outcome.js';
export { Repository, type ChangeEvent, type ChangeHook, type WriteResult, type StoredVersion, parseQuery } from './fhir/repository.js';
export { parseETag } from './fhir/versions.js';
export { FhirRouter, type FhirRequest, type FhirResponse, type HttpMethod } from './fhir/router.js';
export { systemWriter, responseBundle, type SystemWriter, type WriteRequest, type WrittenEntry, type FailedEntry } from './fhir/write.js';
export { loadFhirDefinitions } from './fhir/definitions.js';
export { assertValidResource, isResourceType } from './fhir/validation.js';
export { Sql } from './fhir/search/query.js';
export { searchResources, searchIds, patientCompartmentsOf, type SearchAccess, type SearchRequest } from './fhir/search/index.js';
export { VERSION } from './runtime.js';
export { mergePatients, isMergeRepoint, PATIENT_AUDIT_SYSTEM, type PatientMergeRequest, type PatientMergeResult } from './fhir/patient-merge.js';
// Devices: the serial facade's filing, and the HL7 v2 facade's readings (its DevicePort).
export {
  resolveAssociation,
  explainAssociation,
  findDeviceIds,
  holdForAssociation,
  countReadings,
  deviceStore,
  deviceAdminRouter,
  normalizeIdentifiers,
  SERIAL_PORT_SYSTEM,
  type DeviceStore,
} from './devices/index.js';
// The message log every facade writes its traffic to.
export {
  recordMessage,
  storableText,
  updateMessage,
  findDuplicate,
  getMessage,
  listMessages,
  pruneMessages,
  MESSAGE_STATUSES,
  type MessageStatus,
  type MessageDirection,
  type HoldKind,
  type NewMessage,
  type MessagePatch,
  type MessageSummary,
  type MessageRecord,
  type MessageFilter,
} from './messages/message-log.js';
export { guardPatientIdentity, type ConflictPolicy, type GuardResult, type IdentityConflict } from './fhir/identity-guard.js';
// Messages held for an identity conflict: each facade registers how it files one of its own as new.
export { registerHeldFiling, resolveHeldMessage, HELD_ACTIONS, type HeldAction, type FiledMessage, type FileAsNew } from './messages/held-resolution.js';
