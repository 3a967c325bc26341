/**
 * ASTM E1381 (CLSI LIS1-A) frames: STX FN text ETB|ETX C1 C2 CR LF.
 * FN is the frame number '0'..'7' (the first frame of a transmission is '1'); the checksum is the sum of
 * the bytes from FN through ETB/ETX modulo 256, as two upper-case hex digits.
 */
export const ENQ = 0x05;
export const ACK = 0x06;
export const NAK = 0x15;
export const EOT = 0x04;
export const STX = 0x02;
export const ETX = 0x03;
export const ETB = 0x17;
export const CR = 0x0d;
export const LF = 0x0a;

/** Text characters per frame a sender may put in one frame (LIS1-A 6.3.1.2: 247 bytes frame, 240 text). */
export const MAX_FRAME_TEXT = 240;

export function checksum(bytes: Uint8Array, from: number, to: number): string {
  let sum = 0;
  for (let i = from; i < to; i++) sum = (sum + bytes[i]) & 0xff;
  return sum.toString(16).toUpperCase().padStart(2, '0');
}

/** One frame as bytes. `last` chooses ETX (end of message) over ETB (more frames follow). */
export function encodeFrame(fn: number, text: string | Buffer, last: boolean): Buffer {
  const body = Buffer.concat([Buffer.from([0x30 + (fn % 8)]), typeof text === 'string' ? Buffer.from(text, 'latin1') : text, Buffer.from([last ? ETX : ETB])]);
  const cs = checksum(body, 0, body.length);
  return Buffer.concat([Buffer.from([STX]), body, Buffer.from(cs, 'latin1'), Buffer.from([CR, LF])]);
}

/**
 * Splits a message (records joined by CR, each ending with CR) into frames of at most `max` text
 * characters, numbered from `firstFn`. Each record starts a new frame and the last frame of each record ends
 * with ETX, as LIS1-A wants; intermediate frames of a long record end with ETB.
 */
export function encodeMessage(records: string[], firstFn = 1, max = MAX_FRAME_TEXT): Buffer[] {
  const frames: Buffer[] = [];
  let fn = firstFn;
  for (const record of records) {
    const text = Buffer.from(record.endsWith('\r') ? record : `${record}\r`, 'latin1');
    for (let off = 0; off < text.length; off += max) {
      const chunk = text.subarray(off, off + max);
      frames.push(encodeFrame(fn, chunk, off + max >= text.length));
      fn = (fn + 1) % 8;
    }
  }
  return frames;
}

export interface DecodedFrame {
  fn: number;
  text: Buffer;
  last: boolean;
  checksumOk: boolean;
  /** The frame's bytes as received (STX through the trailer). */
  raw: Buffer;
}

/**
 * Finds frames in a capture (a file or a logged transmission), tolerant of the trailer variants real
 * captures show: CR LF, CR only, LF only, or nothing after the checksum. Returns [] for non-ASTM input.
 */
export function decodeCapture(bytes: Uint8Array): DecodedFrame[] {
  const buf = Buffer.from(bytes);
  const frames: DecodedFrame[] = [];
  let i = 0;
  while (i < buf.length) {
    const stx = buf.indexOf(STX, i);
    if (stx < 0 || stx + 1 >= buf.length) break;
    const fnByte = buf[stx + 1];
    if (fnByte < 0x30 || fnByte > 0x37) {
      i = stx + 1;
      continue;
    }
    let end = -1;
    for (let j = stx + 2; j < buf.length; j++) {
      if (buf[j] === ETX || buf[j] === ETB) {
        end = j;
        break;
      }
      if (buf[j] === STX) break;
    }
    if (end < 0 || end + 3 > buf.length) {
      i = stx + 1;
      continue;
    }
    const cs = buf.subarray(end + 1, end + 3).toString('latin1');
    if (!/^[0-9A-Fa-f]{2}$/.test(cs)) {
      i = stx + 1;
      continue;
    }
    let stop = end + 3;
    if (buf[stop] === CR) stop++;
    if (buf[stop] === LF) stop++;
    frames.push({
      fn: fnByte - 0x30,
      text: buf.subarray(stx + 2, end),
      last: buf[end] === ETX,
      checksumOk: checksum(buf, stx + 1, end + 1) === cs.toUpperCase(),
      raw: buf.subarray(stx, stop),
    });
    i = stop;
  }
  return frames;
}

/** The message text carried by frames (ETB frames continue the record of the next frame). */
export function framesToText(frames: DecodedFrame[]): string {
  return Buffer.concat(frames.map((f) => f.text)).toString('latin1');
}
