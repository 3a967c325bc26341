/**
 * ServiceRequest → ORM^O01 (or OML^O21 when the dialect says so): PID, PV1, ORC, OBR, NTE.
 * The order control (ORC-1) comes from what changed (see triggers.ts): NW new, XO changed, CA cancelled,
 * HD held, RL released, SC status changed. The imaging procedure-step status message is an SC with
 * ORC-5 from the Procedure (IP exam begun, CM exam completed, DC discontinued), carrying the order's
 * placer/filler numbers so the receiver files it against the order it placed.
 */
import type { Encounter, Patient, Procedure, ServiceRequest } from '@medplum/fhirtypes';
import { cwe, ei, esc, ts, xcn } from './datatypes.js';
import { orderNumbers } from './build-oru.js';
import type { Dialect } from './profiles.js';
import { msh, pid, pv1, segment } from './segments.js';

export type OrderControl = 'NW' | 'XO' | 'CA' | 'HD' | 'RL' | 'SC';

// HL7 table 0038 order status.
const ORDER_STATUS: Record<string, string> = {
  draft: '',
  active: 'IP',
  'on-hold': 'HD',
  revoked: 'CA',
  completed: 'CM',
  'entered-in-error': 'ER',
  unknown: '',
};
const PROCEDURE_STATUS: Record<string, string> = {
  preparation: 'SC',
  'in-progress': 'IP',
  'not-done': 'DC',
  'on-hold': 'HD',
  stopped: 'DC',
  completed: 'CM',
  'entered-in-error': 'ER',
  unknown: '',
};
const PRIORITY: Record<string, string> = { routine: 'R', urgent: 'S', asap: 'A', stat: 'S' };

export interface OrderInput {
  order: ServiceRequest;
  control: OrderControl;
  patient?: Patient;
  encounter?: Encounter;
  /** For the status message: the procedure step whose status is reported. */
  procedure?: Procedure;
  controlId: string;
  at?: Date;
}

export function buildOrder(input: OrderInput, d: Dialect): string {
  const { order, procedure } = input;
  const oml = d.orderMessage === 'OML';
  const header = oml
    ? { code: 'OML', trigger: 'O21', structure: 'OML_O21' }
    : { code: 'ORM', trigger: 'O01', structure: 'ORM_O01' };
  const segs = [msh(d, { ...header, controlId: input.controlId, at: input.at ?? new Date() })];
  segs.push(pid(input.patient, d));
  const visit = pv1(input.encounter, d);
  if (visit) segs.push(visit);
  const { placer, filler } = orderNumbers(order.identifier);
  const requisition = order.requisition;
  const status = procedure ? PROCEDURE_STATUS[procedure.status] ?? '' : d.orderStatus[order.status] ?? ORDER_STATUS[order.status] ?? '';
  const when = procedure
    ? procedure.performedPeriod?.end ?? procedure.performedPeriod?.start ?? procedure.performedDateTime
    : order.authoredOn;
  const orc: string[] = new Array(12).fill('');
  orc[0] = input.control;
  orc[1] = ei(placer, d);
  orc[2] = ei(filler, d);
  orc[3] = ei(requisition, d);
  orc[4] = status;
  orc[8] = ts(when ?? input.at?.toISOString(), d);
  orc[11] = xcn(order.requester, d);
  segs.push(segment('ORC', orc));
  const obr: string[] = new Array(27).fill('');
  obr[0] = '1';
  obr[1] = ei(placer, d);
  obr[2] = ei(filler, d);
  obr[3] = cwe(order.code ?? procedure?.code, d);
  obr[4] = esc(PRIORITY[order.priority ?? ''] ?? '');
  obr[5] = ts(order.occurrenceDateTime ?? order.occurrencePeriod?.start, d);
  if (procedure) {
    obr[6] = ts(procedure.performedPeriod?.start ?? procedure.performedDateTime, d);
    obr[7] = ts(procedure.performedPeriod?.end, d);
  }
  obr[12] = esc(order.reasonCode?.[0]?.text ?? order.reasonCode?.[0]?.coding?.[0]?.display);
  obr[15] = xcn(order.requester, d);
  segs.push(segment('OBR', obr));
  let nte = 0;
  for (const n of order.note ?? []) segs.push(segment('NTE', [String(++nte), 'L', esc(n.text)]));
  return segs.join('\r');
}
