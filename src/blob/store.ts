import { Readable, Transform } from 'node:stream';
import { ConfluxError } from '../errors.js';

/** What `put` accepts: a Node stream or any (async) iterable of chunks (strings are written as UTF-8). */
export type BlobBody = Readable | AsyncIterable<Uint8Array | string> | Iterable<Uint8Array | string>;

export interface BlobInfo {
  key: string;
  size: number;
}

/**
 * A small, generic store of immutable byte blobs addressed by '/'-separated keys
 * ("export/<job>/Patient-1.ndjson", "dicom/<study>/<instance>.dcm").
 * A blob becomes visible only once `put` resolves: readers never see half-written data.
 */
export interface BlobStore {
  /** Streams `body` into the blob `key`, replacing any previous blob; resolves with the bytes written. */
  put(key: string, body: BlobBody): Promise<{ size: number }>;
  /** Opens the blob for reading; rejects with BlobNotFoundError when it does not exist. */
  get(key: string): Promise<Readable>;
  /** Size of the blob, or undefined when it does not exist. */
  stat(key: string): Promise<{ size: number } | undefined>;
  /** Deletes one blob; deleting a missing blob is not an error. */
  delete(key: string): Promise<void>;
  /** Deletes every blob whose key starts with `prefix` (use a trailing '/' to mean "folder"). */
  deletePrefix(prefix: string): Promise<void>;
  /** Every blob whose key starts with `prefix`, sorted by key. */
  list(prefix: string): Promise<BlobInfo[]>;
  /** Releases what the store holds open (the S3 client's connections); the database store shares the server's pool. */
  close?(): void;
}

export class BlobNotFoundError extends ConfluxError {
  constructor(readonly key: string) {
    super('blob-not-found', `Blob "${key}" does not exist`);
  }
}

const SEGMENT = /^[A-Za-z0-9._\-$=+@,]+$/;

/**
 * Keys become file paths, so they are checked strictly: no empty, '.' or '..' segments, no
 * backslashes or other characters that could escape the store's root.
 */
export function assertBlobKey(key: string): void {
  if (typeof key !== 'string' || key.length === 0 || key.length > 1024) throw new Error(`Invalid blob key "${key}": must be 1-1024 characters`);
  for (const seg of key.split('/')) {
    if (seg === '' || seg === '.' || seg === '..' || !SEGMENT.test(seg)) {
      throw new Error(`Invalid blob key "${key}": segment "${seg}" is empty, a dot segment or has characters outside [A-Za-z0-9._-$=+@,]`);
    }
  }
}

/** `body` as a byte stream, and a counter of the bytes that have passed through it. */
export function countedBody(body: BlobBody): { stream: Readable; counter: Transform; size(): number } {
  let size = 0;
  const counter = new Transform({
    transform(chunk: Buffer | string, _enc, cb) {
      const buf = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
      size += buf.length;
      cb(null, buf);
    },
  });
  const stream = body instanceof Readable ? body : Readable.from(body as AsyncIterable<Uint8Array | string>, { objectMode: false });
  return { stream, counter, size: () => size };
}
