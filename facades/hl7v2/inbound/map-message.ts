/**
 * Checks a message's header (type, version, processing id: AR when unsupported; control id: AE when
 * missing) and hands it to the mapper for its message type.
 */
import type { Hl7v2Message } from '../message.js';
import { HL7_ERROR, Hl7DataError, Hl7RejectError, issueAt } from './ack.js';
import type { MapContext } from './datatypes.js';
import { mapAdt } from './map-adt.js';
import { mapOrders } from './map-orders.js';
import { mapResults } from './map-results.js';
import type { MappedMessage } from './mapped.js';
import type { MappingConfig } from './mapping-config.js';

export const SUPPORTED_TYPES = ['ADT', 'ORU', 'OUL', 'ORM', 'OML'];

export function mapMessage(msg: Hl7v2Message, config: MappingConfig): MappedMessage {
  const msh = msg.msh;
  const code = msg.messageCode;
  if (!code) throw new Hl7RejectError([issueAt(msh, 9, HL7_ERROR.requiredFieldMissing, 'MSH-9 message type is empty')]);
  if (!SUPPORTED_TYPES.includes(code)) {
    throw new Hl7RejectError([issueAt(msh, 9, HL7_ERROR.unsupportedMessageType, `message type ${msg.messageType} is not accepted here (accepted: ${SUPPORTED_TYPES.join(', ')})`)]);
  }
  const version = msg.version;
  if (!version || !config.versions.some((v) => version === v || version.startsWith(`${v}.`))) {
    throw new Hl7RejectError([issueAt(msh, 12, HL7_ERROR.unsupportedVersionId, `version '${version}' is not supported (accepted: ${config.versions.join(', ')})`)]);
  }
  // An empty MSH-11 is common from test tools and interface engines; it is taken as production.
  const pid = msg.processingId.toUpperCase() || 'P';
  if (!config.processingIds.includes(pid)) {
    throw new Hl7RejectError([issueAt(msh, 11, HL7_ERROR.unsupportedProcessingId, `processing id '${msg.processingId}' is not accepted (accepted: ${config.processingIds.join(', ')})`)]);
  }
  if (!msg.controlId) {
    throw new Hl7DataError([issueAt(msh, 10, HL7_ERROR.requiredFieldMissing, 'MSH-10 message control id is empty: a resend could not be recognised')]);
  }
  const ctx: MapContext = { config, senderNamespace: msh.get(4) || msh.get(3) };
  const mapped = mapByType(msg, code, ctx);
  if (pid !== 'P') markProcessingId(mapped, pid);
  return mapped;
}

/**
 * Training (T) and debugging (D) data is tagged with its MSH-11 (HL7 table 0103), so that the outbound
 * side never forwards it as production (facades/hl7v2/outbound, options.forwardNonProduction).
 */
function markProcessingId(mapped: MappedMessage, pid: string): void {
  for (const e of mapped.bundle.entry ?? []) {
    const r = e.resource;
    if (!r) continue;
    const tags = (r.meta?.tag ?? []).filter((t) => t.system !== PROCESSING_ID_SYSTEM);
    r.meta = { ...r.meta, tag: [...tags, { system: PROCESSING_ID_SYSTEM, code: pid }] };
  }
}

const PROCESSING_ID_SYSTEM = 'http://terminology.hl7.org/CodeSystem/v2-0103';

function mapByType(msg: Hl7v2Message, code: string, ctx: MapContext): MappedMessage {
  switch (code) {
    case 'ADT':
      return mapAdt(msg, ctx);
    case 'ORU':
    case 'OUL':
      return mapResults(msg, ctx);
    default: {
      const trig = msg.triggerEvent;
      if (code === 'ORM' && trig && trig !== 'O01') {
        throw new Hl7RejectError([issueAt(msg.msh, 9, HL7_ERROR.unsupportedEventCode, `ORM event ${trig} is not supported (ORM^O01 is)`, 2)]);
      }
      return mapOrders(msg, ctx);
    }
  }
}
