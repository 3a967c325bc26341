/** Reading the receiver's acknowledgement: MSA-1 decides, MSA-2 must name the message we sent. */
import { Hl7v2Message } from '../message.js';
import { ConfluxError } from '../../../src/index.js';

export interface AckResult {
  /** AA/CA → delivered, AE/CE → application error, AR/CR → rejected. */
  code: 'AA' | 'AE' | 'AR';
  raw: string;
  text: string;
}

export class AckProtocolError extends ConfluxError {
  constructor(message: string) {
    super('ack-protocol', message);
  }
}

export function readAck(text: string, controlId: string): AckResult {
  let msg: Hl7v2Message;
  try {
    msg = Hl7v2Message.parse(text);
  } catch (err) {
    throw new AckProtocolError(`the answer is not an HL7 message: ${(err as Error).message}`);
  }
  const msa = msg.first('MSA');
  if (!msa) throw new AckProtocolError(`the answer (${msg.messageType || 'no MSH-9'}) has no MSA segment`);
  const code = msa.get(1).toUpperCase();
  const answered = msa.get(2);
  if (answered !== controlId) throw new AckProtocolError(`the ACK answers MSH-10 "${answered}", not "${controlId}"`);
  const map: Record<string, AckResult['code']> = { AA: 'AA', CA: 'AA', AE: 'AE', CE: 'AE', AR: 'AR', CR: 'AR' };
  const c = map[code];
  if (!c) throw new AckProtocolError(`MSA-1 "${code}" is not an acknowledgement code`);
  const errText = msg.all('ERR').map((e) => e.get(8) || e.get(1, 4, 2) || e.get(3, 2)).filter(Boolean);
  return { code: c, raw: text, text: [msa.get(3), ...errText].filter(Boolean).join('; ') };
}
