import { readdir, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { ConfluxError } from '../errors.js';
import type { Database } from './database.js';

// From the package root: compiled, this module runs from dist/src/db/, one folder deeper than src/db/.
const PACKAGE_ROOT = new URL(import.meta.url.endsWith('.ts') ? '../../' : '../../../', import.meta.url);
export const MIGRATIONS_DIR = fileURLToPath(new URL('migrations/', PACKAGE_ROOT));

/**
 * Applies `migrations/NNN_name.sql` in numeric order, recording each in `schema_migration`, all in one transaction
 * under an advisory lock: when several nodes start at once one migrates and the others wait, then find nothing to do.
 *
 * A database that holds a migration this release does not have was upgraded by a newer Conflux: this one refuses to
 * start on it (its queries may not fit the newer schema), naming both versions. In a rolling upgrade new nodes start
 * first and old ones stop after (docs/deploy.md); an old node restarted later must not serve.
 */
export async function migrate(db: Database, dir = MIGRATIONS_DIR): Promise<string[]> {
  const files = (await readdir(dir)).filter((f) => /^\d+_.+\.sql$/.test(f)).sort();
  const applied: string[] = [];
  await db.transaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock(7411001)');
    await tx.query(
      'CREATE TABLE IF NOT EXISTS schema_migration (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())',
    );
    const done = new Set((await tx.query<{ name: string }>('SELECT name FROM schema_migration')).rows.map((r) => r.name));
    assertNotNewer(done, files);
    for (const file of files) {
      if (done.has(file)) continue;
      const sql = await readFile(path.join(dir, file), 'utf8');
      try {
        await tx.exec(sql);
      } catch (err) {
        throw new Error(`migration ${file} failed: ${(err as Error).message}`);
      }
      await tx.query('INSERT INTO schema_migration (name) VALUES ($1)', [file]);
      applied.push(file);
    }
  });
  return applied;
}

/** Refuses a database migrated beyond `files` (the migrations this release has). */
function assertNotNewer(done: Set<string>, files: string[]): void {
  const known = new Set(files);
  const unknown = [...done].filter((name) => !known.has(name)).sort();
  if (unknown.length === 0) return;
  const ours = files.at(-1) ?? '(none)';
  throw new ConfluxError(
    'schema-too-new',
    `The database schema is at ${unknown.at(-1)}, newer than this Conflux knows (its last migration is ${ours}): ` +
      `a newer release has migrated this database. Start the newer release instead, or restore a backup taken before the upgrade.`,
  );
}
