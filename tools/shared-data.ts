/**
 * Where tests and benchmarks find real-world material.
 *
 * - `test/fixtures/` (in the repository): a small representative subset of the shared corpus, in the same layout
 *   (fhir/synthea, dicom/pydicom, hl7v2/…), with its PROVENANCE file. The suite needs nothing else.
 * - The whole shared corpus, when present: `CONFLUX_SHARED_DATA` if set (and then only it), else `../shared/data`
 *   next to the checkout, else the workplace's `/work/shared/data`. Tests that sweep every file of a kind run once
 *   more over it (`dataSets()`); without it that run is skipped, saying so.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';

export const FIXTURES: string = path.resolve(import.meta.dirname, '../test/fixtures');

const candidates =
  process.env.CONFLUX_SHARED_DATA !== undefined
    ? [process.env.CONFLUX_SHARED_DATA]
    : [path.resolve(import.meta.dirname, '../../shared/data'), '/work/shared/data'];

/** The whole shared corpus, or undefined when it is not on this machine. */
export const SHARED_DATA: string | undefined = candidates.find((p) => !!p && existsSync(p));

export const CORPUS_ABSENT = `the shared corpus is absent (looked in ${candidates.join(', ')}; set CONFLUX_SHARED_DATA to its folder): runs over the whole corpus are skipped, the fixtures in test/fixtures still run`;

let said = false;
/** Says once per process that the corpus runs are skipped, and why. */
export function noteCorpusAbsent(): void {
  if (SHARED_DATA || said) return;
  said = true;
  console.warn(`NOTE: ${CORPUS_ABSENT}`);
}

export const fixturePath = (...parts: string[]): string => path.join(FIXTURES, ...parts);

export interface DataSet {
  /** 'fixtures' or 'shared corpus' (test names say which run they are). */
  name: string;
  /** Its root, in the layout of the shared corpus. */
  root: string;
}

/** What a test that sweeps every file of a kind runs over: the fixtures, and the whole corpus when present. */
export function dataSets(): DataSet[] {
  noteCorpusAbsent();
  return [{ name: 'fixtures', root: FIXTURES }, ...(SHARED_DATA ? [{ name: 'shared corpus', root: SHARED_DATA }] : [])];
}

/** A path in the whole corpus when present, else in the fixtures (benchmarks: the more data, the better). */
export function corpusOrFixturePath(...parts: string[]): string {
  const inCorpus = SHARED_DATA && path.join(SHARED_DATA, ...parts);
  return inCorpus && existsSync(inCorpus) ? inCorpus : fixturePath(...parts);
}

/**
 * A file by its path in the corpus layout: from the fixtures when it is there, else from the whole corpus (files
 * whose licence keeps them out of test/fixtures); undefined when neither has it. `inData(...)` says whether all are.
 */
export function dataFile(rel: string): string | undefined {
  const fixture = fixturePath(rel);
  if (existsSync(fixture)) return fixture;
  const shared = SHARED_DATA && path.join(SHARED_DATA, rel);
  return shared && existsSync(shared) ? shared : undefined;
}

export function inData(...rels: string[]): boolean {
  const ok = rels.every((r) => dataFile(r) !== undefined);
  if (!ok) noteCorpusAbsent();
  return ok;
}
