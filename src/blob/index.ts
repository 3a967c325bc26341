import type { Database } from '../db/database.js';
import { DatabaseBlobStore } from './database.js';
import { FsBlobStore } from './fs.js';
import type { BlobStore } from './store.js';

export type { BlobStore, BlobInfo, BlobBody } from './store.js';
export { BlobNotFoundError, assertBlobKey } from './store.js';
export { FsBlobStore } from './fs.js';
export { CHUNK, DatabaseBlobStore } from './database.js';
export { copyBlobs, type CopyReport } from './copy.js';

/** BLOB_STORE: `fs`, files under `<DATA_DIR>/blobs` (one node); `postgres`, the database every node shares. */
export type BlobStoreKind = 'fs' | 'postgres';

export function openBlobStore(opts: { kind?: BlobStoreKind; dataDir: string; db?: Database }): BlobStore {
  if (opts.kind === 'postgres') {
    if (!opts.db) throw new Error('BLOB_STORE=postgres needs the database');
    return new DatabaseBlobStore(opts.db);
  }
  return new FsBlobStore(`${opts.dataDir}/blobs`);
}
