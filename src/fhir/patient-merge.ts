/**
 * Patient merge (HL7 v2 ADT A40/A34/A39, and any caller that must fold a duplicate record into the one that
 * survives). Inside the caller's transaction, through the Repository (one write path: every change is a new
 * version with history, search index and change hooks, so the outbox sees it):
 *
 *  1. the source (the prior, duplicate record) gets `link: replaced-by <target>` and `active: false`;
 *  2. the target (the survivor) gets `link: replaces <source>`;
 *  3. every resource in the source's Patient compartment (found through the stored compartments, i.e. the
 *     R4 CompartmentDefinition "patient") has each Reference to the source re-pointed to the target;
 *  4. one AuditEvent names both patients and how many resources moved.
 *
 * Identity decisions (FHIR R4 Patient.link semantics; R5's $merge is the model, with one deliberate deviation):
 *  - Neither patient's identifiers, names or other demographics are rewritten. R5 $merge copies the source's
 *    identifiers onto the target as `use: old`; we do not, because the HL7 v2 and DICOM facades key patients
 *    by identifier (conditional create/update): the old MRN on both records would make every later lookup by
 *    it ambiguous (412), and the record it names would change under the sender. A search by the old identifier
 *    finds the merged record, whose `replaced-by` link names the survivor.
 *  - The source keeps its other links; the target keeps its own data and links (only `replaces` is added).
 *  - Patient, Person (identity links), AuditEvent and Provenance (records of what happened, as it happened)
 *    are not re-pointed.
 *  - Refused with a clear error: a patient merged into itself; a target that is itself `replaced-by` another
 *    record (we do not silently follow the chain to the final survivor: the sender named a record that is no
 *    longer in use, so its master patient index disagrees with ours and a person should look); a source
 *    already merged into a different record.
 *  - Idempotent: a merge already done writes nothing new (no version, no AuditEvent). A resource filed to the
 *    source after the merge (a late result under the old MRN) is moved by a resend, and that is audited.
 */
import type { AuditEvent, AuditEventAgent, Patient, PatientLink, Resource } from '@medplum/fhirtypes';
import type { Queryable, Tx } from '../db/database.js';
import { badRequest, conflict, gone, notFound } from './outcome.js';
import type { Repository } from './repository.js';

export interface PatientMergeRequest {
  /** 'Patient/<id>': the prior (duplicate) record, merged away. */
  source: string;
  /** 'Patient/<id>': the surviving record. */
  target: string;
  /** Who asked: 'Practitioner/<id>', a user, a client, 'HL7 v2 ADT^HOSP'. */
  who: string;
  /** Why, for the audit trail (e.g. 'ADT^A40 MSG0001'). */
  reason: string;
}

export interface PatientMergeResult {
  source: string;
  target: string;
  /** Resources re-pointed by this call ('Observation/1', …); empty when nothing was left to move. */
  moved: string[];
  /** False when the merge was already complete: nothing was written. */
  changed: boolean;
  /** 'AuditEvent/<id>' written for this call, when it changed something. */
  audit?: string;
}

/** Types whose references to a patient are not clinical data to move (identity links, audit records). */
const NOT_MOVED = ['Patient', 'Person', 'AuditEvent', 'Provenance'];

export const PATIENT_AUDIT_SYSTEM = 'urn:conflux:audit:patient';

const PATIENT_REF = /^Patient\/([A-Za-z0-9\-.]{1,64})$/;

function idOf(ref: string, what: string): string {
  const m = PATIENT_REF.exec(ref ?? '');
  if (!m) throw badRequest(`patient merge: ${what} must be a "Patient/<id>" reference, got ${JSON.stringify(ref)}`);
  return m[1]!;
}

interface Row {
  resource_type: string;
  id: string;
  deleted: boolean;
  content: string | null;
}

const linksTo = (p: Patient, type: PatientLink['type'], ref: string): boolean =>
  (p.link ?? []).some((l) => l.type === type && l.other?.reference === ref);

export async function mergePatients(repo: Repository, tx: Tx, req: PatientMergeRequest): Promise<PatientMergeResult> {
  const sourceId = idOf(req.source, 'source');
  const targetId = idOf(req.target, 'target');
  const source = `Patient/${sourceId}`;
  const target = `Patient/${targetId}`;
  if (sourceId === targetId) throw badRequest(`patient merge: ${source} cannot be merged into itself`);
  if (!req.who?.trim()) throw badRequest('patient merge: who is required (for the audit trail)');

  // Both rows locked, in a fixed order, before anything is decided: two merges (or a merge and an update) of
  // the same patients cannot interleave, and two merges in opposite directions cannot deadlock.
  const locked = await tx.query<Row>(
    `SELECT resource_type, id, deleted, content FROM resource
      WHERE resource_type = 'Patient' AND id = ANY($1::text[]) ORDER BY id FOR UPDATE`,
    [[sourceId, targetId]],
  );
  const load = (id: string, ref: string, role: string): Patient => {
    const row = locked.rows.find((r) => r.id === id);
    if (!row) throw notFound(`patient merge: the ${role} ${ref} is not known`);
    if (row.deleted || row.content === null) throw gone(`patient merge: the ${role} ${ref} was deleted`);
    return JSON.parse(row.content) as Patient;
  };
  const src = load(sourceId, source, 'prior record (source)');
  const tgt = load(targetId, target, 'surviving record (target)');

  const tgtReplacedBy = (tgt.link ?? []).find((l) => l.type === 'replaced-by')?.other?.reference;
  if (tgtReplacedBy) {
    throw conflict(
      `patient merge: ${target} cannot survive a merge: it was itself merged into ${tgtReplacedBy} (Patient.link replaced-by); ` +
        `merge ${source} into the record that is in use`,
    );
  }
  const srcReplacedBy = (src.link ?? []).filter((l) => l.type === 'replaced-by').map((l) => l.other?.reference);
  const elsewhere = srcReplacedBy.find((r) => r !== target);
  if (elsewhere) throw conflict(`patient merge: ${source} was already merged into ${elsewhere}; it cannot also be merged into ${target}`);

  let changed = false;
  // 1. The source first: an outbound hook that sees a re-pointed result below can then tell it was a merge.
  if (!linksTo(src, 'replaced-by', target) || src.active !== false) {
    const links = linksTo(src, 'replaced-by', target) ? src.link : [...(src.link ?? []), { other: { reference: target }, type: 'replaced-by' as const }];
    await repo.update<Patient>({ ...src, active: false, link: links }, { tx });
    changed = true;
  }
  // 2. The survivor points back, so a reader of it can consult the merged record's history.
  if (!linksTo(tgt, 'replaces', source)) {
    await repo.update<Patient>({ ...tgt, link: [...(tgt.link ?? []), { other: { reference: source }, type: 'replaces' }] }, { tx });
    changed = true;
  }
  // 3. Everything in the source's compartment, locked in one statement, each rewritten as a new version.
  const moved: string[] = [];
  const members = await tx.query<Row>(
    `SELECT resource_type, id, deleted, content FROM resource
      WHERE compartments @> ARRAY[$1]::text[] AND NOT deleted AND NOT (resource_type = ANY($2::text[]))
      ORDER BY resource_type, id FOR UPDATE`,
    [source, NOT_MOVED],
  );
  for (const row of members.rows) {
    const before = JSON.parse(row.content as string) as Resource;
    const after = repointed(before, sourceId, targetId);
    if (!after) continue;
    await repo.update(after, { tx });
    moved.push(`${row.resource_type}/${row.id}`);
  }
  if (moved.length) changed = true;
  if (!changed) return { source, target, moved, changed };

  // 4. Audited in the same transaction: the AuditEvent exists exactly when the merge committed.
  const audit = await repo.create(mergeAuditEvent({ source, target, who: req.who, reason: req.reason, moved }), { tx });
  return { source, target, moved, changed, audit: `AuditEvent/${audit.resource.id}` };
}

/**
 * A copy of `r` with every Reference to Patient/<from> (relative, absolute, or versioned) pointing to
 * Patient/<to>; undefined when it holds none. Walks the whole resource (contained resources included), so a
 * reference outside the compartment's own parameters (Observation.focus) follows too.
 */
export function repointed(r: Resource, from: string, to: string): Resource | undefined {
  const match = new RegExp(`^(.*/)?Patient/${from.replace(/[.]/g, '\\.')}(/_history/[^/]+)?$`);
  let hits = 0;
  const walk = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(walk);
    if (!v || typeof v !== 'object') return v;
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
      if (k === 'reference' && typeof x === 'string') {
        const m = match.exec(x);
        if (m) {
          hits++;
          // The target's current version, not a version of the source: drop a _history suffix.
          out[k] = `${m[1] ?? ''}Patient/${to}`;
          continue;
        }
      }
      out[k] = k === 'meta' ? x : walk(x);
    }
    return out;
  };
  const copy = walk(r) as Resource;
  return hits ? copy : undefined;
}

/**
 * Whether a write is a merge moving a resource: it differs from its previous version only in references to a
 * patient that is now `replaced-by` the patient it points to instead. Outbound uses it so that a merge is told
 * to receivers once (ADT^A40), not as a resend of every result and order under the survivor.
 */
export async function isMergeRepoint(q: Queryable, previous: Resource | undefined, now: Resource | undefined): Promise<boolean> {
  if (!previous || !now || previous.resourceType === 'Patient') return false;
  const before = patientRefs(previous);
  const after = patientRefs(now);
  const gone = [...before].filter((x) => !after.has(x));
  const added = [...after].filter((x) => !before.has(x));
  if (gone.length !== 1 || added.length !== 1) return false;
  const from = gone[0]!;
  const to = added[0]!;
  const expected = repointed(previous, from, to);
  if (!expected || stripMeta(expected) !== stripMeta(now)) return false;
  const r = await q.query<{ content: string | null }>(`SELECT content FROM resource WHERE resource_type = 'Patient' AND id = $1 AND NOT deleted`, [from]);
  const p = r.rows[0]?.content ? (JSON.parse(r.rows[0].content) as Patient) : undefined;
  return !!p && linksTo(p, 'replaced-by', `Patient/${to}`);
}

function patientRefs(r: Resource): Set<string> {
  const out = new Set<string>();
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object') {
      for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
        if (k === 'meta') continue;
        if (k === 'reference' && typeof x === 'string') {
          const m = /(?:^|\/)Patient\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[^/]+)?$/.exec(x);
          if (m) out.add(m[1]!);
        } else walk(x);
      }
    }
  };
  walk(r);
  return out;
}

function stripMeta(r: Resource): string {
  const sort = (v: unknown): unknown =>
    Array.isArray(v)
      ? v.map(sort)
      : v && typeof v === 'object'
        ? Object.fromEntries(Object.entries(v).filter(([k]) => k !== 'meta').sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, x]) => [k, sort(x)]))
        : v;
  return JSON.stringify(sort(r));
}

/** The AuditEvent of one merge (DICOM "Patient Record" event, subtype merge), shaped like the device audits. */
export function mergeAuditEvent(opts: { source: string; target: string; who: string; reason: string; moved: string[]; at?: Date }): AuditEvent {
  const who: NonNullable<AuditEventAgent['who']> = /^[A-Za-z]+\/[A-Za-z0-9\-.]+$/.test(opts.who)
    ? ({ reference: opts.who } as NonNullable<AuditEventAgent['who']>)
    : { display: opts.who };
  const role = (code: string, display: string) => ({ system: 'http://terminology.hl7.org/CodeSystem/object-role', code, display });
  return {
    resourceType: 'AuditEvent',
    type: { system: 'http://dicom.nema.org/resources/ontology/DCM', code: '110110', display: 'Patient Record' },
    subtype: [{ system: PATIENT_AUDIT_SYSTEM, code: 'merge', display: 'Patient merge' }],
    action: 'U',
    recorded: (opts.at ?? new Date()).toISOString(),
    outcome: '0',
    outcomeDesc: `${opts.source} merged into ${opts.target}: ${opts.moved.length} resource(s) moved${opts.reason ? ` (${opts.reason})` : ''}`,
    agent: [{ who, requestor: true }],
    source: { observer: { display: 'Conflux patient merge' } },
    entity: [
      {
        what: { reference: opts.source },
        role: role('1', 'Patient'),
        description: 'merged record (now replaced-by the survivor, inactive)',
        detail: [{ type: 'moved', valueString: String(opts.moved.length) }],
      },
      { what: { reference: opts.target }, role: role('1', 'Patient'), description: 'surviving record' },
    ],
  };
}
