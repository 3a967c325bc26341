/**
 * Admin API for the message log: GET /admin/messages, GET /admin/messages/:id, POST /admin/messages/:id/replay,
 * POST /admin/messages/:id/resolve (a message held for an identity conflict), POST /admin/messages/prune.
 */
import express from 'express';
import {
  badRequest,
  FhirError,
  getMessage,
  listMessages,
  MESSAGE_STATUSES,
  pruneMessages,
  resolveHeldMessage,
  type HeldAction,
  type MessageFilter,
  type MessageStatus,
  type Repository,
} from '../../../src/index.js';
import { replayMessage, type ProcessorDeps } from './processor.js';

export function messageAdminRoutes(deps: ProcessorDeps, repo: Repository): express.Router {
  const r = express.Router();
  r.get('/messages', async (req, res) => {
    const q = req.query as Record<string, string | undefined>;
    const filter: MessageFilter = {};
    try {
      if (q.status) {
        const statuses = q.status.split(',');
        const bad = statuses.filter((s) => !MESSAGE_STATUSES.includes(s as MessageStatus));
        if (bad.length) throw badRequest(`status must be one of ${MESSAGE_STATUSES.join(', ')}; got ${bad.join(', ')}`);
        filter.status = statuses as MessageStatus[];
      }
      if (q.type) filter.type = q.type;
      if (q.controlId) filter.controlId = q.controlId;
      if (q.sender) filter.sender = q.sender;
      if (q.patient) filter.patient = q.patient;
      if (q.channel) filter.channel = q.channel;
      if (q.holdKind) {
        if (q.holdKind !== 'association' && q.holdKind !== 'identity-conflict') throw badRequest(`holdKind must be association or identity-conflict; got ${q.holdKind}`);
        filter.holdKind = q.holdKind;
      }
      for (const k of ['since', 'until'] as const) {
        if (q[k]) {
          const d = new Date(q[k]!);
          if (Number.isNaN(d.getTime())) throw badRequest(`${k} must be an ISO date-time; got ${q[k]}`);
          filter[k] = d;
        }
      }
      if (q.before) filter.beforeSeq = Number(q.before);
      if (q.limit) filter.limit = Number(q.limit);
    } catch (e) {
      res.status(400).json({ error: (e as Error).message });
      return;
    }
    const messages = await listMessages(deps.db, filter);
    res.json({ messages, next: messages.length === (filter.limit ?? 100) ? messages.at(-1)!.seq : null });
  });
  r.post('/messages/prune', async (req, res) => {
    const before = new Date(String(req.body?.before ?? ''));
    if (Number.isNaN(before.getTime())) {
      res.status(400).json({ error: `before must be an ISO date-time; got ${JSON.stringify(req.body?.before ?? null)}` });
      return;
    }
    res.json({ deleted: await pruneMessages(deps.db, before), before: before.toISOString() });
  });
  r.get('/messages/:id', async (req, res) => {
    const m = await getMessage(deps.db, req.params.id);
    if (!m) {
      res.status(404).json({ error: `message ${req.params.id} not found` });
      return;
    }
    const { raw, ...rest } = m;
    res.json({ ...rest, raw: raw.toString('latin1').replace(/^\u00ef\u00bb\u00bf/, ''), rawBase64: raw.toString('base64') });
  });
  r.post('/messages/:id/resolve', async (req, res) => {
    const body = (req.body ?? {}) as { action?: unknown; note?: unknown; by?: unknown };
    const who = (req.get('x-conflux-operator') ?? (typeof body.by === 'string' ? body.by : undefined) ?? 'admin-api').slice(0, 200);
    try {
      const message = await resolveHeldMessage({ db: deps.db, repo }, req.params.id, {
        action: body.action as HeldAction,
        note: typeof body.note === 'string' ? body.note : undefined,
        who,
      });
      res.json(message);
    } catch (e) {
      if (!(e instanceof FhirError)) throw e;
      res.status(e.status).json({ error: e.message });
    }
  });
  r.post('/messages/:id/replay', async (req, res) => {
    const m = await getMessage(deps.db, req.params.id);
    if (!m) {
      res.status(404).json({ error: `message ${req.params.id} not found` });
      return;
    }
    try {
      const out = await replayMessage(deps, req.params.id);
      res.json({ replayOf: req.params.id, id: out.id, status: out.status, ack: out.replies });
    } catch (e) {
      res.status(422).json({ error: (e as Error).message });
    }
  });
  return r;
}
