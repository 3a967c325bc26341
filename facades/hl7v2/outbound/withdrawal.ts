/**
 * Taking back a result that already went out (entered-in-error, cancelled, deleted). Runs in the writer's
 * transaction like the rest of the hook. The message goes only to destinations that took a message for
 * the report (or standalone result): a receiver that never had the result must not be told to delete it.
 * Unbuilt ORU rows of the group are superseded, so a result withdrawn before it was sent is never sent.
 */
import type { Tx } from '../../../src/index.js';
import { destinationsThatReceived, enqueueOne, supersedeUnbuilt } from './outbox.js';
import type { ActiveDestination, OutboxEvent } from './triggers.js';

/** Returns the destinations that got a withdrawal row (to wake their workers). */
export async function withdraw(tx: Tx, active: ActiveDestination[], ev: OutboxEvent, triggerRef: string): Promise<string[]> {
  const w = ev.withdrawal!;
  const received = await destinationsThatReceived(tx, ev.groupKey);
  const queued: string[] = [];
  for (const a of active) {
    const name = a.dest.name;
    if (received.has(name) && a.dest.types.includes('ORU')) {
      const id = await enqueueOne(tx, { destination: name, event: ev.event, groupKey: ev.groupKey, triggerRef, patientKey: ev.patientKey });
      await supersedeUnbuilt(tx, name, ev.groupKey, id, `superseded: the withdrawal of ${ev.groupKey} (${w.reason}, outbound row ${id}) carries the current state`);
      queued.push(name);
    } else if (w.whole) {
      // One result of a standing report withdrawn: the report's own pending ORU still goes (built without it
      // when deleted). The whole report or standalone result withdrawn before it was sent: nothing goes.
      await supersedeUnbuilt(tx, name, ev.groupKey, null, `withdrawn (${w.reason}) before it was sent; nothing to send`);
    }
  }
  return queued;
}
