/**
 * A real S3 API server for the tests of BLOB_STORE=s3: s3rver (npm), which speaks S3's REST protocol (multipart
 * uploads, ListObjectsV2, batch delete) over HTTP and keeps objects in a folder. Not AWS, but the AWS SDK talks to it
 * exactly as to any S3-compatible store (S3_ENDPOINT, path-style addressing).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
// s3rver ships no type declarations: the two calls used here are typed below.
// @ts-expect-error no declaration file
import S3rver from 's3rver';

interface S3rverInstance {
  run(): Promise<{ address: string; port: number }>;
  close(): Promise<void>;
}

export interface RunningS3 {
  endpoint: string;
  bucket: string;
  accessKeyId: string;
  secretAccessKey: string;
  stop(): Promise<void>;
}

export async function startS3Server(bucket = 'conflux'): Promise<RunningS3> {
  const directory = mkdtempSync(path.join(os.tmpdir(), 'conflux-s3-'));
  const server = new (S3rver as new (opts: object) => S3rverInstance)({ address: '127.0.0.1', port: 0, silent: true, directory, configureBuckets: [{ name: bucket }] });
  const { port } = await server.run();
  return {
    endpoint: `http://127.0.0.1:${port}`,
    bucket,
    // s3rver's fixed development credentials.
    accessKeyId: 'S3RVER',
    secretAccessKey: 'S3RVER',
    async stop() {
      await server.close();
      rmSync(directory, { recursive: true, force: true });
    },
  };
}
