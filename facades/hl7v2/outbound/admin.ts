/** Operator API under /admin/outbound: destinations, the outbox per destination and state, replay. */
import express, { type Request } from 'express';
import type { Database } from '../../../src/index.js';
import { badRequest, conflict, notFound } from '../../../src/index.js';
import { getDestination, listDestinations, parseDestination, saveDestination, setPaused, statusesOf, type Destination } from './destinations.js';
import { countsByDestination, emptyCounts, getOutbox, listOutbox, OUTBOX_STATES, replay, replayAll, type OutboxState } from './outbox.js';

export interface AdminHooks {
  /** Called after a destination changed, so this process's hook and workers see it at once. */
  changed(): Promise<void>;
}

const str = (v: unknown) => (typeof v === 'string' ? v : Array.isArray(v) ? String(v[0]) : undefined);

function states(v: unknown): OutboxState[] | undefined {
  const s = str(v);
  if (!s) return undefined;
  const list = s.split(',').map((x) => x.trim()) as OutboxState[];
  const bad = list.filter((x) => !OUTBOX_STATES.includes(x));
  if (bad.length) throw badRequest(`state must be some of ${OUTBOX_STATES.join(', ')}, got ${bad.join(', ')}`);
  return list;
}

function intParam(v: unknown, what: string): number | undefined {
  const s = str(v);
  if (s === undefined || s === '') return undefined;
  const n = Number(s);
  if (!Number.isInteger(n) || n < 0) throw badRequest(`${what} must be a non-negative integer, got "${s}"`);
  return n;
}

/** A destination as the API shows it: the result statuses it takes spelled out, also when they are its profile's default. */
const view = (d: Destination) => ({ ...d, statuses: [...statusesOf(d)] });

export function outboundAdminRouter(db: Database, hooks: AdminHooks): express.Router {
  const r = express.Router();
  const body = (req: Request) => (req.body && typeof req.body === 'object' ? (req.body as Record<string, unknown>) : {});

  r.get('/destinations', async (_req, res) => {
    const [dests, counts] = await Promise.all([listDestinations(db), countsByDestination(db)]);
    res.json({ destinations: dests.map((d) => ({ ...view(d), counts: counts[d.name] ?? emptyCounts() })) });
  });

  r.post('/destinations', async (req, res) => {
    const { replace, ...input } = body(req);
    const dest = parseDestination(input);
    const existing = await getDestination(db, dest.name);
    if (existing && replace !== true && replace !== 'true') {
      throw conflict(`destination ${dest.name} already exists; use PUT /admin/outbound/destinations/${dest.name} (or --replace) to change it`);
    }
    await saveDestination(db, dest);
    await hooks.changed();
    res.status(existing ? 200 : 201).json(view(dest));
  });

  r.get('/destinations/:name', async (req, res) => {
    const dest = await getDestination(db, req.params.name);
    if (!dest) throw notFound(`no destination named ${req.params.name}`);
    res.json({ ...view(dest), counts: (await countsByDestination(db))[dest.name] ?? emptyCounts() });
  });

  /** Changes the settings given and keeps the others. */
  r.put('/destinations/:name', async (req, res) => {
    const existing = await getDestination(db, req.params.name);
    const dest = parseDestination({ ...body(req), name: req.params.name }, existing);
    await saveDestination(db, dest);
    await hooks.changed();
    res.status(existing ? 200 : 201).json(view(dest));
  });

  for (const [action, paused] of [['pause', true], ['resume', false]] as const) {
    r.post(`/destinations/:name/${action}`, async (req, res) => {
      if (!(await setPaused(db, req.params.name, paused))) throw notFound(`no destination named ${req.params.name}`);
      await hooks.changed();
      const d = await getDestination(db, req.params.name);
      res.json(d && view(d));
    });
  }

  r.get('/messages', async (req, res) => {
    const q = req.query;
    const rows = await listOutbox(db, {
      destination: str(q.destination),
      state: states(q.state),
      patient: str(q.patient),
      beforeId: intParam(q.before, 'before'),
      limit: intParam(q.limit, 'limit'),
      withPayload: str(q.payload) === 'true',
    });
    res.json({ messages: rows, next: rows.length ? rows[rows.length - 1]!.id : null });
  });

  r.get('/messages/:id', async (req, res) => {
    const row = await getOutbox(db, intParam(req.params.id, 'message id') ?? -1);
    if (!row) throw notFound(`no outbound message ${req.params.id}`);
    res.json(row);
  });

  r.post('/messages/:id/replay', async (req, res) => {
    const id = intParam(req.params.id, 'message id') ?? -1;
    const row = await getOutbox(db, id);
    if (!row) throw notFound(`no outbound message ${req.params.id}`);
    if (row.state === 'queued' || row.state === 'sending') throw conflict(`outbound message ${id} is ${row.state}; only delivered, dead or superseded messages are replayed`);
    const rebuild = body(req).rebuild === true || body(req).rebuild === 'true';
    const newId = await replay(db, id, { rebuild });
    res.status(202).json({ replayed: [{ of: id, id: newId }] });
  });

  r.post('/messages/replay', async (req, res) => {
    const b = body(req);
    const state = (str(b.state) ?? 'dead') as 'dead' | 'delivered';
    if (state !== 'dead' && state !== 'delivered') throw badRequest('state must be dead or delivered');
    const destination = str(b.destination);
    if (destination && !(await getDestination(db, destination))) throw notFound(`no destination named ${destination}`);
    const ids = await replayAll(db, { destination, state, rebuild: b.rebuild === true || b.rebuild === 'true' });
    res.status(202).json({ replayed: ids.length, ids });
  });

  return r;
}
