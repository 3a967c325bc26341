/**
 * Blobs in PostgreSQL (or PGlite), for clusters whose nodes share nothing but the database (BLOB_STORE=postgres).
 * Streamed both ways in chunks of CHUNK bytes, so memory stays flat with blob size: `put` writes each chunk as it
 * fills (autocommitted, under a fresh generation no reader can see yet) and publishes the generation in one short
 * transaction at the end; `get` reads one chunk at a time as the consumer pulls. An upload that dies half-way leaves
 * only unpublished chunks, removed by `sweep` once they are old.
 */
import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import type { Database } from '../db/database.js';
import { assertBlobKey, type BlobBody, type BlobInfo, BlobNotFoundError, type BlobStore } from './store.js';

/** 256 KiB: large enough that the per-row cost is small, small enough to hold one in memory per stream. */
export const CHUNK = 256 * 1024;

export class DatabaseBlobStore implements BlobStore {
  constructor(private readonly db: Database) {}

  async put(key: string, body: BlobBody): Promise<{ size: number }> {
    assertBlobKey(key);
    const generation = randomUUID();
    let size = 0;
    let n = 0;
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    const writeChunk = async (data: Buffer) => {
      await this.db.query('INSERT INTO blob_chunk (generation, n, data) VALUES ($1, $2, $3)', [generation, n++, data]);
    };
    try {
      for await (const piece of body as AsyncIterable<Uint8Array | string>) {
        let buf = typeof piece === 'string' ? Buffer.from(piece, 'utf8') : Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
        size += buf.length;
        while (pendingBytes + buf.length >= CHUNK) {
          const take = CHUNK - pendingBytes;
          pending.push(buf.subarray(0, take));
          await writeChunk(Buffer.concat(pending));
          buf = buf.subarray(take);
          pending = [];
          pendingBytes = 0;
        }
        if (buf.length) {
          // Copied: the producer may reuse its buffer after handing it over.
          pending.push(Buffer.from(buf));
          pendingBytes += buf.length;
        }
      }
      if (pendingBytes > 0 || n === 0) await writeChunk(Buffer.concat(pending));
      await this.db.transaction(async (tx) => {
        const old = await tx.query<{ generation: string }>('SELECT generation FROM blob WHERE key = $1 FOR UPDATE', [key]);
        await tx.query(
          `INSERT INTO blob (key, generation, size) VALUES ($1, $2, $3)
           ON CONFLICT (key) DO UPDATE SET generation = EXCLUDED.generation, size = EXCLUDED.size, created_at = now()`,
          [key, generation, size],
        );
        if (old.rows[0]) await tx.query('DELETE FROM blob_chunk WHERE generation = $1', [old.rows[0].generation]);
      });
    } catch (err) {
      await this.db.query('DELETE FROM blob_chunk WHERE generation = $1', [generation]).catch(() => undefined); // sweep() gets them otherwise
      throw err;
    }
    return { size };
  }

  async get(key: string): Promise<Readable> {
    assertBlobKey(key);
    const r = await this.db.query<{ generation: string; chunks: number }>(
      'SELECT b.generation, (SELECT count(*) FROM blob_chunk c WHERE c.generation = b.generation)::int AS chunks FROM blob b WHERE b.key = $1',
      [key],
    );
    const row = r.rows[0];
    if (!row) throw new BlobNotFoundError(key);
    const { db } = this;
    let n = 0;
    return new Readable({
      // One chunk in memory at a time: the next is read when the consumer asks.
      async read() {
        if (n >= row.chunks) {
          this.push(null);
          return;
        }
        try {
          const c = await db.query<{ data: Uint8Array }>('SELECT data FROM blob_chunk WHERE generation = $1 AND n = $2', [row.generation, n]);
          if (!c.rows[0]) throw new Error(`Blob "${key}" was replaced or deleted while it was being read`);
          n++;
          const data = c.rows[0].data;
          // Only an empty blob has an empty chunk (its only one).
          this.push(data.length ? Buffer.from(data.buffer, data.byteOffset, data.byteLength) : null);
        } catch (err) {
          this.destroy(err as Error);
        }
      },
    });
  }

  async stat(key: string): Promise<{ size: number } | undefined> {
    assertBlobKey(key);
    const r = await this.db.query<{ size: number }>('SELECT size FROM blob WHERE key = $1', [key]);
    return r.rows[0] ? { size: Number(r.rows[0].size) } : undefined;
  }

  async delete(key: string): Promise<void> {
    assertBlobKey(key);
    await this.db.transaction(async (tx) => {
      const r = await tx.query<{ generation: string }>('DELETE FROM blob WHERE key = $1 RETURNING generation', [key]);
      if (r.rows[0]) await tx.query('DELETE FROM blob_chunk WHERE generation = $1', [r.rows[0].generation]);
    });
  }

  async deletePrefix(prefix: string): Promise<void> {
    await this.db.transaction(async (tx) => {
      const r = await tx.query<{ generation: string }>('DELETE FROM blob WHERE starts_with(key, $1) RETURNING generation', [prefix]);
      if (r.rows.length) await tx.query('DELETE FROM blob_chunk WHERE generation = ANY($1::uuid[])', [r.rows.map((x) => x.generation)]);
    });
  }

  async list(prefix: string): Promise<BlobInfo[]> {
    const r = await this.db.query<{ key: string; size: number }>('SELECT key, size FROM blob WHERE starts_with(key, $1) ORDER BY key COLLATE "C"', [prefix]);
    return r.rows.map((x) => ({ key: x.key, size: Number(x.size) }));
  }

  /** Removes chunks of uploads that never published (a node died mid-upload) and are older than `olderThanMs`. */
  async sweep(olderThanMs = 3_600_000): Promise<number> {
    const r = await this.db.query(
      `DELETE FROM blob_chunk c WHERE c.written_at < now() - make_interval(secs => $1::float8 / 1000)
          AND NOT EXISTS (SELECT 1 FROM blob b WHERE b.generation = c.generation)`,
      [olderThanMs],
    );
    return r.rowCount;
  }
}
