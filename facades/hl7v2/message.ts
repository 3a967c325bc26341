/**
 * HL7 v2 message access on top of @medplum/core's tokenizer (Hl7Context/Hl7Segment), with what that
 * library lacks: delimiters read from MSH-1/MSH-2 (including 3-character and Java-doubled encoding
 * characters), unescaping, 1-based field/repetition/component/subcomponent access, and clear errors.
 * Envelope handling (BOM, CR/LF/CRLF, FHS/BHS batches) lives in envelope.ts.
 */
import { Hl7Context, Hl7Segment } from '@medplum/core';
import { unescapeHl7 } from './escape.js';
import { ConfluxError } from '../../src/index.js';

export interface Delimiters {
  field: string;
  component: string;
  repetition: string;
  escape: string;
  subcomponent: string;
}

export const DEFAULT_DELIMITERS: Delimiters = { field: '|', component: '^', repetition: '~', escape: '\\', subcomponent: '&' };

export class Hl7ParseError extends ConfluxError {
  constructor(message: string) {
    super('hl7-parse', message);
  }
}

/** One repetition of a field: components (1-based) of subcomponents (1-based), unescaped on access. */
export class Rep {
  constructor(
    private readonly comps: string[],
    private readonly d: Delimiters,
  ) {}
  /** Component `c`, subcomponent `s` (both 1-based), unescaped; '' when absent. */
  c(c: number, s = 1): string {
    const raw = this.comps[c - 1];
    if (!raw) return '';
    const sub = raw.split(this.d.subcomponent)[s - 1] ?? '';
    return unescapeHl7(sub, this.d);
  }
  /** Component `c` with its subcomponents, raw (still escaped). */
  rawComponent(c: number): string {
    return this.comps[c - 1] ?? '';
  }
  get componentCount(): number {
    return this.comps.length;
  }
  isEmpty(): boolean {
    return this.comps.every((c) => c === '' || c === '""');
  }
}

export class Segment {
  readonly name: string;
  constructor(
    private readonly seg: Hl7Segment,
    readonly d: Delimiters,
    /** 1-based position among segments with the same name (for ERR locations). */
    readonly sequence: number,
  ) {
    this.name = seg.name;
  }

  private fieldRaw(n: number): string[][] | undefined {
    if (this.name === 'MSH' || this.name === 'BHS' || this.name === 'FHS') {
      if (n === 1) return [[this.d.field]];
      if (n === 2) return [[this.encodingCharacters()]];
      return this.seg.fields[n - 1]?.components;
    }
    return this.seg.fields[n]?.components;
  }

  private encodingCharacters(): string {
    return this.d.component + this.d.repetition + this.d.escape + this.d.subcomponent;
  }

  /** The repetitions of field `n` (1-based); [] when the field is empty. */
  reps(n: number): Rep[] {
    const f = this.fieldRaw(n);
    if (!f) return [];
    if (n <= 2 && (this.name === 'MSH' || this.name === 'BHS' || this.name === 'FHS')) return [new Rep([f[0]![0]!], NO_ESCAPE)];
    return f.map((comps) => new Rep(comps, this.d)).filter((r) => !r.isEmpty());
  }

  /** Field `n`, component `c`, subcomponent `s`, repetition `r` (all 1-based), unescaped. */
  get(n: number, c = 1, s = 1, r = 1): string {
    const f = this.fieldRaw(n);
    if (!f) return '';
    if (n <= 2 && (this.name === 'MSH' || this.name === 'BHS' || this.name === 'FHS')) return f[0]![0]!;
    const comps = f[r - 1];
    if (!comps) return '';
    return new Rep(comps, this.d).c(c, s);
  }

  /** Field `n` exactly as received (escaped, with its delimiters). */
  raw(n: number): string {
    const f = this.fieldRaw(n);
    if (!f) return '';
    return f.map((comps) => comps.join(this.d.component)).join(this.d.repetition);
  }

  get fieldCount(): number {
    return this.name === 'MSH' ? this.seg.fields.length : this.seg.fields.length - 1;
  }

  toString(): string {
    return this.seg.toString();
  }
}

// MSH-1/MSH-2 are the delimiters themselves: never unescape them.
const NO_ESCAPE: Delimiters = { field: '\u0000', component: '\u0001', repetition: '\u0002', escape: '\u0003', subcomponent: '\u0004' };

/** Reads the delimiters declared by an MSH/BHS/FHS header line. */
export function readDelimiters(line: string): Delimiters {
  if (line.length < 5) throw new Hl7ParseError(`${line.slice(0, 3) || 'MSH'} header too short to declare delimiters`);
  const field = line[3]!;
  if (/[A-Za-z0-9\r\n]/.test(field)) throw new Hl7ParseError(`MSH-1 field separator '${field}' is not a delimiter`);
  const end = line.indexOf(field, 4);
  let enc = end === -1 ? line.slice(4) : line.slice(4, end);
  // A Java/C source literal "^~\\&" copied verbatim: a doubled escape character, not a 5th delimiter.
  if (enc.length === 5 && enc[2] === '\\' && enc[3] === '\\') enc = enc.slice(0, 3) + enc.slice(4);
  if (enc.length < 2) throw new Hl7ParseError(`MSH-2 encoding characters '${enc}' must declare at least component and repetition separators`);
  const chars = new Set([field, ...enc]);
  if (chars.size !== enc.length + 1) throw new Hl7ParseError(`MSH-2 encoding characters '${enc}' repeat a delimiter`);
  return {
    field,
    component: enc[0]!,
    repetition: enc[1]!,
    // 2.1-era messages may declare no escape or subcomponent character: use characters that never occur.
    escape: enc[2] ?? '\u0003',
    subcomponent: enc[3] ?? '\u0004',
  };
}

export class Hl7v2Message {
  readonly segments: Segment[];
  constructor(
    readonly text: string,
    readonly d: Delimiters,
    segments: Segment[],
    /** Lines that are not segments; the message is answered AE naming them. */
    readonly defects: string[] = [],
  ) {
    this.segments = segments;
  }

  /** Parses one message (segments separated by CR; envelope.ts has already normalised LF/CRLF). */
  static parse(text: string): Hl7v2Message {
    const lines = text.split(/\r\n|\r|\n/).filter((l) => l.trim() !== '');
    if (lines.length === 0) throw new Hl7ParseError('empty message');
    if (!lines[0]!.startsWith('MSH')) throw new Hl7ParseError(`message must start with MSH, found '${lines[0]!.slice(0, 3)}'`);
    const d = readDelimiters(lines[0]!);
    // The context's escape/subcomponent are used by the tokenizer only for splitting (subcomponents are split here).
    const ctx = new Hl7Context('\r', d.field, d.component, d.repetition, d.escape, d.subcomponent);
    const counts = new Map<string, number>();
    const segments: Segment[] = [];
    const defects: string[] = [];
    for (const [i, line] of lines.entries()) {
      const name = line.slice(0, 3);
      if (!/^[A-Z][A-Z0-9]{2}$/.test(name) || (line.length > 3 && line[3] !== d.field)) {
        // Usually a CR inside a field value that split it in two: report it, keep the rest readable.
        defects.push(`line ${i + 1} '${line.slice(0, 24)}' is not a segment (no segment id followed by '${d.field}')`);
        continue;
      }
      const seq = (counts.get(name) ?? 0) + 1;
      counts.set(name, seq);
      segments.push(new Segment(Hl7Segment.parse(line, ctx), d, seq));
    }
    return new Hl7v2Message(lines.join('\r'), d, segments, defects);
  }

  get msh(): Segment {
    return this.segments[0]!;
  }
  first(name: string): Segment | undefined {
    return this.segments.find((s) => s.name === name);
  }
  all(name: string): Segment[] {
    return this.segments.filter((s) => s.name === name);
  }

  get messageCode(): string {
    return this.msh.get(9, 1).toUpperCase();
  }
  get triggerEvent(): string {
    return this.msh.get(9, 2).toUpperCase();
  }
  /** 'ORU^R01^ORU_R01' as sent (the components that were present). */
  get messageType(): string {
    return [1, 2, 3].map((c) => this.msh.get(9, c)).filter(Boolean).join('^');
  }
  get controlId(): string {
    return this.msh.get(10);
  }
  get version(): string {
    return this.msh.get(12, 1);
  }
  get processingId(): string {
    return this.msh.get(11, 1);
  }
  /** 'MSH-3^MSH-4' (namespace ids), the key for duplicate detection together with MSH-10. */
  get sender(): string {
    return `${this.msh.get(3)}^${this.msh.get(4)}`;
  }
  get receiver(): string {
    return `${this.msh.get(5)}^${this.msh.get(6)}`;
  }
}
