/**
 * The DICOM facade (issue 8): DIMSE on DICOM_PORT, DICOMweb at /dicomweb, IHE Invoke Image Display at
 * /iid, the worklist mirror of imaging ServiceRequests and the ImagingStudy sync. See docs/dicom.md.
 */
import type { AddressInfo, Server as NetServer } from 'node:net';
import { badRequest, type Facade, type FacadeContext, notFound, registerHeldFiling, type RunningFacade } from '../../src/index.js';
import type { DicomConfig } from './config.js';
import { dicomwebRouter } from './dicomweb/routes.js';
import { dimse, makeScpClass } from './dimse/scp.js';
import { fileHeldInstanceAsNew } from './file-as-new.js';
import { ImagingStudySync } from './imaging-study.js';
import { MppsService } from './mpps.js';
import type { DicomServices } from './services.js';
import { InstanceStore } from './store.js';
import { backfillWorklist, worklistHook } from './worklist.js';

export interface RunningDicom extends RunningFacade {
  /** The DIMSE port actually bound (DICOM_PORT=0 picks a free one), or undefined when not listening. */
  dimsePort?: number;
  services: DicomServices;
}

/** How often dirty studies are synced to ImagingStudy when no association release triggers it. */
const SYNC_DELAY_MS = 1000;

export const facade: Facade<DicomConfig> = {
  name: 'dicom',
  async start(ctx: FacadeContext<DicomConfig>): Promise<RunningDicom> {
    const rt = ctx.runtime;
    const cfg = ctx.settings;
    const blobs = rt.blobs;
    const dicomwebBase = () => `${rt.config.baseUrl}/dicomweb`;
    const store = new InstanceStore(rt.db, blobs, { defaultIssuer: cfg.defaultIssuer }, ctx.log);
    const sync = new ImagingStudySync(rt.db, rt.write, cfg, dicomwebBase, ctx.log);
    const mpps = new MppsService(rt.db, rt.repo, rt.write, cfg);
    let timer: NodeJS.Timeout | undefined;
    let stopped = false;
    const services: DicomServices = {
      db: rt.db,
      repo: rt.repo,
      store,
      sync,
      mpps,
      syncSoon() {
        if (timer || stopped || !ctx.listen) return;
        timer = setTimeout(() => {
          timer = undefined;
          void sync.flush();
        }, SYNC_DELAY_MS);
      },
    };
    rt.repo.onChange(worklistHook(cfg), { wants: (type) => type === 'ServiceRequest' });
    // An instance held for an identity conflict, filed as new by an operator: coerced to new UIDs for its own patient.
    registerHeldFiling(['dicom', 'dicomweb'], (tx, message) => fileHeldInstanceAsNew({ db: rt.db, store, sync, log: ctx.log }, tx, message));
    // For in-process callers (tests, future admin commands): the runtime type does not know facades.
    (rt as unknown as { dicomServices: DicomServices }).dicomServices = services;

    rt.publicRoutes.use('/dicomweb', dicomwebRouter(rt, services, dicomwebBase));
    rt.publicRoutes.get('/iid', (req, res, next) => {
      try {
        res.redirect(302, iidTarget(req.query as Record<string, string>, cfg.viewerUrlTemplate, dicomwebBase()));
      } catch (err) {
        next(err);
      }
    });
    rt.admin.post('/dicom/sync', async (_req, res) => {
      await sync.flush();
      res.json({ ok: true });
    });

    if (!ctx.listen) return { async stop() {}, services };

    const backfilled = await backfillWorklist(rt.db, rt.repo, cfg).catch((err: Error) => {
      ctx.log.warn(`worklist backfill skipped: ${err.message}`);
      return 0;
    });
    if (backfilled) ctx.log.info(`worklist: mirrored ${backfilled} active imaging ServiceRequests`);
    // Studies left dirty by a crash between commit and sync.
    void sync.flush();

    const { log } = dimse;
    log.setLevel('silent');
    const server = new dimse.Server(makeScpClass(services, cfg, ctx.log));
    server.on('networkError', (e: Error) => ctx.log.warn(`DIMSE network error: ${e.message}`));
    const listening = new Promise<void>((resolve, reject) => {
      server.once('listening', () => resolve());
      const net = () => (server as unknown as { server?: NetServer }).server;
      setImmediate(() => net()?.once('error', reject));
    });
    // dcmjs-dimse hands its first argument to net.Server.listen, which also takes { port, host }: that binds
    // DIMSE to HOST like the other listeners (loopback when AUTH=off) instead of every interface.
    const address = { port: cfg.port, host: rt.config.host } as unknown as number;
    server.listen(address, { associationTimeout: 60_000, pduTimeout: 60_000 });
    await listening;
    const dimsePort = ((server as unknown as { server: NetServer }).server.address() as AddressInfo).port;
    ctx.log.info(`DIMSE SCP "${cfg.aeTitle}" on port ${dimsePort}${cfg.acceptAnyAe ? ' (accepting any calling AE)' : `, ${cfg.aes.length} known AEs`}`);
    return {
      dimsePort,
      services,
      async stop() {
        stopped = true;
        if (timer) clearTimeout(timer);
        server.close();
        await sync.flush();
      },
    };
  },
};

/** IHE IID: STUDY by studyUID or accessionNumber, PATIENT by patientID → the configured viewer URL. */
export function iidTarget(q: Record<string, string | undefined>, template: string, dicomweb: string): string {
  const type = (q.requestType ?? '').toUpperCase();
  const studyUID = q.studyUID ?? '';
  const accessionNumber = q.accessionNumber ?? '';
  const patientID = q.patientID ?? '';
  if (type === 'STUDY') {
    if (!studyUID && !accessionNumber) throw badRequest('requestType=STUDY needs studyUID or accessionNumber');
  } else if (type === 'PATIENT') {
    if (!patientID) throw badRequest('requestType=PATIENT needs patientID');
  } else if (!type) throw badRequest('requestType is required (STUDY or PATIENT)');
  else throw notFound(`requestType "${q.requestType}" is not supported (STUDY or PATIENT)`);
  if (template.includes('{studyUID}') && !studyUID) {
    // The viewer wants a study the request does not name: point at the QIDO-RS search for it instead
    // of a URL with an empty study UID.
    const key = accessionNumber ? `AccessionNumber=${encodeURIComponent(accessionNumber)}` : `PatientID=${encodeURIComponent(patientID)}`;
    return `${dicomweb}/studies?${key}`;
  }
  const sub: Record<string, string> = { studyUID, accessionNumber, patientID, dicomweb };
  // The DICOMweb base is a URL itself; identifiers are encoded as query values.
  return template.replace(/\{(\w+)\}/g, (_m, k: string) => (k === 'dicomweb' ? dicomweb : encodeURIComponent(sub[k] ?? '')));
}
