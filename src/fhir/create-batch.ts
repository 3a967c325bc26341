/**
 * Group commit for lone creates. Creates outside a transaction that arrive in the same turn of the event loop are
 * written by one statement (src/fhir/write-statement.ts writes any number of versions in one CTE): one round trip,
 * one plan and one commit (one WAL flush) for the group instead of one each. A create is answered only after the
 * statement holding it has committed, so nothing is acknowledged before it is durable.
 *
 * A failing group is retried one by one, so a create fails only for its own reason, never for a neighbour's.
 */
import type { Queryable } from '../db/database.js';
import { SameTurnGroups } from './same-turn.js';
import { type VersionToWrite, writeVersions } from './write-statement.js';

interface Waiting {
  item: VersionToWrite;
  resolve(): void;
  reject(err: unknown): void;
}

/** More than this in one statement makes every create in it wait for the largest plan; split. */
const MAX_GROUP = 32;

export class CreateBatcher {
  private readonly groups = new SameTurnGroups<Waiting>(MAX_GROUP, (group) => this.send(group));

  constructor(private readonly db: Queryable) {}

  /** Resolves once `item` is committed. */
  write(item: VersionToWrite): Promise<void> {
    return new Promise((resolve, reject) => this.groups.add({ item, resolve, reject }));
  }

  private async send(group: Waiting[]): Promise<void> {
    if (group.length > 1) {
      try {
        await writeVersions(this.db, group.map((w) => w.item));
        for (const w of group) w.resolve();
        return;
      } catch {
        // One of them is at fault (or the database is down, which each will find out for itself): one by one.
      }
    }
    await Promise.all(
      group.map((w) =>
        writeVersions(this.db, [w.item]).then(
          () => w.resolve(),
          (err: unknown) => w.reject(err),
        ),
      ),
    );
  }
}
