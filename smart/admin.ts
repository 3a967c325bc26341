/** Admin API (behind the admin guard): clients, users, EHR launch contexts, key rotation. The CLI calls these. */
import express from 'express';
import { badRequest, FhirError, notFound } from '../src/index.js';
import { listClients, publicView, registerClient, findClient } from './clients.js';
import { fhirBase, type SmartCore } from './core.js';
import { randomToken } from './secrets.js';
import { addUser } from './users.js';

const ID = /^[A-Za-z0-9\-.]{1,64}$/;

/** Accepts the CLI's flag names (redirect-uri, launch-uri, jwks-url, fhir-user) and the snake_case API names. */
function pick(body: Record<string, unknown>, ...names: string[]): unknown {
  for (const n of names) if (body[n] !== undefined) return body[n];
  return undefined;
}

export function adminRoutes(core: SmartCore): express.Router {
  const r = express.Router();

  r.post('/clients', async (req, res) => {
    const b = (req.body ?? {}) as Record<string, unknown>;
    const { client, clientSecret } = await registerClient(core.db, {
      name: b.name,
      redirect_uris: pick(b, 'redirect_uris', 'redirect_uri', 'redirect-uri'),
      launch_uri: pick(b, 'launch_uri', 'launch-uri'),
      confidential: b.confidential,
      jwks: b.jwks,
      jwks_url: pick(b, 'jwks_url', 'jwks-url'),
      scope: b.scope,
    });
    res.status(201).json({ ...publicView(client), ...(clientSecret ? { client_secret: clientSecret } : {}) });
  });

  r.get('/clients', async (_req, res) => {
    res.json((await listClients(core.db)).map(publicView));
  });

  r.post('/users', async (req, res) => {
    const b = (req.body ?? {}) as Record<string, unknown>;
    const user = await addUser(core.db, { username: b.username, password: b.password, fhir_user: pick(b, 'fhir_user', 'fhir-user', 'fhirUser') });
    res.status(201).json({ id: user.id, username: user.username, fhir_user: user.fhirUser });
  });

  r.post('/launch', async (req, res) => {
    const b = (req.body ?? {}) as Record<string, unknown>;
    const clientId = pick(b, 'client_id', 'client');
    if (typeof clientId !== 'string') throw badRequest('client (client_id) is required');
    const client = await findClient(core.db, clientId);
    if (!client) throw notFound(`client "${clientId}" is not registered`);
    const patient = b.patient === undefined ? undefined : String(b.patient);
    const encounter = b.encounter === undefined ? undefined : String(b.encounter);
    if (!patient) throw badRequest('patient is required');
    for (const [type, id] of [['Patient', patient], ['Encounter', encounter]] as const) {
      if (id === undefined) continue;
      if (!ID.test(id)) throw badRequest(`${type.toLowerCase()} "${id}" is not a valid id`);
      try {
        await core.repo.read(type, id);
      } catch (err) {
        if (err instanceof FhirError) throw badRequest(`${type}/${id} cannot be used as launch context: ${err.message}`);
        throw err;
      }
    }
    const launch = randomToken();
    await core.db.query(
      `INSERT INTO smart_launch (id, client_id, patient, encounter, expires_at) VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))`,
      [launch, client.clientId, patient, encounter ?? null, core.settings.launchTtl],
    );
    await core.audit({ action: 'launch-created', success: true, clientId: client.clientId, patient, detail: `EHR launch for ${client.name}${encounter ? ` in Encounter/${encounter}` : ''}`, ip: req.ip });
    const iss = fhirBase(core);
    const url = client.launchUri ? `${client.launchUri}${client.launchUri.includes('?') ? '&' : '?'}${new URLSearchParams({ iss, launch })}` : undefined;
    res.status(201).json({ launch, iss, ...(url ? { url } : { warning: `client ${client.name} has no launch_uri: open the app with iss and launch yourself` }), expires_in: core.settings.launchTtl });
  });

  r.post('/keys/rotate', async (_req, res) => {
    res.json(await core.keys.rotate());
  });

  return r;
}
