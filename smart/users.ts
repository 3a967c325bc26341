/** Login users of the authorization pages (`user add`). */
import { randomUUID } from 'node:crypto';
import type { Queryable } from '../src/index.js';
import { badRequest, conflict } from '../src/index.js';
import { hashPassword, verifyPassword } from './secrets.js';

export interface User {
  id: string;
  username: string;
  fhirUser?: string;
}

const FHIR_USER = /^(Practitioner|PractitionerRole|Patient|RelatedPerson|Person)\/[A-Za-z0-9\-.]{1,64}$/;

export async function addUser(db: Queryable, input: { username?: unknown; password?: unknown; fhir_user?: unknown }): Promise<User> {
  const username = typeof input.username === 'string' ? input.username.trim() : '';
  if (!username) throw badRequest('username is required');
  if (typeof input.password !== 'string' || input.password.length < 8) throw badRequest('password is required and must be at least 8 characters');
  const fhirUser = input.fhir_user === undefined ? undefined : String(input.fhir_user);
  if (fhirUser !== undefined && !FHIR_USER.test(fhirUser)) {
    throw badRequest(`fhir_user "${fhirUser}" must be a relative reference like Practitioner/123 (Practitioner, PractitionerRole, Patient, RelatedPerson or Person)`);
  }
  const id = randomUUID();
  const hash = await hashPassword(input.password);
  const r = await db.query('INSERT INTO smart_user (id, username, password_hash, fhir_user) VALUES ($1, $2, $3, $4) ON CONFLICT (username) DO NOTHING RETURNING id', [
    id,
    username,
    hash,
    fhirUser ?? null,
  ]);
  if (!r.rowCount) throw conflict(`user "${username}" already exists`);
  return { id, username, fhirUser };
}

/** The user when the password is right; undefined otherwise (same work either way). */
export async function checkLogin(db: Queryable, username: string, password: string): Promise<User | undefined> {
  const r = await db.query<{ id: string; username: string; password_hash: string; fhir_user: string | null }>(
    'SELECT id, username, password_hash, fhir_user FROM smart_user WHERE username = $1',
    [username],
  );
  const row = r.rows[0];
  const ok = await verifyPassword(password, row?.password_hash);
  return ok && row ? { id: row.id, username: row.username, fhirUser: row.fhir_user ?? undefined } : undefined;
}

export async function findUser(db: Queryable, id: string): Promise<User | undefined> {
  const r = await db.query<{ id: string; username: string; fhir_user: string | null }>('SELECT id, username, fhir_user FROM smart_user WHERE id = $1', [id]);
  const row = r.rows[0];
  return row ? { id: row.id, username: row.username, fhirUser: row.fhir_user ?? undefined } : undefined;
}
