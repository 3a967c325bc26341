/**
 * Migrations in a cluster: nodes starting at once migrate once between them, and a node older than the schema
 * refuses to start on it, naming both versions (docs/deploy.md, rolling upgrade).
 */
import { mkdtempSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { migrate, MIGRATIONS_DIR } from '../../src/db/migrate.js';
import { openDatabase } from '../../src/db/open.js';
import { ConfluxError } from '../../src/errors.js';
import { conflux } from '../helpers/cli.js';
import { testDatabases } from '../helpers/db.js';

const lastMigration = readdirSync(MIGRATIONS_DIR).filter((f) => /^\d+_.+\.sql$/.test(f)).sort().at(-1)!;

describe.each(testDatabases())('migrations on $name', (backend) => {
  const drops: Array<() => Promise<void>> = [];
  afterAll(async () => {
    for (const d of drops) await d();
  });

  it('a database migrated by a newer release is refused, naming both versions', async () => {
    const { db, drop } = await backend.open();
    drops.push(drop);
    await db.query("INSERT INTO schema_migration (name) VALUES ('999_from_a_newer_release.sql')");
    const err = await migrate(db).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfluxError);
    expect((err as ConfluxError).code).toBe('schema-too-new');
    expect((err as ConfluxError).message).toContain('999_from_a_newer_release.sql');
    expect((err as ConfluxError).message).toContain(lastMigration);
  });

  it.skipIf(backend.name !== 'postgres')('nodes migrating at once: one applies every migration, the others none', async () => {
    const { url, drop } = await backend.open();
    drops.push(drop);
    // A fresh schema: drop what open() applied, then let three "nodes" race.
    const base = await openDatabase({ databaseUrl: url!, dataDir: null });
    const tables = (await base.query<{ tablename: string }>('SELECT tablename FROM pg_tables WHERE schemaname = current_schema()')).rows;
    for (const t of tables) await base.query(`DROP TABLE IF EXISTS "${t.tablename}" CASCADE`);
    await base.close();
    const nodes = await Promise.all([1, 2, 3].map(() => openDatabase({ databaseUrl: url!, dataDir: null })));
    try {
      const applied = await Promise.all(nodes.map((db) => migrate(db)));
      const counts = applied.map((a) => a.length).sort((a, b) => a - b);
      expect(counts[0]).toBe(0);
      expect(counts[1]).toBe(0);
      expect(counts[2]).toBe(readdirSync(MIGRATIONS_DIR).filter((f) => /^\d+_.+\.sql$/.test(f)).length);
    } finally {
      for (const db of nodes) await db.close();
    }
  });
});

describe('serve against a newer schema', () => {
  it('stops at start with the versions named and exit code 1', async () => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'conflux-schema-'));
    const db = await openDatabase({ dataDir });
    await migrate(db);
    await db.query("INSERT INTO schema_migration (name) VALUES ('999_from_a_newer_release.sql')");
    await db.close();
    const r = await conflux(['serve'], { DATA_DIR: dataDir, PORT: '0', MLLP_PORT: '0', DICOM_PORT: '0', DATABASE_URL: '' });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/schema is at 999_from_a_newer_release\.sql, newer than this Conflux knows/);
    expect(r.stderr).toContain(lastMigration);
  });
});
