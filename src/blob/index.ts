import type { Database } from '../db/database.js';
import { DatabaseBlobStore } from './database.js';
import { FsBlobStore } from './fs.js';
import { S3BlobStore, type S3Settings } from './s3.js';
import type { BlobStore } from './store.js';

export type { BlobStore, BlobInfo, BlobBody } from './store.js';
export { BlobNotFoundError, assertBlobKey } from './store.js';
export { FsBlobStore } from './fs.js';
export { CHUNK, DatabaseBlobStore } from './database.js';
export { copyBlobs, type CopyReport } from './copy.js';
export { S3BlobStore, type S3Settings } from './s3.js';

/**
 * BLOB_STORE: `fs`, files under `<DATA_DIR>/blobs` (one node); `postgres`, the database every node shares; `s3`, an
 * S3-compatible bucket every node shares.
 */
export type BlobStoreKind = 'fs' | 'postgres' | 's3';

export function openBlobStore(opts: { kind?: BlobStoreKind; dataDir: string; db?: Database; s3?: S3Settings }): BlobStore {
  if (opts.kind === 's3') {
    if (!opts.s3) throw new Error('BLOB_STORE=s3 needs S3_BUCKET');
    return new S3BlobStore(opts.s3);
  }
  if (opts.kind === 'postgres') {
    if (!opts.db) throw new Error('BLOB_STORE=postgres needs the database');
    return new DatabaseBlobStore(opts.db);
  }
  return new FsBlobStore(`${opts.dataDir}/blobs`);
}
