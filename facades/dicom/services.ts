/** What the DIMSE and DICOMweb front ends share: the index, the blob store, the FHIR sync and MPPS. */
import type { Database, Repository } from '../../src/index.js';
import type { ImagingStudySync } from './imaging-study.js';
import type { MppsService } from './mpps.js';
import type { InstanceStore } from './store.js';

export interface DicomServices {
  db: Database;
  repo: Repository;
  store: InstanceStore;
  sync: ImagingStudySync;
  mpps: MppsService;
  /** Asks for a sync of dirty studies shortly (coalesced), for C-STORE streams that never release. */
  syncSoon(): void;
}
