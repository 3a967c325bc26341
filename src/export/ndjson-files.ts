import type { BlobStore } from '../blob/index.js';

const CHUNK_CHARS = 64 * 1024;

export interface WrittenFile {
  part: number;
  count: number;
  size: number;
  key: string;
}

/**
 * Streams lines (batches of ndjson lines without newlines) into files of at most `maxPerFile` lines each,
 * through the blob store. Only one batch is held at a time, so memory does not depend on the export's size.
 * `onFile` runs after each file is complete (record it, check for cancellation, throttle); throwing from it
 * stops the stream and closes the source.
 */
export async function writeNdjsonParts(
  store: BlobStore,
  batches: AsyncIterable<string[]>,
  opts: { maxPerFile: number; keyOf: (part: number) => string; onFile: (f: WrittenFile) => Promise<void>; signal?: AbortSignal },
): Promise<number> {
  const it = batches[Symbol.asyncIterator]();
  let pending: string[] = [];
  let at = 0;
  let exhausted = false;
  let total = 0;
  /** Ensures `pending` has unread lines unless the source is exhausted. */
  const fill = async () => {
    while (at >= pending.length && !exhausted) {
      opts.signal?.throwIfAborted();
      const n = await it.next();
      if (n.done) exhausted = true;
      else {
        pending = n.value;
        at = 0;
      }
    }
  };
  try {
    for (let part = 1; ; part++) {
      await fill();
      // No empty files: a part starts only when there is a line for it.
      if (at >= pending.length) break;
      let count = 0;
      async function* body(): AsyncGenerator<string> {
        while (count < opts.maxPerFile) {
          await fill();
          if (at >= pending.length) return;
          // Chunks of about CHUNK_CHARS: big strings would land in V8's large-object space, which only a full
          // GC frees, and the heap (RSS) would grow with the export's size before that GC comes.
          const limit = Math.min(pending.length, at + (opts.maxPerFile - count));
          let chunk = '';
          let end = at;
          while (end < limit && chunk.length < CHUNK_CHARS) chunk += `${pending[end++]}\n`;
          count += end - at;
          at = end;
          yield chunk;
        }
      }
      const key = opts.keyOf(part);
      const { size } = await store.put(key, body());
      total += count;
      await opts.onFile({ part, count, size, key });
    }
  } finally {
    // Closes the database cursor when we stop early (cancel, shutdown, error).
    if (!exhausted) await it.return?.();
  }
  return total;
}
