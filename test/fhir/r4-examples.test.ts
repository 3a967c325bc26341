import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Resource } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { validationIssues } from '../../src/fhir/validation.js';
import { noteCorpusAbsent, SHARED_DATA } from '../../tools/shared-data.js';

// The official examples package (CC0) is part of the shared corpus only: this test runs when the corpus is present.
const PACKAGE = SHARED_DATA ? path.join(SHARED_DATA, 'fhir', 'r4-examples', 'hl7.fhir.r4.examples-4.0.1.tgz') : '';
if (!SHARED_DATA) noteCorpusAbsent();

/**
 * The official R4 examples that really are invalid, and why: each refusal must be for the reason listed here
 * (a constraint key, or the element the library names), and no other example may be refused.
 */
const REFUSED: Record<string, string[]> = {
  'Bundle-dataelements.json': ['Constraint bdl-7 not met'],
  'Bundle-v2-valuesets.json': ['Invalid code format (Bundle.entry[814].resource.concept[74].code)', 'String must contain non-whitespace content'],
  'CodeSystem-v2-0550.json': ['Invalid code format (CodeSystem.concept[74].code)', 'String must contain non-whitespace content (CodeSystem.concept[444].code)'],
  // R4: "Strings SHALL NOT exceed 1MB in size"; these narratives do.
  'CodeSystem-dicom-dcim.json': ['String cannot be larger than 1 MB (CodeSystem.text.div)'],
  'ValueSet-c80-doc-typecodes.json': ['String cannot be larger than 1 MB (ValueSet.text.div)'],
  'ImplementationGuide-fhir.json': ['Missing required property (ImplementationGuide.name)', 'Missing required property (ImplementationGuide.status)'],
  'ig-r4.json': ['Missing required property (ImplementationGuide.name)', 'Missing required property (ImplementationGuide.status)'],
  'Questionnaire-qs1.json': ['Missing required property (Questionnaire.item[0].item[0].linkId)'],
  'SearchParameter-codesystem-extensions-CodeSystem-author.json': ['Missing required property (SearchParameter.base)'],
  'SearchParameter-codesystem-extensions-CodeSystem-effective.json': ['Missing required property (SearchParameter.base)'],
  'SearchParameter-codesystem-extensions-CodeSystem-end.json': ['Missing required property (SearchParameter.base)'],
  'SearchParameter-codesystem-extensions-CodeSystem-keyword.json': ['Missing required property (SearchParameter.base)'],
  'SearchParameter-codesystem-extensions-CodeSystem-workflow.json': ['Missing required property (SearchParameter.base)'],
  'SearchParameter-valueset-extensions-ValueSet-author.json': ['Missing required property (SearchParameter.base)'],
  'SearchParameter-valueset-extensions-ValueSet-effective.json': ['Missing required property (SearchParameter.base)'],
  'SearchParameter-valueset-extensions-ValueSet-end.json': ['Missing required property (SearchParameter.base)'],
  'SearchParameter-valueset-extensions-ValueSet-keyword.json': ['Missing required property (SearchParameter.base)'],
  'SearchParameter-valueset-extensions-ValueSet-workflow.json': ['Missing required property (SearchParameter.base)'],
  // 68 characters: FHIR ids are at most 64.
  'SearchParameter-questionnaireresponse-extensions-QuestionnaireResponse-item-subject.json': ['Invalid id "questionnaireresponse-extensions-QuestionnaireResponse-item-subject"'],
  'StructureDefinition-Definition.json': ['Constraint sdf-4 not met'],
  'StructureDefinition-Event.json': ['Constraint sdf-4 not met'],
  'StructureDefinition-FiveWs.json': ['Constraint sdf-4 not met'],
  'StructureDefinition-Request.json': ['Constraint sdf-4 not met'],
};

/** Shares of the examples, each validated by a test of its own (one pass over 5,306 takes over a minute on a busy machine). */
const SHARES = 6;

describe.skipIf(!PACKAGE || !existsSync(PACKAGE))('the official R4 examples (shared corpus)', () => {
  let dir: string;
  let files: string[];
  const refused: Record<string, string[]> = {};
  let examples = 0;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'conflux-r4-examples-'));
    await new Promise<void>((resolve, reject) => execFile('tar', ['-xzf', PACKAGE, '-C', dir], (err) => (err ? reject(err) : resolve())));
    files = readdirSync(path.join(dir, 'package')).filter((f) => f.endsWith('.json') && f !== 'package.json' && !f.startsWith('.'));
  });
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it.each(Array.from({ length: SHARES }, (_, i) => i))('share %i of the examples is validated', async (share) => {
    for (let i = share; i < files.length; i += SHARES) {
      const resource = JSON.parse(readFileSync(path.join(dir, 'package', files[i]), 'utf8')) as Resource;
      if (!resource.resourceType) continue;
      examples++;
      const errors = validationIssues(resource).filter((e) => e.severity === 'error' || e.severity === 'fatal');
      if (errors.length) refused[files[i]] = errors.map((e) => e.diagnostics ?? '');
      // Validation is synchronous: let the test runner's own messages through now and then.
      if (i % 64 === share) await new Promise((r) => setImmediate(r));
    }
  });

  it('are accepted, apart from the invalid ones, each refused for its listed reason in a sentence with its location', () => {
    expect(examples).toBeGreaterThan(5000);
    expect(Object.keys(refused).sort()).toEqual(Object.keys(REFUSED).sort());
    for (const [f, reasons] of Object.entries(REFUSED)) {
      for (const reason of reasons) expect(refused[f]!.some((d) => d.includes(reason)), `${f}: ${reason}`).toBe(true);
      // Sentences, not the library's JSON; each names where.
      for (const d of refused[f]!) expect(d).toMatch(/^[A-Z][^{]*\(.+\)$/);
    }
    // Valid base64Binary with line breaks (R4 allows whitespace) is accepted.
    for (const f of ['Binary-example.json', 'Media-example.json', 'DiagnosticReport-gingival-mass.json']) expect(files).toContain(f);
  });
});
