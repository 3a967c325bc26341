import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { assertBlobKey, type BlobBody, type BlobInfo, BlobNotFoundError, type BlobStore, countedBody } from './store.js';

/** Temporary files live next to their target (same filesystem, so rename is atomic) with this suffix. */
const TMP_SUFFIX = '.partial';

/** Blobs as plain files under one root directory; key "a/b/c" is the file "<root>/a/b/c". */
export class FsBlobStore implements BlobStore {
  readonly root: string;

  constructor(root: string) {
    this.root = path.resolve(root);
  }

  private file(key: string): string {
    assertBlobKey(key);
    if (key.endsWith(TMP_SUFFIX)) throw new Error(`Invalid blob key "${key}": the suffix ${TMP_SUFFIX} is reserved`);
    return path.join(this.root, ...key.split('/'));
  }

  async put(key: string, body: BlobBody): Promise<{ size: number }> {
    const target = this.file(key);
    await mkdir(path.dirname(target), { recursive: true });
    // Write to a private temporary name, then rename: a crash or a failed stream never leaves a truncated blob.
    const tmp = `${target}.${randomBytes(6).toString('hex')}${TMP_SUFFIX}`;
    const { stream, counter, size } = countedBody(body);
    try {
      await pipeline(stream, counter, createWriteStream(tmp));
      // Durable before anyone is told it is stored (a DIMSE success, a 201): data, then the rename.
      await fsyncPath(tmp);
      await rename(tmp, target);
      await fsyncPath(path.dirname(target));
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
    return { size: size() };
  }

  async get(key: string): Promise<Readable> {
    const file = this.file(key);
    const s = await stat(file).catch(missing);
    if (!s?.isFile()) throw new BlobNotFoundError(key);
    return createReadStream(file);
  }

  async stat(key: string): Promise<{ size: number } | undefined> {
    const s = await stat(this.file(key)).catch(missing);
    return s?.isFile() ? { size: s.size } : undefined;
  }

  async delete(key: string): Promise<void> {
    await unlink(this.file(key)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }

  async deletePrefix(prefix: string): Promise<void> {
    for (const b of await this.list(prefix)) await this.delete(b.key);
    // Remove the folder itself when the prefix names one, so expired exports leave no empty directories.
    if (prefix.endsWith('/') && prefix.length > 1) {
      const dir = this.file(prefix.slice(0, -1));
      await rm(dir, { recursive: true, force: true });
    }
  }

  async list(prefix: string): Promise<BlobInfo[]> {
    // Walk only the deepest directory the prefix fully names, then filter by the rest.
    const slash = prefix.lastIndexOf('/');
    const dirKey = slash > 0 ? prefix.slice(0, slash) : '';
    const dir = dirKey ? this.file(dirKey) : this.root;
    const out: BlobInfo[] = [];
    const walk = async (abs: string, keyPrefix: string): Promise<void> => {
      const entries = await readdir(abs, { withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return [];
        throw err;
      });
      for (const e of entries) {
        const key = keyPrefix ? `${keyPrefix}/${e.name}` : e.name;
        if (e.isDirectory()) {
          if (key.startsWith(prefix) || prefix.startsWith(`${key}/`)) await walk(path.join(abs, e.name), key);
        } else if (e.isFile() && !e.name.endsWith(TMP_SUFFIX) && key.startsWith(prefix)) {
          // Removed between readdir and stat: no longer listed.
          const s = await stat(path.join(abs, e.name)).catch(missing);
          if (s) out.push({ key, size: s.size });
        }
      }
    };
    await walk(dir, dirKey);
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }
}

async function fsyncPath(p: string): Promise<void> {
  const handle = await open(p, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** A file that is not there (or whose folder is not) is an answer, "no such blob"; any other failure is not. */
function missing(err: NodeJS.ErrnoException): undefined {
  if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return undefined;
  throw err;
}
