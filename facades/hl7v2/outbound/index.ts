/**
 * HL7 v2 outbound: the repository change hook that fills the outbox, one delivery worker per destination,
 * and the /admin/outbound API. Started by the HL7 v2 facade (facades/hl7v2/index.ts calls startOutbound).
 */
import { randomUUID } from 'node:crypto';
import type { Queryable, Tx } from '../../../src/index.js';
import type { FacadeContext, RunningFacade } from '../../../src/index.js';
import type { Runtime } from '../../../src/index.js';
import type { OutboundSettings } from '../config.js';
import { outboundAdminRouter } from './admin.js';
import { destinationsVersion, forgetProcess, listDestinations, readDestinationsFile, reportLoaded, saveDestination, untilAllLoaded } from './destinations.js';
import { enqueue, type NewOutboxRow } from './outbox.js';
import { withdraw } from './withdrawal.js';
import { activate, eventsFor, wants, type ActiveDestination } from './triggers.js';
import { DestinationWorker, type WorkerOptions } from './worker.js';

const TRIGGER_TYPES = new Set(['DiagnosticReport', 'Observation', 'ServiceRequest', 'Procedure', 'Patient']);

export interface OutboundHandle extends RunningFacade {
  /** Re-reads destinations now (tests, and after admin changes in this process). */
  refresh(): Promise<void>;
  workers(): DestinationWorker[];
}

const started = new WeakMap<Runtime, OutboundHandle>();

/** The outbound the HL7 v2 facade started for a server's runtime (tests, the benchmark). */
export function outboundOf(rt: Runtime): OutboundHandle {
  const handle = started.get(rt);
  if (!handle) throw new Error('HL7 v2 outbound has not been started for this runtime (is the hl7v2 plug-in installed?)');
  return handle;
}

/** Starts outbound for the runtime, or returns the handle of the one already started for it. */
export async function startOutbound(ctx: FacadeContext<OutboundSettings>): Promise<OutboundHandle> {
  const rt = ctx.runtime;
  const already = started.get(rt);
  if (already) return already;
  const { db, repo } = rt;
  const { log, settings } = ctx;
  const opts: WorkerOptions = { pollMs: settings.pollMs, batch: settings.batch, connectTimeoutMs: settings.connectTimeoutMs };
  const { refreshMs } = settings;

  let active: ActiveDestination[] = [];
  /** When `active` was last read (Date.now()); the hook re-reads it when older than refreshMs. */
  let loadedAt = 0;
  const workers = new Map<string, DestinationWorker>();
  let stopped = false;

  /** This process in hl7_outbound_process (which destination list it has loaded; see `settle`). */
  const processId = randomUUID();
  let loadedVersion = '';

  const load = async (q: Queryable) => {
    const version = await destinationsVersion(q);
    const dests = await listDestinations(q);
    const next: ActiveDestination[] = [];
    for (const d of dests) {
      try {
        next.push(activate(d));
      } catch (err) {
        log.error(`outbound ${d.name}: ${(err as Error).message}; destination ignored`);
      }
    }
    loadedAt = Date.now();
    loadedVersion = version;
    if (!stopped) active = next;
    return next;
  };

  const refresh = async () => {
    const next = await load(db);
    if (ctx.listen && !stopped) await reportLoaded(db, processId, loadedVersion);
    // Only a server delivers: a CLI command run in-process writes outbox rows, the next server sends them.
    if (!ctx.listen || stopped) return;
    for (const a of next) {
      const w = workers.get(a.dest.name);
      if (w) w.update(a.dest);
      else {
        const nw = new DestinationWorker(a.dest, db, repo, log, opts);
        workers.set(a.dest.name, nw);
        nw.start();
      }
    }
  };

  rt.admin.use(
    '/outbound',
    outboundAdminRouter(db, {
      // Answered once every live process files with the new list (each reloads within refreshMs), not before:
      // otherwise another worker or node would not queue the results it files in the meantime.
      changed: async () => {
        await refresh();
        await untilAllLoaded(db, loadedVersion, refreshMs, log);
      },
    }),
  );

  if (ctx.listen) {
    const file = settings.destinationsFile;
    if (file) {
      const fromFile = readDestinationsFile(file);
      for (const d of fromFile) await saveDestination(db, d, { keepPaused: true });
      log.info(`outbound: ${fromFile.length} destination(s) from ${file}`);
    }
  }

  // The hook runs in every process that writes (a server, or a CLI command such as `held assign` or
  // `messages replay` run in-process without one): the outbox row must commit with the change, whoever
  // makes it. Only delivery depends on `listen`. Observations written in the same transaction as their
  // report need no lookup of their own.
  const perTx = new WeakMap<Tx, Set<string>>();
  // Rows this transaction already queued (destination, event, group): a report's 20 results each name the
  // report again (see eventsFor); the first row stands, the other 19 need no statement.
  const queuedInTx = new WeakMap<Tx, Set<string>>();
  repo.onChange(async (tx, change) => {
    // A deletion carries only `previous`: it matters when it takes back a result already sent.
    const subject = change.resource ?? change.previous;
    if (stopped || !TRIGGER_TYPES.has(change.resourceType) || !subject) return;
    // Without the refresh timer (no server), destinations are re-read lazily, at most every refreshMs,
    // and inside the writer's transaction (PGlite has one connection).
    if (Date.now() - loadedAt > refreshMs) await load(tx);
    if (active.length === 0) return;
    let memo = perTx.get(tx);
    if (!memo) perTx.set(tx, (memo = new Set()));
    const events = await eventsFor(tx, change, memo);
    if (events.length === 0) return;
    const rows: NewOutboxRow[] = [];
    const trigger = `${change.resourceType}/${change.id}/_history/${change.versionId}`;
    let queued = queuedInTx.get(tx);
    if (!queued) queuedInTx.set(tx, (queued = new Set()));
    for (const ev of events) {
      if (ev.withdrawal) {
        for (const name of await withdraw(tx, active, ev, trigger)) workers.get(name)?.wake();
        continue;
      }
      for (const a of active) {
        if (!change.resource || !wants(a, ev, ev.filterOn ?? change.resource)) continue;
        const k = `${a.dest.name}\u0000${ev.event}\u0000${ev.groupKey}`;
        if (queued.has(k)) continue;
        queued.add(k);
        rows.push({ destination: a.dest.name, event: ev.event, groupKey: ev.groupKey, triggerRef: trigger, patientKey: ev.patientKey, carries: ev.carries });
      }
    }
    if (rows.length === 0) return;
    await enqueue(tx, rows);
    for (const r of rows) workers.get(r.destination)?.wake();
  }, {
    // With no destination (and a fresh list) a change needs no look: a lone create then skips its transaction.
    wants: (type) => !stopped && TRIGGER_TYPES.has(type) && (active.length > 0 || Date.now() - loadedAt > refreshMs),
  });

  await refresh();

  if (!ctx.listen) {
    const handle: OutboundHandle = {
      refresh,
      workers: () => [],
      async stop() {
        stopped = true;
        active = [];
        started.delete(rt);
      },
    };
    started.set(rt, handle);
    return handle;
  }

  const timer = setInterval(() => {
    refresh().catch((err) => log.error(`outbound: refreshing destinations failed: ${(err as Error).message}`));
  }, refreshMs);
  timer.unref();
  log.info(`outbound: ${active.length} destination(s): ${active.map((a) => `${a.dest.name} (${a.dest.profile}, ${a.dest.host}:${a.dest.port}${a.dest.paused ? ', paused' : ''})`).join(', ') || 'none'}`);

  const handle: OutboundHandle = {
    refresh,
    workers: () => [...workers.values()],
    async stop() {
      stopped = true;
      active = [];
      clearInterval(timer);
      await forgetProcess(db, processId).catch((err: Error) => log.warn(`outbound: leaving the process list failed (${err.message}); the entry expires`));
      await Promise.all([...workers.values()].map((w) => w.stop()));
      workers.clear();
      started.delete(rt);
    },
  };
  started.set(rt, handle);
  return handle;
}
