/**
 * A lean reader for the common case of a dataset header (little/big endian, explicit/implicit VR,
 * Latin-1 or UTF-8 text) that stops at the top-level Pixel Data. It produces the same DICOM JSON as the
 * dcmjs path in part10.ts at about a tenth of the cost (dcmjs took 1.8 ms for CT_small's 256 elements,
 * a sixth of a C-STORE). Anything unusual throws `Unsupported`, and the caller falls back to dcmjs.
 */
import type { DicomJson, JsonElement } from './part10.js';
import { vrOf } from './part10.js';
import { ConfluxError } from '../../src/index.js';

export class Unsupported extends ConfluxError {
  constructor(message: string) {
    super('dicom-unsupported', message);
  }
}

const LONG_VRS = new Set(['OB', 'OD', 'OF', 'OL', 'OV', 'OW', 'SQ', 'UC', 'UN', 'UR', 'UT', 'SV', 'UV']);
const BINARY = new Set(['OB', 'OD', 'OF', 'OL', 'OV', 'OW', 'UN']);
const TEXT_SINGLE = new Set(['LT', 'ST', 'UT', 'UR']);
const STRINGS = new Set(['AE', 'AS', 'CS', 'DA', 'DT', 'LO', 'PN', 'SH', 'TM', 'UC', 'UI', 'DS', 'IS', ...TEXT_SINGLE]);
const NUMBERS: Record<string, [number, (b: Buffer, o: number, le: boolean) => number]> = {
  US: [2, (b, o, le) => (le ? b.readUInt16LE(o) : b.readUInt16BE(o))],
  SS: [2, (b, o, le) => (le ? b.readInt16LE(o) : b.readInt16BE(o))],
  UL: [4, (b, o, le) => (le ? b.readUInt32LE(o) : b.readUInt32BE(o))],
  SL: [4, (b, o, le) => (le ? b.readInt32LE(o) : b.readInt32BE(o))],
  FL: [4, (b, o, le) => (le ? b.readFloatLE(o) : b.readFloatBE(o))],
  FD: [8, (b, o, le) => (le ? b.readDoubleLE(o) : b.readDoubleBE(o))],
};
const INLINE_LIMIT = 4096;

interface Ctx {
  buf: Buffer;
  explicit: boolean;
  little: boolean;
  utf8: boolean;
}

function hex(n: number): string {
  return n.toString(16).toUpperCase().padStart(4, '0');
}

function decodeText(ctx: Ctx, start: number, len: number): string {
  return ctx.buf.toString(ctx.utf8 ? 'utf8' : 'latin1', start, start + len);
}

function value(ctx: Ctx, vr: string, start: number, len: number): JsonElement {
  const { buf, little } = ctx;
  if (BINARY.has(vr)) return len > 0 && len <= INLINE_LIMIT ? { vr, InlineBinary: buf.toString('base64', start, start + len) } : { vr };
  const num = NUMBERS[vr];
  if (num) {
    const [size, read] = num;
    if (len % size) throw new Unsupported(`${vr} length ${len}`);
    const values: number[] = [];
    for (let o = start; o < start + len; o += size) values.push(read(buf, o, little));
    return values.length ? { vr, Value: values } : { vr };
  }
  if (!STRINGS.has(vr)) throw new Unsupported(`VR ${vr}`);
  let text = decodeText(ctx, start, len).replace(/[\0 ]+$/, '');
  if (TEXT_SINGLE.has(vr)) return text ? { vr, Value: [text] } : { vr };
  if (vr !== 'PN') text = text.replace(/^ +/, '');
  const parts = text.split('\\').map((p) => (vr === 'UI' ? p.replace(/\0/g, '').trim() : p.trim()));
  let values: unknown[];
  if (vr === 'DS' || vr === 'IS') values = parts.filter((p) => p !== '').map((p) => Number(p));
  else if (vr === 'PN') {
    values = parts
      .filter((p) => p !== '')
      .map((p) => {
        const [a, i, ph] = p.split('=');
        return { ...(a !== undefined && a !== '' ? { Alphabetic: a } : {}), ...(i ? { Ideographic: i } : {}), ...(ph ? { Phonetic: ph } : {}) };
      });
  } else values = parts.filter((p) => p !== '');
  if (values.some((v) => typeof v === 'number' && !Number.isFinite(v))) throw new Unsupported('non-numeric DS/IS');
  return values.length ? { vr, Value: values } : { vr };
}

/** Reads elements from `pos` until `end` (or a delimiter / the top-level Pixel Data); returns the position reached. */
function readItems(ctx: Ctx, pos: number, end: number, out: DicomJson, top: boolean): { pos: number; pixel?: number } {
  const { buf, little } = ctx;
  const u16 = (o: number) => (little ? buf.readUInt16LE(o) : buf.readUInt16BE(o));
  const u32 = (o: number) => (little ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  while (pos < end) {
    if (pos + 8 > buf.length) throw new RangeError('truncated element header');
    const group = u16(pos);
    const elem = u16(pos + 2);
    if (group === 0xfffe) {
      if (elem === 0xe00d) return { pos: pos + 8 }; // item delimitation
      throw new Unsupported('unexpected delimiter');
    }
    const tag = hex(group) + hex(elem);
    if (top && tag === '7FE00010') return { pos, pixel: pos };
    let vr: string;
    let len: number;
    let head: number;
    if (ctx.explicit) {
      vr = buf.toString('latin1', pos + 4, pos + 6);
      if (!/^[A-Z]{2}$/.test(vr)) throw new Unsupported(`VR "${vr}"`);
      if (LONG_VRS.has(vr)) {
        len = u32(pos + 8);
        head = 12;
      } else {
        len = u16(pos + 6);
        head = 8;
      }
    } else {
      len = u32(pos + 4);
      head = 8;
      vr = len === 0xffffffff ? 'SQ' : group % 2 === 1 && elem >= 0x10 && elem <= 0xff ? 'LO' : group % 2 === 1 ? 'UN' : vrOf(tag);
      if (vr === 'xs' || vr === 'ox' || vr === 'US or SS') vr = 'US';
    }
    pos += head;
    if (vr === 'SQ') {
      const items: DicomJson[] = [];
      const seqEnd = len === 0xffffffff ? Infinity : pos + len;
      while (pos < seqEnd) {
        if (pos + 8 > buf.length) throw new RangeError('truncated sequence');
        const ig = u16(pos);
        const ie = u16(pos + 2);
        const ilen = u32(pos + 4);
        pos += 8;
        if (ig === 0xfffe && ie === 0xe0dd) break; // sequence delimitation
        if (ig !== 0xfffe || ie !== 0xe000) throw new Unsupported('bad item tag');
        const item: DicomJson = {};
        const r = readItems(ctx, pos, ilen === 0xffffffff ? Infinity : pos + ilen, item, false);
        pos = r.pos;
        items.push(item);
      }
      out[tag] = items.length ? { vr, Value: items } : { vr };
      continue;
    }
    if (len === 0xffffffff) throw new Unsupported(`undefined length ${vr}`);
    if (pos + len > buf.length) throw new RangeError('truncated value');
    if (tag === '00080005') {
      const cs = decodeText(ctx, pos, len).trim();
      if (cs === 'ISO_IR 192') ctx.utf8 = true;
      else if (cs && cs !== 'ISO_IR 100' && cs !== 'ISO_IR 6') throw new Unsupported(`character set ${cs}`);
    }
    out[tag] = value(ctx, vr, pos, len);
    pos += len;
  }
  return { pos };
}

export interface FastHeader {
  dataset: DicomJson;
  /** Where the top-level Pixel Data element starts (its tag), if reached. */
  pixelTagOffset?: number;
  /** Whether parsing ended at the end of the buffer (more may follow in the file). */
  endedAtBuffer: boolean;
}

/** Parses the dataset in `buf` from `start`; throws Unsupported or RangeError (the caller decides). */
export function fastParseDataset(buf: Buffer, start: number, syntax: 'implicitLE' | 'explicitLE' | 'explicitBE'): FastHeader {
  const ctx: Ctx = { buf, explicit: syntax !== 'implicitLE', little: syntax !== 'explicitBE', utf8: false };
  const dataset: DicomJson = {};
  const r = readItems(ctx, start, buf.length, dataset, true);
  const sorted: DicomJson = {};
  for (const k of Object.keys(dataset).sort()) sorted[k] = dataset[k];
  return { dataset: sorted, pixelTagOffset: r.pixel, endedAtBuffer: r.pixel === undefined };
}
