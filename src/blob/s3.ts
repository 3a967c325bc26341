/**
 * Blobs in S3 or an S3-compatible object store (BLOB_STORE=s3), for sites that have one: every node reads and writes
 * the same bucket. Uploads are multipart and streamed (parts of PART_SIZE, one in flight: memory stays flat with
 * size); an object appears only when its upload completes, and a failed upload is aborted, so readers never see half
 * of one. Downloads stream the object's body.
 */
import { DeleteObjectCommand, DeleteObjectsCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { assertBlobKey, type BlobBody, type BlobInfo, BlobNotFoundError, type BlobStore, countedBody } from './store.js';

/** S3's smallest part size: the most one upload holds in memory (with one part in flight). */
const PART_SIZE = 5 * 1024 * 1024;

export interface S3Settings {
  bucket: string;
  /** Key prefix inside the bucket ("conflux/"), so one bucket can hold several installations. */
  prefix: string;
  region: string;
  /** For S3-compatible stores (MinIO, Ceph RGW, …); AWS when unset. */
  endpoint?: string;
  forcePathStyle: boolean;
  /** Unset: the AWS SDK's own credential chain (instance role, shared config). */
  credentials?: { accessKeyId: string; secretAccessKey: string };
}

export class S3BlobStore implements BlobStore {
  private readonly client: S3Client;

  constructor(private readonly settings: S3Settings) {
    this.client = new S3Client({
      region: settings.region,
      endpoint: settings.endpoint,
      forcePathStyle: settings.forcePathStyle,
      credentials: settings.credentials,
    });
  }

  private key(key: string): string {
    assertBlobKey(key);
    return this.settings.prefix + key;
  }

  async put(key: string, body: BlobBody): Promise<{ size: number }> {
    const Key = this.key(key);
    const { stream, counter, size } = countedBody(body);
    const counted = new PassThrough();
    const upload = new Upload({ client: this.client, params: { Bucket: this.settings.bucket, Key, Body: counted }, partSize: PART_SIZE, queueSize: 1 });
    // Both must finish: the source into the upload's stream, and the upload itself. A failing source aborts the upload
    // (nothing is published); a failing upload stops the source. The source's own error is the one reported.
    const feeding = pipeline(stream, counter, counted).catch(async (err: unknown) => {
      await upload.abort().catch(() => undefined); // the upload rejects as aborted: reported below as the source's error
      throw err;
    });
    const uploading = upload.done().catch((err: unknown) => {
      counted.destroy(err as Error);
      throw err;
    });
    const [fed, done] = await Promise.allSettled([feeding, uploading]);
    if (fed.status === 'rejected') throw fed.reason;
    if (done.status === 'rejected') throw done.reason;
    return { size: size() };
  }

  async get(key: string): Promise<Readable> {
    try {
      const r = await this.client.send(new GetObjectCommand({ Bucket: this.settings.bucket, Key: this.key(key) }));
      return r.Body as Readable;
    } catch (err) {
      if (notFound(err)) throw new BlobNotFoundError(key);
      throw err;
    }
  }

  async stat(key: string): Promise<{ size: number } | undefined> {
    try {
      const r = await this.client.send(new HeadObjectCommand({ Bucket: this.settings.bucket, Key: this.key(key) }));
      return { size: Number(r.ContentLength ?? 0) };
    } catch (err) {
      if (notFound(err)) return undefined;
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.settings.bucket, Key: this.key(key) }));
  }

  async deletePrefix(prefix: string): Promise<void> {
    const keys = (await this.list(prefix)).map((b) => ({ Key: this.settings.prefix + b.key }));
    for (let i = 0; i < keys.length; i += 1000) {
      await this.client.send(new DeleteObjectsCommand({ Bucket: this.settings.bucket, Delete: { Objects: keys.slice(i, i + 1000), Quiet: true } }));
    }
  }

  async list(prefix: string): Promise<BlobInfo[]> {
    const out: BlobInfo[] = [];
    let ContinuationToken: string | undefined;
    do {
      const r = await this.client.send(new ListObjectsV2Command({ Bucket: this.settings.bucket, Prefix: this.settings.prefix + prefix, ContinuationToken }));
      for (const o of r.Contents ?? []) out.push({ key: o.Key!.slice(this.settings.prefix.length), size: Number(o.Size ?? 0) });
      ContinuationToken = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (ContinuationToken);
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  close(): void {
    this.client.destroy();
  }
}

function notFound(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e?.name === 'NoSuchKey' || e?.name === 'NotFound' || e?.$metadata?.httpStatusCode === 404;
}
