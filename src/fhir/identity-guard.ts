/**
 * Patient identity guard for facade transactions (docs/design.md principle 5): an identifier match (order number,
 * accession, sample id, visit number) must never move existing clinical data to another patient.
 *
 * A facade's transaction Bundle keys its resources by business identifiers (conditional update / create).
 * Before it is written, every such entry that names a patient is checked against what the identifier
 * already matches: a match that belongs to another patient is a conflict. The check runs under the same
 * advisory locks the transaction takes for those conditions, so two messages racing on one order number
 * cannot both pass it.
 *
 * Patient merges are honoured on the way: data for a record merged away (link replaced-by) goes to its survivor, and a
 * sender's upsert of a merged record keeps its links (see keepMergeLinks).
 *
 * REST clients are not guarded: a clinician's PUT that changes a subject is a deliberate correction.
 */
import type { Bundle, BundleEntry, Identifier, Patient, PatientLink, Reference, Resource } from '@medplum/fhirtypes';
import type { Tx } from '../db/database.js';
import { lockConditions, parseQuery } from './repository.js';
import { searchIdsMany } from './search/index.js';

export interface IdentityConflict {
  /** Index of the Bundle entry whose identifier matched another patient's resource. */
  entry: number;
  resourceType: string;
  /** The condition that matched, e.g. `identifier=urn:…|FL-77`. */
  condition: string;
  /** 'DiagnosticReport/<id>': the existing resource the identifier belongs to. */
  existing: string;
  /** 'Patient/<id>' of the existing resource. */
  existingPatient: string;
  /** That patient's identifiers (never demographics): what an error may show to name it. */
  existingPatientIdentifiers: Identifier[];
}

/**
 * refuse: report conflicts (the caller holds the message; nothing is written).
 * file-as-new: an operator decided the message is for its own patient: conflicting entries become new
 * resources (same identifiers), other patients' resources stay as they are.
 */
export type ConflictPolicy = 'refuse' | 'file-as-new';

export interface GuardResult {
  conflicts: IdentityConflict[];
  /** The Bundle to write: same-patient matches pinned to their id (an identifier shared by two patients after a
   * file-as-new must not make the condition ambiguous), conflicting entries turned into creates under file-as-new. */
  bundle: Bundle;
}

interface Conditional {
  index: number;
  resourceType: string;
  query: string;
  /** The advisory lock key the transaction processor uses for this condition. */
  lockQuery: string;
}

function conditionOf(e: BundleEntry, index: number): Conditional | undefined {
  const req = e.request;
  if (!req || !e.resource) return undefined;
  if (req.method === 'POST' && req.ifNoneExist && !req.url.includes('/')) {
    return { index, resourceType: req.url, query: req.ifNoneExist, lockQuery: req.ifNoneExist };
  }
  if (req.method === 'PUT') {
    const q = req.url.indexOf('?');
    if (q < 0) return undefined;
    const query = req.url.slice(q + 1);
    return { index, resourceType: req.url.slice(0, q), query, lockQuery: new URLSearchParams(parseQuery(query)).toString() };
  }
  return undefined;
}

/** The patient a resource is about: subject or patient, when it is a Patient reference (literal or a bundle fullUrl). */
function patientRefOf(r: Resource): string | undefined {
  const x = r as { subject?: Reference; patient?: Reference };
  const ref = x.subject?.reference ?? x.patient?.reference;
  if (!ref) return undefined;
  if (ref.startsWith('Patient/') || ref.startsWith('urn:uuid:') || ref.startsWith('urn:oid:')) return ref;
  return undefined;
}

export async function guardPatientIdentity(tx: Tx, input: Bundle, policy: ConflictPolicy = 'refuse'): Promise<GuardResult> {
  const entries = input.entry ?? [];
  const conditionals = entries.map(conditionOf);
  const patients = new Map<string, Conditional>();
  const guarded: Conditional[] = [];
  entries.forEach((e, i) => {
    const c = conditionals[i];
    if (!c) return;
    if (c.resourceType === 'Patient') {
      if (e.fullUrl) patients.set(e.fullUrl, c);
    } else if (patientRefOf(e.resource!)) guarded.push(c);
  });
  // A Patient replaced by its sender (ADT A08/A31 upsert) must keep what a merge decided: see keepMergeLinks.
  const patientPuts = [...patients.values()].filter((c) => entries[c.index]!.request!.method === 'PUT');
  if (guarded.length === 0 && patientPuts.length === 0) return { conflicts: [], bundle: input };

  // The transaction will take these same locks; taking them first makes check-then-write atomic.
  await lockConditions(tx, [...guarded, ...patients.values()].map((c) => [c.resourceType, c.lockQuery]));
  const patientConds = [...patients.entries()];
  const found = await searchIdsMany(
    tx,
    [...patientConds.map(([, c]) => c), ...guarded].map((c) => ({ resourceType: c.resourceType, params: parseQuery(c.query) })),
    // More than one match of a business identifier is already possible (file-as-new): look at a few.
    5,
  );
  const patientIdOf = new Map<string, string | null>(patientConds.map(([url], i) => [url, found[i]!.length === 1 ? found[i]![0]! : null]));
  const matches = found.slice(patientConds.length);
  /** 'Patient/<id>' an entry's subject names once its bundle reference is resolved; undefined for a new patient. */
  const resolved = (ref: string) => (ref.startsWith('Patient/') ? ref : patientIdOf.get(ref) ? `Patient/${patientIdOf.get(ref)}` : undefined);

  // A record merged away (Patient.link replaced-by, after an ADT A40) takes no new data: a result sent under the old
  // MRN is filed to the record that replaced it, where the merge moved the rest of that patient's data.
  const named = entries.flatMap((e) => {
    const ref = e.resource && e.resource.resourceType !== 'Patient' ? patientRefOf(e.resource) : undefined;
    const p = ref ? resolved(ref) : undefined;
    return p ? [p] : [];
  });
  const survivor = await survivorsOf(tx, [...new Set(named)]);
  const patientOf = (ref: string) => {
    const p = resolved(ref);
    return p ? (survivor.get(p) ?? p) : undefined;
  };

  // The existing resources those identifiers matched, to see whose they are.
  const wanted = new Map<string, [string, string]>();
  guarded.forEach((c, i) => {
    for (const id of matches[i]!) wanted.set(`${c.resourceType}/${id}`, [c.resourceType, id] as [string, string]);
  });
  const owners = await ownersOf(tx, [...wanted.values()]);

  const conflicts: IdentityConflict[] = [];
  // Entries are copied shallowly: what changes below replaces an entry's request or resource, or copies the resource
  // before changing it (a deep clone of every message's bundle was 2 % of an ORU's CPU, and garbage).
  const out: Bundle = { ...input, entry: entries.map((e) => ({ ...e })) };
  await keepMergeLinks(tx, out, patientPuts.flatMap((c) => {
    const id = patientIdOf.get(entries[c.index]!.fullUrl!);
    return id ? [{ index: c.index, id }] : [];
  }));
  if (survivor.size) {
    for (const e of out.entry ?? []) {
      const r = e.resource as { resourceType?: string; subject?: Reference; patient?: Reference } | undefined;
      if (!r || r.resourceType === 'Patient') continue;
      const key = r.subject?.reference ? 'subject' : 'patient';
      const field = r[key];
      const to = field?.reference ? survivor.get(resolved(field.reference) ?? '') : undefined;
      if (field && to) e.resource = { ...r, [key]: { ...field, reference: to } } as Resource;
    }
  }
  // Settled here under the locks, a condition need not be locked and searched again by the transaction: a Patient
  // found once is pinned to its id, and an identifier nothing matches becomes a plain create.
  for (const [url, c] of patientConds) {
    const id = patientIdOf.get(url);
    const n = found[patientConds.findIndex(([u]) => u === url)]!.length;
    if (id) pin(out.entry![c.index]!, c, id);
    else if (n === 0) settleAbsent(out.entry![c.index]!, c);
  }
  for (const [i, c] of guarded.entries()) {
    const ids = matches[i]!;
    if (ids.length === 0) {
      settleAbsent(out.entry![c.index]!, c);
      continue;
    }
    const ref = patientRefOf(entries[c.index]!.resource!)!;
    // A patient the message creates has no data yet: every match belongs to someone else.
    const newPatient = patientOf(ref);
    const mine = ids.filter((id) => {
      const owner = owners.get(`${c.resourceType}/${id}`);
      return owner === undefined || owner === newPatient;
    });
    const entry = out.entry![c.index]!;
    if (mine.length > 0) {
      // Pinned, the transaction need not search for it again (a PUT to an id), and a number two patients hold
      // after a file-as-new cannot make the condition ambiguous.
      if (ids.length > 1 || entry.request!.method === 'PUT') pin(entry, c, mine[0]!);
      continue;
    }
    if (policy === 'file-as-new') {
      entry.request = { method: 'POST', url: c.resourceType };
      continue;
    }
    const existing = `${c.resourceType}/${ids[0]}`;
    const existingPatient = owners.get(existing)!;
    conflicts.push({ entry: c.index, resourceType: c.resourceType, condition: c.query, existing, existingPatient, existingPatientIdentifiers: [] });
  }
  if (conflicts.length) {
    const pids = [...new Set(conflicts.map((x) => x.existingPatient.slice('Patient/'.length)))];
    const r = await tx.query<{ id: string; content: string }>("SELECT id, content FROM resource WHERE resource_type = 'Patient' AND id = ANY($1::text[]) AND NOT deleted", [pids]);
    const idsOf = new Map<string, Identifier[]>();
    for (const row of r.rows) {
      const p = JSON.parse(row.content) as Patient;
      idsOf.set(`Patient/${row.id}`, (p.identifier ?? []).map(({ system, value, type }) => ({ system, value, ...(type ? { type } : {}) })));
    }
    for (const x of conflicts) x.existingPatientIdentifiers = idsOf.get(x.existingPatient) ?? [];
  }
  return { conflicts, bundle: out };
}

/** A condition that matches nothing (checked under its lock) is a plain create: no second lock and search. */
function settleAbsent(entry: BundleEntry, c: Conditional): void {
  if (entry.resource!.id) return; // a conditional PUT carrying an id creates with that id: left to the transaction
  entry.request = { method: 'POST', url: c.resourceType };
}

/** Narrows a condition to one id: a PUT becomes PUT Type/id, a conditional create gets `_id`. */
function pin(entry: BundleEntry, c: Conditional, id: string): void {
  if (entry.request!.method === 'PUT') {
    entry.request = { method: 'PUT', url: `${c.resourceType}/${id}` };
    entry.resource = { ...entry.resource!, id };
  } else {
    entry.request = { ...entry.request!, ifNoneExist: `${c.query}&_id=${encodeURIComponent(id)}` };
  }
}

/**
 * An HL7 v2 sender's Patient upsert (A08, A31) knows nothing of FHIR links: replacing the record as sent would drop the
 * links a merge wrote and make a merged record active again, silently undoing the merge (and sending later results to
 * it). The record's links are kept, and a record replaced by another stays inactive.
 */
async function keepMergeLinks(tx: Tx, bundle: Bundle, puts: Array<{ index: number; id: string }>): Promise<void> {
  if (puts.length === 0) return;
  const r = await tx.query<{ id: string; link: PatientLink[] }>(
    `SELECT id, content::jsonb->'link' AS link FROM resource
      WHERE resource_type = 'Patient' AND id = ANY($1::text[]) AND NOT deleted AND content LIKE '%"link"%'`,
    [puts.map((p) => p.id)],
  );
  for (const row of r.rows) {
    const existing = typeof row.link === 'string' ? (JSON.parse(row.link) as PatientLink[]) : row.link;
    if (!existing?.length) continue;
    for (const { index, id } of puts) {
      if (id !== row.id) continue;
      const entry = bundle.entry![index]!;
      const patient = entry.resource as Patient;
      const links = [...(patient.link ?? [])];
      for (const l of existing) if (!links.some((x) => x.type === l.type && x.other?.reference === l.other?.reference)) links.push(l);
      entry.resource = { ...patient, link: links, ...(links.some((l) => l.type === 'replaced-by') ? { active: false } : {}) };
    }
  }
}

/** 'Patient/<id>' → the record that finally replaced it (Patient.link replaced-by, followed a few hops), for merged ones. */
async function survivorsOf(tx: Tx, patients: string[]): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  let ask = patients;
  for (let hop = 0; hop < 5 && ask.length; hop++) {
    const r = await tx.query<{ id: string; survivor: string }>(
      `SELECT id, (SELECT l->'other'->>'reference' FROM jsonb_array_elements(content::jsonb->'link') l
                    WHERE l->>'type' = 'replaced-by' LIMIT 1) AS survivor
         FROM resource WHERE resource_type = 'Patient' AND id = ANY($1::text[]) AND NOT deleted AND content LIKE '%"replaced-by"%'`,
      [ask.map((p) => p.slice('Patient/'.length))],
    );
    ask = [];
    for (const row of r.rows) {
      if (!row.survivor?.startsWith('Patient/')) continue;
      const from = `Patient/${row.id}`;
      for (const [k, v] of out) if (v === from) out.set(k, row.survivor);
      if (!out.has(from)) out.set(from, row.survivor);
      ask.push(row.survivor);
    }
  }
  return out;
}

/** 'Type/id' → 'Patient/<id>' its subject/patient names; absent when it names none. */
async function ownersOf(tx: Tx, refs: Array<[string, string]>): Promise<Map<string, string>> {
  const owners = new Map<string, string>();
  if (refs.length === 0) return owners;
  const r = await tx.query<{ resource_type: string; id: string; subject: string | null }>(
    `SELECT resource_type, id, coalesce(content::jsonb->'subject'->>'reference', content::jsonb->'patient'->>'reference') AS subject
       FROM resource WHERE (resource_type, id) IN (SELECT * FROM unnest($1::text[], $2::text[])) AND NOT deleted`,
    [refs.map((x) => x[0]), refs.map((x) => x[1])],
  );
  for (const row of r.rows) if (row.subject?.startsWith('Patient/')) owners.set(`${row.resource_type}/${row.id}`, row.subject);
  return owners;
}
