/**
 * From received bytes to message texts: charset (UTF-8, falling back to Latin-1), a leading BOM,
 * CR / LF / CRLF segment separators, and FHS/BHS/BTS/FTS batch envelopes around one or more MSH
 * messages. Envelope defects are reported, not guessed around.
 */
export interface Envelope {
  /** Each message as CR-separated text starting with MSH. */
  messages: string[];
  /** The FHS or BHS header line, when the input was a batch. */
  batchHeader?: string;
  fileHeader?: string;
  /** Defects of the envelope that make it untrustworthy (counts that disagree, segments outside any message, nesting). */
  problems: string[];
  /** Tolerated irregularities (a missing BHS/BTS/FHS/FTS, as python-hl7 and HAPI accept). */
  warnings: string[];
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

export function decodeHl7(bytes: Uint8Array): string {
  let b = bytes;
  if (b.length >= 3 && b[0] === 0xef && b[1] === 0xbb && b[2] === 0xbf) b = b.subarray(3);
  try {
    return utf8.decode(b);
  } catch {
    // Older systems send ISO 8859-1 without saying so in MSH-18.
    return Buffer.from(b).toString('latin1');
  }
}

export function splitEnvelope(input: string | Uint8Array): Envelope {
  let text = typeof input === 'string' ? input : decodeHl7(input);
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const lines = text
    .split(/\r\n|\r|\n/)
    .map((l) => l.replace(/^\s+/, ''))
    .filter((l) => l.trim() !== '');
  const env: Envelope = { messages: [], problems: [], warnings: [] };
  let current: string[] | null = null;
  let batchCount = 0;
  let batchOpen = false;
  let fileOpen = false;
  let batches = 0;
  let implicitBatch = false;
  const flush = () => {
    if (current) env.messages.push(current.join('\r'));
    current = null;
  };
  for (const [i, line] of lines.entries()) {
    const id = line.slice(0, 3);
    if (id === 'FHS') {
      flush();
      if (fileOpen) env.problems.push(`FHS at line ${i + 1}: a second file header before FTS`);
      fileOpen = true;
      env.fileHeader ??= line;
    } else if (id === 'BHS') {
      flush();
      if (batchOpen) env.problems.push(`BHS at line ${i + 1}: a second batch header before BTS`);
      batchOpen = true;
      implicitBatch = false;
      batchCount = 0;
      batches++;
      env.batchHeader ??= line;
    } else if (id === 'BTS') {
      flush();
      if (!batchOpen && !implicitBatch) env.warnings.push(`BTS at line ${i + 1} without a BHS`);
      const declared = line.split(line[3] ?? '|')[1];
      if (declared && declared.trim() !== '' && Number(declared) !== batchCount) {
        env.problems.push(`BTS-1 declares ${declared} messages but the batch holds ${batchCount}`);
      }
      if (!batchOpen && !implicitBatch) batches++;
      batchOpen = false;
      implicitBatch = false;
    } else if (id === 'FTS') {
      flush();
      if (batchOpen) env.warnings.push(`FTS at line ${i + 1} before the batch was closed by BTS`);
      if (!fileOpen) env.warnings.push(`FTS at line ${i + 1} without an FHS`);
      const declared = line.split(line[3] ?? '|')[1];
      if (declared && declared.trim() !== '' && Number(declared) !== batches) {
        env.problems.push(`FTS-1 declares ${declared} batches but the file holds ${batches}`);
      }
      fileOpen = false;
    } else if (id === 'MSH') {
      flush();
      current = [line];
      // Messages outside BHS…BTS form an implicit batch (python-hl7, HAPI accept FHS + MSH… + FTS).
      if (!batchOpen && !implicitBatch) {
        implicitBatch = true;
        batchCount = 0;
        batches++;
      }
      batchCount++;
    } else if (current) {
      current.push(line);
    } else {
      env.problems.push(`segment ${id} at line ${i + 1} is outside any message (no MSH before it)`);
    }
  }
  flush();
  if (batchOpen) env.warnings.push('batch not closed: BHS without BTS');
  if (fileOpen) env.warnings.push('file not closed: FHS without FTS');
  if (env.messages.length === 0 && env.problems.length === 0) env.problems.push('no MSH segment found');
  return env;
}
