import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlobNotFoundError, FsBlobStore } from '../../src/blob/index.js';

describe('FsBlobStore', () => {
  let dir: string;
  let store: FsBlobStore;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'conflux-blob-'));
    store = new FsBlobStore(dir);
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

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
  });

  it('lists by prefix, deletes one and a whole prefix', async () => {
    for (const k of ['x/1/a', 'x/1/b', 'x/2/a', 'x10/a', 'y']) await store.put(k, ['data']);
    expect((await store.list('x/')).map((b) => b.key)).toEqual(['x/1/a', 'x/1/b', 'x/2/a']);
    expect((await store.list('x')).map((b) => b.key)).toEqual(['x/1/a', 'x/1/b', 'x/2/a', 'x10/a']);
    expect((await store.list('x/1/')).map((b) => b.key)).toEqual(['x/1/a', 'x/1/b']);
    expect((await store.list('')).length).toBe(5);
    await store.delete('x/1/a');
    await store.delete('x/1/a'); // idempotent
    await expect(store.get('x/1/a')).rejects.toBeInstanceOf(BlobNotFoundError);
    await store.deletePrefix('x/');
    expect((await store.list('')).map((b) => b.key)).toEqual(['x10/a', 'y']);
    expect(await readdir(dir)).not.toContain('x');
  });

  it('leaves no blob behind when the body stream fails', async () => {
    async function* failing() {
      yield 'partial';
      throw new Error('source broke');
    }
    await expect(store.put('f/broken', failing())).rejects.toThrow('source broke');
    expect(await store.stat('f/broken')).toBeUndefined();
    expect(await readdir(path.join(dir, 'f'))).toEqual([]);
  });

  it('refuses keys that could escape the root', async () => {
    for (const bad of ['../etc/passwd', 'a//b', '/abs', 'a/./b', 'a\\b', '', 'a/b.partial']) {
      await expect(store.put(bad, ['x'])).rejects.toThrow(/Invalid blob key/);
    }
  });
});
