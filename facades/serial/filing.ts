/**
 * Files a ReadingSet: each report goes to the patient named by the P record (by identifier) or, when
 * there is none, to the patient whose device association covers the reading's own time. Readings that
 * are implausible, lie in the future, or have no unambiguous patient are held for an operator.
 * Each report commits in one transaction (bundle or hold, plus counters).
 */
import type { Bundle, Identifier } from '@medplum/fhirtypes';
import { countReadings, explainAssociation, findDeviceIds, guardPatientIdentity, holdForAssociation, normalizeIdentifiers, updateMessage } from '../../src/index.js';
import type { ConflictPolicy, DeviceStore, IdentityConflict, Tx, WrittenEntry } from '../../src/index.js';
import { searchIds } from '../../src/index.js';
import type { Queryable } from '../../src/index.js';
import { DEFAULT_PLAUSIBILITY, type PlausibleRange } from './mapping/codemap.js';
import type { ReadingSet, ReportDraft } from './mapping/draft.js';
import { buildReportBundle, deviceKeyOf, specimenProbe } from './mapping/fhir.js';

export interface FilingOptions {
  /** Readings later than now + skew are held (clock error on the device). Default 5 minutes. */
  futureSkewMs?: number;
  /** Extra or overriding plausibility ranges by LOINC code. */
  plausibility?: Record<string, PlausibleRange>;
  /** Message log id of the transmission, kept with held readings. */
  messageId?: string;
  now?: () => Date;
  /**
   * refuse (default): a report whose sample id or result keys already belong to another patient is not filed
   * (the message is held as an identity conflict). file-as-new: an operator decided it is this patient's own
   * report: filed as new resources beside the other patient's (used by `resolveHeldMessage`).
   */
  policy?: ConflictPolicy;
  /** Files every report in this transaction instead of one transaction per report (resolving a held message). */
  tx?: Tx;
}

export interface FilingResult {
  filed: number;
  /** Held reading ids; a report refused for an identity conflict adds `identity-conflict:<report index>` (it has no held reading). */
  held: string[];
  duplicates: number;
  resourceRefs: string[];
  patientRefs: string[];
  reasons: string[];
}

export async function fileReadings(store: DeviceStore, set: ReadingSet, opts: FilingOptions = {}): Promise<FilingResult> {
  const out: FilingResult = { filed: 0, held: [], duplicates: 0, resourceRefs: [], patientRefs: [], reasons: [] };
  const now = (opts.now ?? (() => new Date()))();
  const ranges = { ...DEFAULT_PLAUSIBILITY, ...(opts.plausibility ?? {}) };
  const skew = opts.futureSkewMs ?? 5 * 60_000;
  const deviceKey = deviceKeyOf(set.deviceIdentifiers);
  // Reads go through the caller's transaction when there is one (PGlite has one connection: a read beside an
  // open transaction would wait for it forever).
  const q: Queryable = opts.tx ?? store.db;
  const known = await findDeviceIds(q, normalizeIdentifiers(set.deviceIdentifiers));
  for (const report of set.reports) {
    const at = report.at ?? set.sentAt ?? now;
    let reason: string | undefined;
    let patient: string | undefined;
    let device = known.length === 1 ? `Device/${known[0]}` : undefined;

    if (set.processingId && set.processingId !== 'P') {
      reason = `processing id "${set.processingId}" (not production: quality control, training or debugging) is never filed to a patient`;
    } else if (at.getTime() > now.getTime() + skew) {
      reason = `reading time ${at.toISOString()} is in the future (now ${now.toISOString()})`;
    } else {
      reason = implausible(report, ranges);
    }
    if (!reason) {
      if (report.patientIdentifiers.length) {
        const r = await patientByIdentifier(q, report.patientIdentifiers);
        if ('patient' in r) patient = r.patient;
        else reason = r.reason;
      } else {
        const a = await explainAssociation(q, { deviceIdentifiers: set.deviceIdentifiers }, at);
        if (a.ok) {
          patient = a.patient;
          device = a.device;
        } else reason = a.reason;
      }
    }
    const { bundle, observationKeys } = buildReportBundle({
      report,
      deviceIdentifiers: set.deviceIdentifiers,
      deviceName: set.deviceName,
      device,
      patient,
      issued: set.sentAt ?? at,
    });
    const inTx = <T>(fn: (tx: Tx) => Promise<T>): Promise<T> => (opts.tx ? fn(opts.tx) : store.db.transaction(fn));
    await inTx(async (tx) => {
      if (patient && !reason) {
        // Identity (docs/design.md principle 5): the sample id, and the result keys that contain it, must not already be
        // another patient's. The probe entry puts the sample id under the guard's lock and owner check; it is
        // never written.
        const probe = specimenProbe(report.sampleId, patient);
        const guarded = await guardPatientIdentity(tx, { ...bundle, entry: [...(bundle.entry ?? []), ...(probe ? [probe] : [])] }, opts.policy ?? 'refuse');
        if (guarded.conflicts.length) {
          const why = conflictReason(guarded.conflicts, report.sampleId, bundle.entry?.length ?? 0);
          out.held.push(`identity-conflict:${set.reports.indexOf(report)}`);
          out.reasons.push(why);
          // The session marks the message held from `held`; the kind says an operator resolves it (file as new / reject).
          if (opts.messageId) await updateMessage(tx, opts.messageId, { holdKind: 'identity-conflict' });
          await countReadings(tx, deviceKey, { held: observationKeys.length });
          return;
        }
        const toWrite: Bundle = { ...guarded.bundle, entry: (guarded.bundle.entry ?? []).slice(0, bundle.entry?.length ?? 0) };
        const written = await store.transaction(toWrite.entry ?? [], tx);
        const dups = countDuplicates(bundle, written);
        out.filed++;
        out.duplicates += dups;
        out.patientRefs.push(patient);
        // What this report wrote; a resend's matched resources were filed (and logged) by the first transmission.
        for (const w of written) if (w.action !== 'matched') out.resourceRefs.push(w.reference);
        await countReadings(tx, deviceKey, { filed: observationKeys.length - dups, duplicates: dups });
      } else {
        const id = await holdForAssociation(tx, {
          source: 'serial',
          messageId: opts.messageId,
          deviceIdentifiers: set.deviceIdentifiers,
          at,
          bundle,
          reason: reason as string,
        });
        out.held.push(id);
        out.reasons.push(reason as string);
        await countReadings(tx, deviceKey, { held: observationKeys.length });
      }
    });
  }
  if (out.patientRefs.length) out.patientRefs = [...new Set(out.patientRefs)];
  return out;
}

/** Names the O record's specimen id and the other patient by identifier (never by name). */
function conflictReason(conflicts: IdentityConflict[], sampleId: string | undefined, bundleLength: number): string {
  const c = conflicts.find((x) => x.entry >= bundleLength) ?? conflicts[0]!;
  const ids = c.existingPatientIdentifiers.map((i) => `${i.system ? `${i.system}|` : ''}${i.value}`).join(', ');
  const other = `another patient (${ids || c.existingPatient})`;
  const what = sampleId ? `specimen id ${sampleId} (O record) already belongs to ${other}: ${c.existing}` : `result ${c.condition} is already filed for ${other}: ${c.existing}`;
  return `identity conflict: ${what}; not filed, held for review (file it as new for this patient or reject it)`;
}

function implausible(report: ReportDraft, ranges: Record<string, PlausibleRange>): string | undefined {
  const bad: string[] = [];
  for (const o of report.observations) {
    if (!o.loinc || o.value.kind !== 'quantity') continue;
    const r = ranges[o.loinc];
    if (!r) continue;
    if (r.unit && o.value.ucum && r.unit !== o.value.ucum) continue; // another unit: cannot compare safely
    if (o.value.value < r.low || o.value.value > r.high) {
      bad.push(`${o.code.text ?? o.loinc} ${o.value.value}${o.value.unit ? ` ${o.value.unit}` : ''} is outside the plausible range ${r.low}–${r.high}${r.unit ? ` ${r.unit}` : ''}`);
    }
  }
  return bad.length ? `implausible value: ${bad.join('; ')}` : undefined;
}

async function patientByIdentifier(q: Queryable, ids: Identifier[]): Promise<{ patient: string } | { reason: string }> {
  const found = new Set<string>();
  for (const id of ids) {
    for (const pid of await searchIds(q, 'Patient', [['identifier', `${id.system ?? ''}|${id.value}`]], 2)) found.add(pid);
  }
  const shown = ids.map((i) => `${i.system}|${i.value}`).join(', ');
  if (found.size === 0) return { reason: `no Patient has identifier ${shown} (from the P record)` };
  if (found.size > 1) return { reason: `identifiers ${shown} (from the P record) match ${found.size} patients` };
  return { patient: `Patient/${[...found][0]}` };
}

/** Observations whose conditional create matched an existing resource: the reading was filed before. */
function countDuplicates(bundle: Bundle, written: WrittenEntry[]): number {
  let n = 0;
  (bundle.entry ?? []).forEach((e, i) => {
    if (e.resource?.resourceType === 'Observation' && written[i]?.status === 200) n++;
  });
  return n;
}
