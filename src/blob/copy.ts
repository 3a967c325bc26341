/**
 * Moving blobs between stores (`conflux blobs copy --from fs --to postgres`), for a node that becomes a cluster:
 * every blob under a prefix is streamed from one store into the other (memory flat with size), then checked by size.
 * A blob already at the target with the same size is skipped, so an interrupted copy is simply run again.
 */
import type { BlobStore } from './store.js';

export interface CopyReport {
  copied: number;
  skipped: number;
  bytes: number;
}

export async function copyBlobs(from: BlobStore, to: BlobStore, prefix = ''): Promise<CopyReport> {
  const report: CopyReport = { copied: 0, skipped: 0, bytes: 0 };
  for (const blob of await from.list(prefix)) {
    if ((await to.stat(blob.key))?.size === blob.size) {
      report.skipped++;
      continue;
    }
    const { size } = await to.put(blob.key, await from.get(blob.key));
    if (size !== blob.size) throw new Error(`Blob "${blob.key}": ${size} bytes arrived of ${blob.size}; the copy stopped there`);
    report.copied++;
    report.bytes += size;
  }
  return report;
}
