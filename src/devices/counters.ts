import type { Queryable } from '../db/database.js';

/** Per-device reading counts (filed, held, exact duplicates dropped), shown to operators. */
export async function countReadings(q: Queryable, deviceKey: string, d: { filed?: number; held?: number; duplicates?: number }): Promise<void> {
  await q.query(
    `INSERT INTO device_reading_counter (device_key, filed, held, duplicates) VALUES ($1, $2, $3, $4)
     ON CONFLICT (device_key) DO UPDATE SET filed = device_reading_counter.filed + $2, held = device_reading_counter.held + $3,
       duplicates = device_reading_counter.duplicates + $4, updated_at = now()`,
    [deviceKey, d.filed ?? 0, d.held ?? 0, d.duplicates ?? 0],
  );
}

export async function readingCounters(q: Queryable): Promise<Array<{ device: string; filed: number; held: number; duplicates: number; updatedAt: string }>> {
  const r = await q.query<{ device_key: string; filed: number | string; held: number | string; duplicates: number | string; updated_at: Date | string }>(
    'SELECT * FROM device_reading_counter ORDER BY device_key',
  );
  return r.rows.map((x) => ({ device: x.device_key, filed: Number(x.filed), held: Number(x.held), duplicates: Number(x.duplicates), updatedAt: new Date(x.updated_at).toISOString() }));
}
