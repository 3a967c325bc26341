/**
 * Both blob stores behind one interface (BLOB_STORE=fs | postgres): the same behaviour, asserted on each. The
 * database store also on PostgreSQL and PGlite, streamed in chunks both ways.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BlobStore, BlobNotFoundError, CHUNK, DatabaseBlobStore, FsBlobStore, S3BlobStore } from '../../src/blob/index.js';
import { startS3Server } from '../../tools/s3-server.js';
import type { Database } from '../../src/db/database.js';
import { openDatabase } from '../../src/db/open.js';
import { conflux } from '../helpers/cli.js';
import { testDatabases } from '../helpers/db.js';

interface StoreUnderTest {
  name: string;
  open(): Promise<{ store: BlobStore; db?: Database; dir?: string; close(): Promise<void> }>;
}

const stores: StoreUnderTest[] = [
  {
    name: 'fs',
    async open() {
      const dir = await mkdtemp(path.join(tmpdir(), 'conflux-blob-'));
      return { store: new FsBlobStore(dir), dir, close: () => rm(dir, { recursive: true, force: true }) };
    },
  },
  {
    name: 's3 (s3rver)',
    async open() {
      const s3 = await startS3Server();
      const store = new S3BlobStore({ bucket: s3.bucket, prefix: 'site-a/', region: 'us-east-1', endpoint: s3.endpoint, forcePathStyle: true, credentials: s3 });
      return {
        store,
        async close() {
          store.close();
          await s3.stop();
        },
      };
    },
  },
  ...testDatabases().map((backend) => ({
    name: `database on ${backend.name}`,
    async open() {
      const { db, drop } = await backend.open();
      return { store: new DatabaseBlobStore(db), db, close: drop };
    },
  })),
];

/** `size` bytes of a repeatable pattern, produced in pieces of `piece` bytes (no whole copy in memory). */
async function* pattern(size: number, piece = 64 * 1024): AsyncGenerator<Buffer> {
  for (let at = 0; at < size; at += piece) {
    const b = Buffer.alloc(Math.min(piece, size - at));
    for (let i = 0; i < b.length; i++) b[i] = (at + i) % 251;
    yield b;
  }
}

async function sha(stream: AsyncIterable<Uint8Array | string>): Promise<string> {
  const h = createHash('sha256');
  for await (const c of stream) h.update(c);
  return h.digest('hex');
}

describe.each(stores)('blob store: $name', (kind) => {
  let opened: Awaited<ReturnType<StoreUnderTest['open']>>;
  let store: BlobStore;
  beforeAll(async () => {
    opened = await kind.open();
    store = opened.store;
  });
  afterAll(() => opened?.close());

  it('puts from an async iterable and a Readable, gets the same bytes back, reports sizes', async () => {
    async function* gen() {
      yield 'héllo\n';
      yield Buffer.from('world\n');
    }
    expect(await store.put('a/b/one.ndjson', gen())).toEqual({ size: Buffer.byteLength('héllo\nworld\n') });
    expect(await text(await store.get('a/b/one.ndjson'))).toBe('héllo\nworld\n');
    expect(await store.put('a/two.bin', Readable.from([Buffer.from([1, 2, 3])]))).toEqual({ size: 3 });
    expect(await store.stat('a/two.bin')).toEqual({ size: 3 });
    expect(await store.stat('a/none')).toBeUndefined();
    expect(await store.put('a/empty', [])).toEqual({ size: 0 });
    expect(await text(await store.get('a/empty'))).toBe('');
  });

  it('streams a blob of many chunks both ways, byte for byte; a replacement is seen whole', async () => {
    const size = 3 * CHUNK + 12_345;
    expect(await store.put('big/one.bin', pattern(size))).toEqual({ size });
    expect(await sha(await store.get('big/one.bin'))).toBe(await sha(pattern(size)));
    if (opened.db) {
      const chunks = await opened.db.query<{ n: number }>('SELECT count(*)::int AS n FROM blob_chunk c JOIN blob b USING (generation) WHERE b.key = $1', ['big/one.bin']);
      expect(chunks.rows[0].n).toBe(4);
    }
    await store.put('big/one.bin', pattern(1000, 7));
    expect(await store.stat('big/one.bin')).toEqual({ size: 1000 });
    expect(await sha(await store.get('big/one.bin'))).toBe(await sha(pattern(1000)));
    if (opened.db) {
      // The replaced generation's chunks are gone with it.
      const all = await opened.db.query<{ n: number }>('SELECT count(*)::int AS n FROM blob_chunk WHERE generation NOT IN (SELECT generation FROM blob)');
      expect(all.rows[0].n).toBe(0);
    }
  });

  it('lists by prefix, deletes one and a whole prefix', async () => {
    for (const k of ['x/1/a', 'x/1/b', 'x/2/a', 'x10/a', 'y']) await store.put(k, ['data']);
    expect((await store.list('x/')).map((b) => b.key)).toEqual(['x/1/a', 'x/1/b', 'x/2/a']);
    expect((await store.list('x')).map((b) => b.key)).toEqual(['x/1/a', 'x/1/b', 'x/2/a', 'x10/a']);
    expect((await store.list('x/1/')).map((b) => b.key)).toEqual(['x/1/a', 'x/1/b']);
    await store.delete('x/1/a');
    await store.delete('x/1/a'); // idempotent
    await expect(store.get('x/1/a')).rejects.toBeInstanceOf(BlobNotFoundError);
    await store.deletePrefix('x/');
    expect((await store.list('x')).map((b) => b.key)).toEqual(['x10/a']);
    if (opened.dir) expect(await readdir(opened.dir)).not.toContain('x');
  });

  it('leaves no blob behind when the body stream fails', async () => {
    async function* failing() {
      yield Buffer.alloc(CHUNK + 10); // a whole chunk already written before the failure
      throw new Error('source broke');
    }
    await expect(store.put('f/broken', failing())).rejects.toThrow('source broke');
    expect(await store.stat('f/broken')).toBeUndefined();
    expect(await store.list('f/')).toEqual([]);
    if (opened.dir) expect(await readdir(path.join(opened.dir, 'f'))).toEqual([]);
    if (opened.db) {
      const orphans = await opened.db.query<{ n: number }>('SELECT count(*)::int AS n FROM blob_chunk WHERE generation NOT IN (SELECT generation FROM blob)');
      expect(orphans.rows[0].n).toBe(0);
    }
  });

  it('refuses keys that could escape the root', async () => {
    for (const bad of ['../etc/passwd', 'a//b', '/abs', 'a/./b', 'a\\b', '']) {
      await expect(store.put(bad, ['x'])).rejects.toThrow(/Invalid blob key/);
    }
  });
});

describe.each(testDatabases())('database blob store sweep on $name', (backend) => {
  it('removes the chunks of an upload that never published once they are old, and nothing else', async () => {
    const { db, drop } = await backend.open();
    try {
      const store = new DatabaseBlobStore(db);
      await store.put('kept', ['kept bytes']);
      // What a node that died mid-upload leaves: chunks under a generation no blob row points at.
      await db.query("INSERT INTO blob_chunk (generation, n, data, written_at) VALUES (gen_random_uuid(), 0, '\\x00', now() - interval '2 hours')");
      expect(await store.sweep(3_600_000)).toBe(1);
      expect(await text(await store.get('kept'))).toBe('kept bytes');
    } finally {
      await drop();
    }
  });
});

describe('moving blobs between stores', () => {
  it('conflux blobs copy streams every blob from the files into the database, and a second run skips them', async () => {
    const dataDir = await mkdtemp(path.join(tmpdir(), 'conflux-blob-copy-'));
    try {
      const files = new FsBlobStore(path.join(dataDir, 'blobs'));
      await files.put('dicom/s1/i1.dcm', pattern(CHUNK + 1));
      await files.put('export/j1/Patient.ndjson', ['{"resourceType":"Patient"}\n']);
      const env = { DATA_DIR: dataDir, MLLP_PORT: '0', DICOM_PORT: '0', PORT: '0', DATABASE_URL: '' };
      const first = await conflux(['blobs', 'copy', '--from', 'fs', '--to', 'postgres', '--json'], env);
      expect(first.code, first.stderr + first.stdout).toBe(0);
      expect(JSON.parse(first.stdout)).toEqual({ copied: 2, skipped: 0, bytes: CHUNK + 1 + 27 });
      const again = await conflux(['blobs', 'copy', '--from', 'fs', '--to', 'postgres', '--json'], env);
      expect(JSON.parse(again.stdout)).toMatchObject({ copied: 0, skipped: 2 });
      const wrong = await conflux(['blobs', 'copy', '--from', 'fs', '--to', 'fs', '--json'], env);
      expect(wrong.code).not.toBe(0);
      expect(wrong.stdout).toMatch(/two different stores/);

      const db = await openDatabase({ dataDir });
      try {
        const inDb = new DatabaseBlobStore(db);
        expect(await sha(await inDb.get('dicom/s1/i1.dcm'))).toBe(await sha(pattern(CHUNK + 1)));
        expect(await text(await inDb.get('export/j1/Patient.ndjson'))).toBe('{"resourceType":"Patient"}\n');
      } finally {
        await db.close();
      }
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
