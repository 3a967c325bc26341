/**
 * The DIMSE service provider on dcmjs-dimse: association policy (known AEs), C-ECHO, C-STORE streamed
 * to the blob store, C-FIND (Patient/Study Root, Modality Worklist), C-MOVE, C-GET and MPPS N-CREATE/
 * N-SET. Every success status is sent only after the database commit (docs/design.md principle 2).
 */
import type { Socket } from 'node:net';
import type { Writable } from 'node:stream';
import dimseModule from 'dcmjs-dimse';
import type { Logger } from '../../../src/index.js';
import type { DicomConfig } from '../config.js';
import { type DicomJson, buildPart10Header, denaturalize, naturalize, str } from '../part10.js';
import { findLevel, type Level } from '../query.js';
import { type IndexedInstanceRow, InstanceSink, IngestError, STATUS } from '../store.js';
import type { DicomServices } from '../services.js';
import { findWorklist } from '../worklist.js';
import { dimseFailure } from '../failure.js';
import { loadDataset, retrieveInstances, sendToAe } from './retrieve.js';

export const dimse = dimseModule as unknown as typeof import('dcmjs-dimse');
const { Scp, Dataset } = dimse;
const { CEchoResponse, CFindResponse, CStoreResponse, CMoveResponse, CGetResponse, NCreateResponse, NSetResponse } = dimse.responses;
const { Status, PresentationContextResult, RejectResult, RejectSource, RejectReason, SopClass } = dimse.constants;

export const SOP = {
  verification: '1.2.840.10008.1.1',
  patientRootFind: '1.2.840.10008.5.1.4.1.2.1.1',
  patientRootMove: '1.2.840.10008.5.1.4.1.2.1.2',
  patientRootGet: '1.2.840.10008.5.1.4.1.2.1.3',
  studyRootFind: '1.2.840.10008.5.1.4.1.2.2.1',
  studyRootMove: '1.2.840.10008.5.1.4.1.2.2.2',
  studyRootGet: '1.2.840.10008.5.1.4.1.2.2.3',
  worklistFind: '1.2.840.10008.5.1.4.31',
  mpps: '1.2.840.10008.3.1.2.3.3',
} as const;
const SERVICES = new Set<string>(Object.values(SOP));
const UNCOMPRESSED = ['1.2.840.10008.1.2.1', '1.2.840.10008.1.2'];

/** Storage SOP classes (PS3.4 Annex B) live under 1.2.840.10008.5.1.4.1.1; private ones are refused. */
export function isStorageClass(uid: string): boolean {
  return uid.startsWith('1.2.840.10008.5.1.4.1.1.') || uid.startsWith('1.2.840.10008.5.1.4.34.');
}
function isTransferSyntax(uid: string): boolean {
  return uid === '1.2.840.10008.1.2' || uid.startsWith('1.2.840.10008.1.2.');
}

type ScpOptions = ConstructorParameters<typeof Scp>[1];

export function makeScpClass(svc: DicomServices, cfg: DicomConfig, log: Logger): typeof Scp {
  /** MPPS N-CREATE/N-SET: success once the Procedure is written, else the MppsError's status and comment. */
  const answerMpps = <R extends { setStatus(s: number): void; setErrorComment(c: string): void }>(
    what: string,
    work: Promise<unknown>,
    response: R,
    callback: (r: R) => void,
  ): void => {
    work.then(
      () => {
        response.setStatus(Status.Success);
        callback(response);
      },
      (err: unknown) => {
        const f = dimseFailure(err, STATUS.processingFailure);
        log.warn(`MPPS ${what} failed: ${f.message}`);
        response.setStatus(f.status);
        response.setErrorComment(f.comment);
        callback(response);
      },
    );
  };

  type Counts = { remaining: number; completed: number; failed: number; warnings: number };
  type SubOpResponse = {
    setStatus(s: number): void;
    setRemaining(n: number): void;
    setCompleted(n: number): void;
    setFailures(n: number): void;
    setWarnings(n: number): void;
    setErrorComment(c: string): void;
  };
  /**
   * C-MOVE and C-GET report progress the same way. The event callback may be called once: pending responses
   * go out directly, the final one through it.
   */
  const subOperationResponder =
    <R extends SubOpResponse>(make: () => R, sendPending: (r: R) => void, callback: (r: R[]) => void) =>
    (status: number, counts: Counts, comment?: string): void => {
      const r = make();
      r.setStatus(status);
      r.setRemaining(counts.remaining);
      r.setCompleted(counts.completed);
      r.setFailures(counts.failed);
      r.setWarnings(counts.warnings);
      if (comment) r.setErrorComment(comment.slice(0, 64));
      if (status === Status.Pending) sendPending(r);
      else callback([r]);
    };

  const NO_COUNTS: Counts = { remaining: 0, completed: 0, failed: 0, warnings: 0 };
  type Responder = (status: number, counts: Counts, comment?: string) => void;

  /**
   * The body of a C-MOVE or C-GET: the instances its identifier matches go to `send`, which reports each
   * sub-operation as it ends; a Pending response follows each while any remain, then the final status
   * (0xB000 when some failed, 0xA702 when all did).
   */
  const runSubOperations = (
    request: InstanceType<typeof dimse.requests.CMoveRequest> | InstanceType<typeof dimse.requests.CGetRequest>,
    respond: Responder,
    send: (rows: IndexedInstanceRow[], done: (ok: boolean) => void) => Promise<void>,
  ): void => {
    (async () => {
      const rows = await retrieveInstances(svc, denaturalize((request.getDataset()?.getElements() ?? {}) as Record<string, unknown>));
      const counts = { ...NO_COUNTS, remaining: rows.length };
      await send(rows, (ok) => {
        counts.remaining--;
        if (ok) counts.completed++;
        else counts.failed++;
        if (counts.remaining > 0) respond(Status.Pending, counts);
      });
      respond(counts.failed ? (counts.completed ? 0xb000 : 0xa702) : Status.Success, counts);
    })().catch((err: unknown) => {
      const f = dimseFailure(err, STATUS.cannotUnderstand);
      respond(f.status, NO_COUNTS, f.comment);
    });
  };

  return class ConfluxScp extends Scp {
    private association?: InstanceType<typeof dimse.association.Association>;
    private callingAe = '';
    private sink?: InstanceSink;
    private received?: { key: string; size: number; prefix: Buffer } | Error;
    private readonly touchedStudies = new Set<string>();

    private readonly sock: Socket;

    constructor(socket: Socket, opts?: ScpOptions) {
      super(socket, opts);
      this.sock = socket;
      // Nagle plus delayed ACKs would hold every response ~40 ms (docs/design.md "measured facts").
      socket.setNoDelay(true);
      this.on('close', () => this.flushStudies());
    }

    private flushStudies(): void {
      if (this.touchedStudies.size === 0) return;
      const uids = [...this.touchedStudies];
      this.touchedStudies.clear();
      void svc.sync.flush(uids);
    }

    associationRequested(association: InstanceType<typeof dimse.association.Association>): void {
      this.association = association;
      this.callingAe = association.getCallingAeTitle().trim();
      const called = association.getCalledAeTitle().trim();
      if (called !== cfg.aeTitle) {
        log.warn(`association from ${this.callingAe} refused: called AE "${called}" is not ours ("${cfg.aeTitle}")`);
        this.sendAssociationReject(RejectResult.Permanent, RejectSource.ServiceUser, RejectReason.CalledAeNotRecognized);
        return;
      }
      if (!cfg.acceptAnyAe && !cfg.aes.some((a) => a.aeTitle === this.callingAe)) {
        log.warn(`association from unknown AE "${this.callingAe}" refused (configure it in DICOM_AES_FILE or set DICOM_ACCEPT_ANY_AE=true)`);
        this.sendAssociationReject(RejectResult.Permanent, RejectSource.ServiceUser, RejectReason.CallingAeNotRecognized);
        return;
      }
      // Large PDUs: dcmjs-dimse pays per PDU (measured: 16 KB → 224, 256 KB → 384 instances/s with a null SCP).
      association.setMaxPduLength(262144);
      for (const c of association.getPresentationContexts()) {
        const ctx = association.getPresentationContext(c.id);
        const abstract = ctx.getAbstractSyntaxUid();
        const proposed = ctx.getTransferSyntaxUids();
        if (isStorageClass(abstract)) {
          // Stored as received: accept the sender's first proposal we recognise, no transcoding.
          const ts = proposed.find(isTransferSyntax);
          if (ts) {
            ctx.setResult(PresentationContextResult.Accept, ts);
            // C-GET: the requester proposes storage with the SCP role; we act as its SCU.
            if (ctx.getProviderRole()) ctx.setProviderRole(true);
          } else ctx.setResult(PresentationContextResult.RejectTransferSyntaxesNotSupported);
        } else if (SERVICES.has(abstract)) {
          const ts = UNCOMPRESSED.find((t) => proposed.includes(t));
          if (ts) ctx.setResult(PresentationContextResult.Accept, ts);
          else ctx.setResult(PresentationContextResult.RejectTransferSyntaxesNotSupported);
        } else ctx.setResult(PresentationContextResult.RejectAbstractSyntaxNotSupported);
      }
      this.sendAssociationAccept();
    }

    /** A-ABORT: the peer waits for us to close the connection (PS3.8 9.1.8); DCMTK otherwise hangs 30 s. */
    abort(): void {
      this.sock.destroy();
      this.flushStudies();
    }

    associationReleaseRequested(): void {
      this.sendAssociationReleaseResponse();
      this.flushStudies();
    }

    cEchoRequest(request: InstanceType<typeof dimse.requests.CEchoRequest>, callback: (r: InstanceType<typeof CEchoResponse>) => void): void {
      const response = CEchoResponse.fromRequest(request);
      response.setStatus(Status.Success);
      callback(response);
    }

    createStoreWritableStream(pc: InstanceType<typeof dimse.association.PresentationContext>, request: InstanceType<typeof dimse.requests.CStoreRequest>): Writable {
      const sopUid = request.getAffectedSopInstanceUid() ?? '';
      this.received = undefined;
      this.sink = new InstanceSink(svc.store.blobs, sopUid);
      const input = this.sink.input;
      input.write(buildPart10Header(request.getAffectedSopClassUid() ?? '', sopUid, pc.getAcceptedTransferSyntaxUid() ?? '', this.callingAe));
      // Backpressure down to the socket: dcmjs-dimse waits for 'drain' only once per stream, so without
      // pausing the socket a sender faster than the disk would buffer the whole instance in memory.
      const write = input.write.bind(input) as (chunk: Buffer) => boolean;
      input.write = ((chunk: Buffer) => {
        const ok = write(chunk);
        if (!ok && !this.sock.isPaused()) {
          this.sock.pause();
          // 'drain' never comes once dcmjs-dimse has ended the stream (last fragment): resume on finish too.
          const resume = () => {
            input.off('drain', resume);
            input.off('finish', resume);
            input.off('close', resume);
            this.sock.resume();
          };
          input.on('drain', resume);
          input.on('finish', resume);
          input.on('close', resume);
        }
        return true;
      }) as typeof input.write;
      return input;
    }

    createDatasetFromStoreWritableStream(_w: Writable, pc: InstanceType<typeof dimse.association.PresentationContext>, callback: (ds: InstanceType<typeof Dataset>) => void): void {
      const sink = this.sink;
      this.sink = undefined;
      const done = (r: typeof this.received) => {
        this.received = r;
        // The bytes are in the blob store; the dataset handed on is a placeholder, never parsed whole.
        callback(new Dataset({}, pc.getAcceptedTransferSyntaxUid()));
      };
      if (!sink) return done(new Error('no C-STORE data stream'));
      sink.finish().then(done, (err: Error) => {
        void sink.discard();
        done(err);
      });
    }

    cStoreRequest(request: InstanceType<typeof dimse.requests.CStoreRequest>, callback: (r: InstanceType<typeof CStoreResponse>) => void): void {
      const response = CStoreResponse.fromRequest(request);
      const received = this.received;
      this.received = undefined;
      const fail = (status: number, comment: string, why = comment) => {
        log.warn(`C-STORE ${request.getAffectedSopInstanceUid()} from ${this.callingAe} failed (0x${status.toString(16)}): ${why}`);
        response.setStatus(status);
        response.setErrorComment(comment.slice(0, 64));
        callback(response);
      };
      if (!received) return fail(STATUS.processingFailure, 'no data set received');
      if (received instanceof Error) return fail(STATUS.outOfResources, `cannot store: ${received.message}`);
      svc.store
        .ingest(received, { sourceAe: this.callingAe, remoteAddress: this.sock.remoteAddress, channel: 'dicom', expectedSopInstanceUid: request.getAffectedSopInstanceUid(), expectedSopClassUid: request.getAffectedSopClassUid() })
        .then((stored) => {
          this.touchedStudies.add(stored.studyUid);
          svc.syncSoon();
          response.setStatus(Status.Success);
          callback(response);
        })
        .catch((err: unknown) => {
          const f = dimseFailure(err, STATUS.outOfResources);
          fail(f.status, f.comment, f.message);
        });
    }

    cFindRequest(request: InstanceType<typeof dimse.requests.CFindRequest>, callback: (r: Array<InstanceType<typeof CFindResponse>>) => void): void {
      const sopClass = request.getAffectedSopClassUid();
      const ts = request.getDataset()?.getTransferSyntaxUid() ?? UNCOMPRESSED[0];
      const run = async (): Promise<DicomJson[]> => {
        const query = denaturalize((request.getDataset()?.getElements() ?? {}) as Record<string, unknown>);
        if (sopClass === SOP.worklistFind) return findWorklist(svc.db, svc.repo, cfg, query);
        const level = str(query, '00080052').toUpperCase() as Level;
        if (!['PATIENT', 'STUDY', 'SERIES', 'IMAGE'].includes(level)) throw new IngestError(0xa900, `Query/Retrieve Level "${level}" is not PATIENT, STUDY, SERIES or IMAGE`);
        if (level === 'PATIENT' && sopClass === SOP.studyRootFind) throw new IngestError(0xa900, 'Study Root has no PATIENT level');
        const { project } = await import('../matching.js');
        return (await findLevel(svc.db, level, query)).map((c) => ({ ...project(query, c), '00080052': { vr: 'CS', Value: [level] } }));
      };
      run()
        .then((results) => {
          const responses = results.map((r) => {
            const pending = CFindResponse.fromRequest(request);
            pending.setDataset(new Dataset(naturalize(r), ts));
            pending.setStatus(Status.Pending);
            return pending;
          });
          const final = CFindResponse.fromRequest(request);
          final.setStatus(Status.Success);
          callback([...responses, final]);
        })
        .catch((err: unknown) => {
          const f = dimseFailure(err, STATUS.cannotUnderstand);
          log.warn(`C-FIND from ${this.callingAe} failed: ${f.message}`);
          const final = CFindResponse.fromRequest(request);
          final.setStatus(f.status);
          final.setErrorComment(f.comment);
          callback([final]);
        });
    }

    cMoveRequest(request: InstanceType<typeof dimse.requests.CMoveRequest>, callback: (r: Array<InstanceType<typeof CMoveResponse>>) => void): void {
      const destination = String(request.getCommandDataset().getElement('MoveDestination') ?? '').trim();
      const respond = subOperationResponder(() => CMoveResponse.fromRequest(request), (r) => this.sendResponse(request, r), callback);
      const dest = cfg.aes.find((a) => a.aeTitle === destination);
      if (!dest?.host || !dest.port) {
        respond(Status.MoveDestinationUnknown, NO_COUNTS, `move destination "${destination}" is not a configured AE with host and port`);
        return;
      }
      runSubOperations(request, respond, (rows, done) => sendToAe(svc, cfg, dest, rows, done));
    }

    cGetRequest(request: InstanceType<typeof dimse.requests.CGetRequest>, callback: (r: Array<InstanceType<typeof CGetResponse>>) => void): void {
      const respond = subOperationResponder(() => CGetResponse.fromRequest(request), (r) => this.sendResponse(request, r), callback);
      // C-GET sends back on the requester's own association.
      runSubOperations(request, respond, async (rows, done) => {
        for (const row of rows) {
          let ok = false;
          try {
            const ds = await loadDataset(svc, row);
            const store = new dimse.requests.CStoreRequest(ds);
            ok = await new Promise<boolean>((resolve) => {
              store.on('response', (r: InstanceType<typeof CStoreResponse>) => resolve(r.getStatus() === Status.Success || (r.getStatus() & 0xf000) === 0xb000));
              if (!this.association?.getAcceptedPresentationContextFromRequest(store)) return resolve(false);
              this.sendRequests(store);
            });
          } catch (err) {
            log.warn(`C-GET sub-operation for ${row.sop_uid} failed: ${(err as Error).message}`);
          }
          done(ok);
        }
      });
    }

    nCreateRequest(request: InstanceType<typeof dimse.requests.NCreateRequest>, callback: (r: InstanceType<typeof NCreateResponse>) => void): void {
      const response = NCreateResponse.fromRequest(request);
      if (request.getAffectedSopClassUid() !== SOP.mpps) {
        response.setStatus(Status.NoSuchSopClass);
        return callback(response);
      }
      const attrs = denaturalize((request.getDataset()?.getElements() ?? {}) as Record<string, unknown>);
      answerMpps(`N-CREATE ${request.getAffectedSopInstanceUid()} from ${this.callingAe}`, svc.mpps.create(request.getAffectedSopInstanceUid(), attrs, this.callingAe), response, callback);
    }

    nSetRequest(request: InstanceType<typeof dimse.requests.NSetRequest>, callback: (r: InstanceType<typeof NSetResponse>) => void): void {
      const response = NSetResponse.fromRequest(request);
      const attrs = denaturalize((request.getDataset()?.getElements() ?? {}) as Record<string, unknown>);
      answerMpps(`N-SET ${request.getRequestedSopInstanceUid()} from ${this.callingAe}`, svc.mpps.set(request.getRequestedSopInstanceUid(), attrs, this.callingAe), response, callback);
    }
  } as unknown as typeof Scp;
}

export { SopClass };
