/**
 * Operator API for devices, beds, associations and held readings, mounted on the runtime's /admin router
 * (behind the admin guard). The CLI `device add/associate/release/list` calls these over loopback.
 * The operator's name comes from the `X-Conflux-Operator` header or a `by` field (audited as AuditEvent.agent).
 */
import express, { type Request } from 'express';
import { badRequest } from '../fhir/outcome.js';
import { associate, listAssociations, release } from './association.js';
import { readingCounters } from './counters.js';
import { assignHeld, countHeld, discardHeld, getHeld, listHeld } from './quarantine.js';
import { addDevice, addLocation, listDevices, listLocations } from './registry.js';
import type { Actor, DeviceStore } from './repo-port.js';

function actor(req: Request): Actor {
  const body = (req.body ?? {}) as { by?: unknown };
  const who = req.get('x-conflux-operator') ?? (typeof body.by === 'string' ? body.by : undefined) ?? 'admin-api';
  return { who: who.slice(0, 200) };
}

function body(req: Request): Record<string, unknown> {
  const b = req.body as unknown;
  if (b === undefined) return {};
  if (!b || typeof b !== 'object' || Array.isArray(b)) throw badRequest('the request body must be a JSON object');
  return b as Record<string, unknown>;
}

function str(b: Record<string, unknown>, key: string, required = false): string | undefined {
  const v = b[key];
  if (v === undefined || v === null || v === '') {
    if (required) throw badRequest(`"${key}" is required`);
    return undefined;
  }
  if (typeof v !== 'string') throw badRequest(`"${key}" must be a string`);
  return v;
}

export function deviceAdminRouter(store: DeviceStore): express.Router {
  const r = express.Router();
  const db = store.db;

  r.get('/devices', async (_req, res) => {
    res.json({ devices: await listDevices(db), held: await countHeld(db), counters: await readingCounters(db) });
  });
  r.post('/devices', async (req, res) => {
    const b = body(req);
    const identifiers = b.identifiers;
    if (identifiers !== undefined && !Array.isArray(identifiers)) throw badRequest('"identifiers" must be an array of { system?, value }');
    const d = await addDevice(
      store,
      {
        name: str(b, 'name', true) as string,
        serialNumber: str(b, 'serialNumber'),
        eui64: str(b, 'eui64'),
        port: str(b, 'port'),
        manufacturer: str(b, 'manufacturer'),
        model: str(b, 'model'),
        identifiers: identifiers as never,
      },
      actor(req),
    );
    res.status(201).json(d);
  });
  r.get('/devices/:id', async (req, res) => {
    const d = (await listDevices(db, { device: req.params.id }))[0];
    if (!d) throw badRequest(`Device/${req.params.id} is not a registered device`);
    res.json({ ...d, associations: await listAssociations(db, { device: req.params.id }) });
  });
  r.post('/devices/:id/associate', async (req, res) => {
    const b = body(req);
    const a = await associate(store, { device: req.params.id, patient: str(b, 'patient', true) as string, location: str(b, 'location'), start: str(b, 'start') }, actor(req));
    res.status(201).json(a);
  });
  r.post('/devices/:id/release', async (req, res) => {
    const b = body(req);
    res.json(await release(store, { device: req.params.id, end: str(b, 'end') }, actor(req)));
  });
  r.get('/associations', async (req, res) => {
    const q = req.query as Record<string, string | undefined>;
    const activeAt = q.activeAt ? new Date(q.activeAt) : undefined;
    if (activeAt && Number.isNaN(activeAt.getTime())) throw badRequest(`activeAt "${q.activeAt}" is not a date-time`);
    res.json({ associations: await listAssociations(db, { device: q.device, patient: q.patient, activeAt, limit: q.limit ? Number(q.limit) : undefined }) });
  });
  r.get('/locations', async (_req, res) => {
    res.json({ locations: await listLocations(db) });
  });
  r.post('/locations', async (req, res) => {
    const b = body(req);
    const ids = b.identifiers;
    if (ids !== undefined && !Array.isArray(ids)) throw badRequest('"identifiers" must be an array of { system?, value }');
    const pt = str(b, 'physicalType');
    if (pt && !['bd', 'ro', 'wa'].includes(pt)) throw badRequest('"physicalType" must be bd, ro or wa');
    res.status(201).json(await addLocation(store, { name: str(b, 'name', true) as string, identifiers: ids as never, physicalType: pt as 'bd' }, actor(req)));
  });
  r.get('/held-readings', async (req, res) => {
    const q = req.query as Record<string, string | undefined>;
    const status = q.status ?? 'held';
    if (!['held', 'assigned', 'discarded', 'all'].includes(status)) throw badRequest('status must be held, assigned, discarded or all');
    res.json({ held: await listHeld(db, { status: status as 'held', limit: q.limit ? Number(q.limit) : undefined }) });
  });
  r.get('/held-readings/:id', async (req, res) => {
    res.json(await getHeld(db, req.params.id));
  });
  r.post('/held-readings/:id/assign', async (req, res) => {
    const b = body(req);
    const out = await assignHeld(store, req.params.id, { patient: str(b, 'patient', true) as string, note: str(b, 'note') }, actor(req));
    res.json(out);
  });
  r.post('/held-readings/:id/discard', async (req, res) => {
    const b = body(req);
    res.json(await discardHeld(store, req.params.id, { note: str(b, 'note', true) as string }, actor(req)));
  });
  return r;
}
