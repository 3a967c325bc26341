import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { TARGETS, type TargetName } from '../../tools/fuzz-targets.js';
import { Hl7v2Message } from '../../facades/hl7v2/message.js';
import { acknowledgements } from '../../facades/hl7v2/inbound/ack.js';

/**
 * Every input the coverage-guided fuzzer (npm run fuzz) found is kept in fuzz/findings/<target>-crash-<sha1> and
 * replayed here through its target: each was a bug, each must stay fixed.
 */
const DIR = path.resolve(import.meta.dirname, '../../fuzz/findings');
const files = readdirSync(DIR).filter((f) => /-(crash|timeout|oom)-/.test(f));

describe('fuzzer findings stay fixed', () => {
  it.each(files)('%s', (file) => {
    const target = file.replace(/-(crash|timeout|oom)-.*$/, '') as TargetName;
    expect(Object.keys(TARGETS)).toContain(target);
    TARGETS[target](readFileSync(path.join(DIR, file)));
  });

  it('a letter declared as a delimiter (MSH-2 "B~\\&") still gets an ACK with ERR locations (was: SyntaxError /\\B+$/)', () => {
    const msg = Hl7v2Message.parse('MSH|B~\\&|LAB|HOSP|CONFLUX|HOSP|20240102030405||ORUBR01|C1|P|2.5.1\rPID|1');
    const [ack] = acknowledgements(msg, { code: 'AE', issues: [{ code: 101, segment: 'PID', sequence: 1, field: 3, message: 'PID-3 missing' }] });
    expect(ack).toContain('MSA|AE|C1');
    expect(ack).toContain('ERR||PIDB1B3|101BRequired field missingBHL70357|E');
  });
});
