import { FsBlobStore } from './fs.js';

export type { BlobStore, BlobInfo, BlobBody } from './store.js';
export { BlobNotFoundError, assertBlobKey } from './store.js';
export { FsBlobStore } from './fs.js';

/**
 * The default store: files under `<dataDir>/blobs`. An object-storage implementation of the same
 * interface can replace it later without touching callers.
 */
export function openBlobStore(opts: { dataDir: string }): FsBlobStore {
  return new FsBlobStore(`${opts.dataDir}/blobs`);
}
