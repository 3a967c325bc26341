/**
 * DICOM Part 10 files: writing the file meta header in front of a received C-STORE dataset, and
 * reading everything up to the Pixel Data from the first bytes of a file, so that indexing never
 * needs the whole (possibly huge) instance in memory.
 */
import { inflateRawSync } from 'node:zlib';
import dcmjs from 'dcmjs';
import { fastParseDataset } from './fast-parse.js';
import { ConfluxError } from '../../src/index.js';

const { DicomMessage, ReadBufferStream, DicomMetaDictionary } = dcmjs.data as unknown as {
  DicomMessage: {
    _read(stream: unknown, syntax: string, opts: Record<string, unknown>): Record<string, DcmjsElement>;
    _readTag(stream: unknown, syntax: string): { tag: { toCleanString(): string }; values: unknown[] };
  };
  ReadBufferStream: new (buf: ArrayBuffer, littleEndian?: unknown, opts?: Record<string, unknown>) => DcmjsStream;
  DicomMetaDictionary: {
    nameMap: Record<string, { tag: string; vr: string }>;
    dictionary: Record<string, { name: string; vr: string }>;
    naturalizeDataset(ds: unknown): Record<string, unknown>;
    denaturalizeDataset(ds: unknown): Record<string, unknown>;
  };
};
export { DicomMetaDictionary };

interface DcmjsStream {
  offset: number;
  size: number;
  reset(): void;
  increment(n: number): void;
  readAsciiString(n: number): string;
  more(n: number): DcmjsStream;
  end(): boolean;
}
interface DcmjsElement {
  vr?: string;
  Value?: unknown[];
}

export const TS = {
  implicitLE: '1.2.840.10008.1.2',
  explicitLE: '1.2.840.10008.1.2.1',
  deflated: '1.2.840.10008.1.2.1.99',
  explicitBE: '1.2.840.10008.1.2.2',
} as const;

export const IMPLEMENTATION_CLASS_UID = '1.2.826.0.1.3680043.10.1436.1';
export const IMPLEMENTATION_VERSION = 'CONFLUX_010';

/** An element of the DICOM JSON model (PS3.18 F.2). */
export interface JsonElement {
  vr: string;
  Value?: unknown[];
  InlineBinary?: string;
  BulkDataURI?: string;
}
export type DicomJson = Record<string, JsonElement>;

export class DicomParseError extends ConfluxError {
  constructor(message: string) {
    super('dicom-parse', message);
  }
}

function element(tag: number, vr: string, value: Buffer): Buffer {
  const long = ['OB', 'OW', 'OF', 'SQ', 'UT', 'UN'].includes(vr);
  const head = Buffer.alloc(long ? 12 : 8);
  head.writeUInt16LE(tag >>> 16, 0);
  head.writeUInt16LE(tag & 0xffff, 2);
  head.write(vr, 4, 'ascii');
  if (long) head.writeUInt32LE(value.length, 8);
  else head.writeUInt16LE(value.length, 6);
  return Buffer.concat([head, value]);
}

function uidValue(uid: string): Buffer {
  const b = Buffer.from(uid, 'ascii');
  return b.length % 2 ? Buffer.concat([b, Buffer.from([0])]) : b;
}

function textValue(s: string): Buffer {
  const b = Buffer.from(s, 'ascii');
  return b.length % 2 ? Buffer.concat([b, Buffer.from(' ')]) : b;
}

/** Preamble, "DICM" and the group 0002 meta header for a dataset received over DIMSE. */
export function buildPart10Header(sopClassUid: string, sopInstanceUid: string, transferSyntaxUid: string, sourceAe = ''): Buffer {
  const elements = [
    element(0x00020001, 'OB', Buffer.from([0, 1])),
    element(0x00020002, 'UI', uidValue(sopClassUid)),
    element(0x00020003, 'UI', uidValue(sopInstanceUid)),
    element(0x00020010, 'UI', uidValue(transferSyntaxUid)),
    element(0x00020012, 'UI', uidValue(IMPLEMENTATION_CLASS_UID)),
    element(0x00020013, 'SH', textValue(IMPLEMENTATION_VERSION)),
    ...(sourceAe ? [element(0x00020016, 'AE', textValue(sourceAe.trim()))] : []),
  ];
  const body = Buffer.concat(elements);
  const groupLength = Buffer.alloc(4);
  groupLength.writeUInt32LE(body.length, 0);
  return Buffer.concat([Buffer.alloc(128), Buffer.from('DICM', 'ascii'), element(0x00020000, 'UL', groupLength), body]);
}

export interface ParsedHeader {
  meta: DicomJson;
  /** Dataset attributes up to (not including) the top-level Pixel Data, DICOM JSON model. */
  dataset: DicomJson;
  transferSyntaxUid: string;
  /** Top-level Pixel Data: where its value starts in the file and its length (-1: encapsulated). */
  pixelData?: { valueOffset: number; length: number; vr: string };
}

/**
 * Parses a Part 10 file from `buf`, which holds its first bytes (or all of them when `complete`).
 * Returns 'need-more' when the prefix ends before the Pixel Data (or the end of a dataset without one).
 * `parser: 'dcmjs'` reads the dataset with dcmjs instead of the lean parser (fast-parse.ts): the reference the
 * tests compare the lean one against.
 */
export function parsePart10Header(buf: Buffer, complete: boolean, parser: 'lean' | 'dcmjs' = 'lean'): ParsedHeader | 'need-more' {
  if (buf.length < 132) {
    if (!complete) return 'need-more';
    throw new DicomParseError(`not a DICOM Part 10 file: ${buf.length} bytes, shorter than the 128-byte preamble and "DICM" prefix`);
  }
  if (buf.toString('ascii', 128, 132) !== 'DICM') {
    throw new DicomParseError('not a DICOM Part 10 file: the "DICM" prefix after the 128-byte preamble is missing (no file meta information)');
  }
  const ab = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length) as ArrayBuffer;
  const stream = new ReadBufferStream(ab, null, { noCopy: true });
  stream.reset();
  stream.increment(132);
  let meta: Record<string, DcmjsElement>;
  try {
    const first = DicomMessage._readTag(stream, TS.explicitLE);
    if (first.tag.toCleanString() !== '00020000') throw new DicomParseError('file meta information group length (0002,0000) is missing');
    const metaLength = Number(first.values[0]);
    if (!Number.isFinite(metaLength) || metaLength <= 0 || 132 + 12 + metaLength > buf.length) {
      if (!complete && 132 + 12 + metaLength > buf.length) return 'need-more';
      throw new DicomParseError(`file meta information group length ${metaLength} is out of range`);
    }
    meta = DicomMessage._read(stream.more(metaLength), TS.explicitLE, { ignoreErrors: false });
  } catch (err) {
    if (err instanceof DicomParseError) throw err;
    throw new DicomParseError(`file meta information is unreadable: ${(err as Error).message}`);
  }
  const ts = String(meta['00020010']?.Value?.[0] ?? '').replace(/\0/g, '').trim();
  if (!ts) throw new DicomParseError('file meta information has no Transfer Syntax UID (0002,0010)');
  const dataStart = stream.offset;

  let dsStream = stream;
  let syntax: string = ts === TS.implicitLE || ts === TS.explicitBE ? ts : TS.explicitLE;
  if (ts === TS.deflated) {
    // A deflate stream cannot be read from a prefix: inflate the rest (such files are small and rare).
    if (!complete) return 'need-more';
    try {
      const inflated = inflateRawSync(buf.subarray(dataStart));
      const iab = inflated.buffer.slice(inflated.byteOffset, inflated.byteOffset + inflated.length) as ArrayBuffer;
      dsStream = new ReadBufferStream(iab, null, { noCopy: true });
      dsStream.reset();
    } catch (err) {
      throw new DicomParseError(`deflated dataset cannot be inflated: ${(err as Error).message}`);
    }
    syntax = TS.explicitLE;
  } else if (syntax !== TS.implicitLE && buf.length >= dataStart + 6 && !/^[A-Z]{2}$/.test(buf.toString('latin1', dataStart + 4, dataStart + 6))) {
    // Some writers declare an explicit-VR syntax but encode the dataset implicit VR (DCMTK detects this too).
    syntax = TS.implicitLE;
  }

  if (ts !== TS.deflated && parser === 'lean') {
    try {
      const fast = fastParseDataset(buf, dataStart, syntax === TS.implicitLE ? 'implicitLE' : syntax === TS.explicitBE ? 'explicitBE' : 'explicitLE');
      if (fast.pixelTagOffset === undefined) {
        if (!complete) return 'need-more';
        return { meta: toDicomJson(meta), dataset: fast.dataset, transferSyntaxUid: ts };
      }
      const px = pixelDataAt(buf, fast.pixelTagOffset, syntax);
      if (px === 'need-more') {
        if (!complete) return 'need-more';
        throw new DicomParseError('dataset is truncated inside the Pixel Data element header');
      }
      return { meta: toDicomJson(meta), dataset: fast.dataset, transferSyntaxUid: ts, pixelData: px };
    } catch (err) {
      if (err instanceof DicomParseError) throw err;
      if (err instanceof RangeError && !complete) return 'need-more';
      // Unsupported or malformed: dcmjs decides (and words the error).
    }
  }

  let dict: Record<string, DcmjsElement>;
  try {
    dict = DicomMessage._read(dsStream, syntax, { ignoreErrors: false, untilTag: '7FE00010', includeUntilTagValue: false });
  } catch (err) {
    if (!complete) return 'need-more';
    throw new DicomParseError(`dataset is malformed or truncated: ${(err as Error).message}`);
  }
  let pixelData: ParsedHeader['pixelData'];
  if (dict['7FE00010']) {
    delete dict['7FE00010'];
    if (ts !== TS.deflated) {
      const px = pixelDataAt(buf, dsStream.offset - 4, syntax);
      if (px === 'need-more') {
        if (!complete) return 'need-more';
        throw new DicomParseError('dataset is truncated inside the Pixel Data element header');
      }
      pixelData = px;
    }
  } else if (!complete) {
    // The prefix ended at an element boundary before any Pixel Data: the rest may hold more.
    if (dsStream.offset >= buf.length) return 'need-more';
  }
  return { meta: toDicomJson(meta), dataset: toDicomJson(dict), transferSyntaxUid: ts, pixelData };
}

/** The top-level Pixel Data element whose tag starts at `tagStart`: where its value starts, and its length. */
function pixelDataAt(buf: Buffer, tagStart: number, syntax: string): ParsedHeader['pixelData'] | 'need-more' {
  if (tagStart + 12 > buf.length) return 'need-more';
  if (syntax === TS.implicitLE) {
    const length = buf.readUInt32LE(tagStart + 4);
    return { valueOffset: tagStart + 8, length: length === 0xffffffff ? -1 : length, vr: 'OW' };
  }
  const length = syntax === TS.explicitBE ? buf.readUInt32BE(tagStart + 8) : buf.readUInt32LE(tagStart + 8);
  return { valueOffset: tagStart + 12, length: length === 0xffffffff ? -1 : length, vr: buf.toString('ascii', tagStart + 4, tagStart + 6) };
}

const BINARY_VRS = new Set(['OB', 'OW', 'OF', 'OD', 'OL', 'OV', 'UN']);
const INLINE_LIMIT = 4096;

/** dcmjs's dict → the DICOM JSON model: small binaries inline (base64), big ones left out. */
export function toDicomJson(dict: Record<string, DcmjsElement>): DicomJson {
  const out: DicomJson = {};
  for (const tag of Object.keys(dict).sort()) {
    const el = dict[tag];
    const vr = el.vr ?? 'UN';
    const values = el.Value ?? [];
    if (BINARY_VRS.has(vr)) {
      const parts = values.filter((v): v is ArrayBuffer => v instanceof ArrayBuffer);
      const total = parts.reduce((n, p) => n + p.byteLength, 0);
      if (total > 0 && total <= INLINE_LIMIT) out[tag] = { vr, InlineBinary: Buffer.concat(parts.map((p) => Buffer.from(p))).toString('base64') };
      else out[tag] = { vr };
      continue;
    }
    if (vr === 'SQ') {
      out[tag] = { vr, ...(values.length ? { Value: values.map((item) => toDicomJson(item as Record<string, DcmjsElement>)) } : {}) };
      continue;
    }
    const clean = values
      .filter((v) => v !== undefined && v !== null && v !== '')
      .map((v) => (typeof v === 'string' ? v.replace(/\0+$/, '') : v));
    if (clean.length === 0) out[tag] = { vr };
    else if (vr === 'PN') out[tag] = { vr, Value: clean.map((v) => (typeof v === 'string' ? { Alphabetic: v } : v)) };
    else out[tag] = { vr, Value: clean };
  }
  return out;
}

/** First value of `tag` as a string ('' when absent). PN → its Alphabetic group. */
export function str(ds: DicomJson | undefined, tag: string): string {
  const v = ds?.[tag]?.Value?.[0];
  if (v === undefined || v === null) return '';
  if (typeof v === 'object') return String((v as { Alphabetic?: string }).Alphabetic ?? '');
  return String(v).trim();
}

export function num(ds: DicomJson | undefined, tag: string): number | undefined {
  const s = str(ds, tag);
  const n = Number(s);
  return s !== '' && Number.isFinite(n) ? n : undefined;
}

/** '(0010,0010)' / '00100010' / 'PatientName' → '00100010', or undefined for an unknown keyword. */
export function tagOf(keyOrTag: string): string | undefined {
  if (/^[0-9A-Fa-f]{8}$/.test(keyOrTag)) return keyOrTag.toUpperCase();
  const m = /^\(?([0-9A-Fa-f]{4}),([0-9A-Fa-f]{4})\)?$/.exec(keyOrTag);
  if (m) return `${m[1]}${m[2]}`.toUpperCase();
  const entry = DicomMetaDictionary.nameMap[keyOrTag];
  return entry ? entry.tag.replace(/[(),]/g, '').toUpperCase() : undefined;
}

/** The VR the dictionary gives a tag ('UN' when unknown). */
export function vrOf(tag: string): string {
  const entry = DicomMetaDictionary.dictionary[`(${tag.slice(0, 4)},${tag.slice(4)})`];
  return entry?.vr?.split('|')[0] ?? 'UN';
}

export function keywordOf(tag: string): string | undefined {
  return DicomMetaDictionary.dictionary[`(${tag.slice(0, 4)},${tag.slice(4)})`]?.name;
}

/** DICOM JSON → dcmjs's naturalized form (keyword → value), what dcmjs-dimse Datasets are built from. */
export function naturalize(ds: DicomJson): Record<string, unknown> {
  return DicomMetaDictionary.naturalizeDataset(JSON.parse(JSON.stringify(ds)));
}

/** A naturalized dcmjs-dimse dataset (keyword → value) → DICOM JSON. */
export function denaturalize(elements: Record<string, unknown>): DicomJson {
  const dict = DicomMetaDictionary.denaturalizeDataset(elements) as Record<string, DcmjsElement>;
  return toDicomJson(dict);
}
