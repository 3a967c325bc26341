/**
 * What happens to bytes from one port: ASTM sessions through the E1381 receiver, or device lines; every
 * transmission is kept raw in the message log (channel 'serial'), then mapped and filed or held.
 */
import type { Identifier } from '@medplum/fhirtypes';
import type { DeviceStore } from '../../src/index.js';
import { SERIAL_PORT_SYSTEM } from '../../src/index.js';
import type { Logger } from '../../src/index.js';
import { ConfluxError, recordMessage, updateMessage } from '../../src/index.js';
import { encodeMessage } from './astm/frame.js';
import { answerQuery } from './astm/host-query.js';
import { AstmReceiver } from './astm/link.js';
import { type AstmRecord, parseRecords, splitMessages } from './astm/records.js';
import type { PortConfig } from './config.js';
import { type FilingResult, fileReadings } from './filing.js';
import { parseLine } from './line/parse.js';
import { mapAstmMessage } from './mapping/astm-map.js';
import type { ReadingSet } from './mapping/draft.js';

export const CHANNEL = 'serial';

export interface PortHandler {
  feed(chunk: Buffer): void;
  idle(): Promise<void>;
  close(): void;
  stats(): Record<string, number>;
}

export interface HandlerDeps {
  store: DeviceStore;
  log: Logger;
  write(bytes: Buffer): void;
  /** Called after every transmission is handled (tests, bench). */
  onProcessed?(e: { messageId: string; result?: FilingResult; error?: string }): void;
  /** Called when the answer to a host query was sent, or given up (tests). */
  onAnswered?(e: { queryId: string; messageId: string; ok: boolean; records: string[]; error?: string }): void;
}

function portIdentifiers(cfg: PortConfig): Identifier[] {
  return [{ system: SERIAL_PORT_SYSTEM, value: cfg.path }, ...cfg.deviceIdentifiers];
}

/** Maps and files the text of one ASTM transmission (one or more H … L messages). Exposed for replay. */
export async function processAstmText(store: DeviceStore, cfg: PortConfig, text: string, messageId?: string): Promise<{ result: FilingResult; warnings: string[] }> {
  const parsed = parseRecords(text);
  const total: FilingResult = { filed: 0, held: [], duplicates: 0, resourceRefs: [], patientRefs: [], reasons: [] };
  const warnings = [...parsed.warnings];
  for (const records of splitMessages(parsed.records)) {
    const set = mapAstmMessage(records, { codeMap: cfg.codeMap, timeZone: cfg.timeZone, patientIdentifierSystem: cfg.patientIdentifierSystem });
    set.deviceIdentifiers = [...portIdentifiers(cfg), ...set.deviceIdentifiers];
    warnings.push(...set.warnings);
    const r = await fileReadings(store, set, { plausibility: cfg.plausibility, futureSkewMs: cfg.futureSkewMs, messageId });
    merge(total, r);
  }
  return { result: total, warnings };
}

function merge(into: FilingResult, r: FilingResult): void {
  into.filed += r.filed;
  into.held.push(...r.held);
  into.duplicates += r.duplicates;
  into.resourceRefs.push(...r.resourceRefs);
  into.patientRefs.push(...r.patientRefs);
  into.reasons.push(...r.reasons);
}

async function logOutcome(deps: HandlerDeps, id: string, r: FilingResult, warnings: string[]): Promise<void> {
  const held = r.held.length > 0;
  await updateMessage(deps.store.db, id, {
    status: held ? 'held' : 'processed',
    error: held ? r.reasons.join('; ') : warnings.length ? `warnings: ${warnings.join('; ')}` : null,
    resourceRefs: r.resourceRefs,
    patientRefs: r.patientRefs,
  });
}

export function astmHandler(cfg: PortConfig, deps: HandlerDeps): PortHandler {
  const db = deps.store.db;
  const receiver = new AstmReceiver({
    write: deps.write,
    receiveTimeoutMs: cfg.receiveTimeoutMs,
    onError: (err) => deps.log.warn(`port ${cfg.name}: ${err instanceof Error ? err.message : String(err)}`),
    onMessage: async (m) => {
      // Logged (committed) first, so the raw bytes survive whatever mapping does.
      const id = await recordMessage(db, { channel: CHANNEL, direction: 'in', raw: m.raw, sender: cfg.name, messageType: 'ASTM', remoteAddress: cfg.path });
      let outcome: { result: FilingResult; warnings: string[] };
      try {
        outcome = await processAstmText(deps.store, cfg, m.text, id);
      } catch (err) {
        const msg = (err as Error).message;
        // A database error (it carries a SQLSTATE code) is retryable; the error model's own errors, whose `code` is
        // theirs, and everything else are about the content.
        const isData = err instanceof ConfluxError || !(err as { code?: string }).code;
        await updateMessage(db, id, { status: 'error', error: msg }).catch((le: Error) => deps.log.error(`port ${cfg.name}: message ${id} error not logged: ${le.message}`));
        deps.onProcessed?.({ messageId: id, error: msg });
        deps.log.warn(`port ${cfg.name}: message ${id} not filed: ${msg}`);
        if (isData) return; // bad content: ACK (resending will not help); it is in the log with its error
        throw err; // storage failure: NAK so the instrument retransmits
      }
      await logOutcome(deps, id, outcome.result, outcome.warnings);
      const queries = parseRecords(m.text).records.filter((r) => r.type === 'Q');
      // Answered once the instrument has ended its session (not awaited: this frame's ACK comes first).
      if (queries.length) await answer(queries, id);
      deps.onProcessed?.({ messageId: id, result: outcome.result });
    },
    onIncomplete: async (m, reason) => {
      const id = await recordMessage(db, { channel: CHANNEL, direction: 'in', raw: m.raw, sender: cfg.name, messageType: 'ASTM', remoteAddress: cfg.path, status: 'error', error: `incomplete, not filed: ${reason}` });
      deps.log.warn(`port ${cfg.name}: incomplete ASTM message kept as ${id}: ${reason}`);
      deps.onProcessed?.({ messageId: id, error: reason });
    },
    onNoise: (bytes) => {
      void recordMessage(db, {
        channel: CHANNEL, direction: 'in', raw: bytes, sender: cfg.name, remoteAddress: cfg.path, status: 'error',
        error: 'not ASTM E1381: bytes outside an ENQ … EOT session (is the port set to the right protocol?)',
      }).then((id) => deps.onProcessed?.({ messageId: id, error: 'not ASTM' }));
    },
  });
  /** Builds the answer to a host query and queues it; the answer is logged (channel serial, direction out) once sent. */
  async function answer(queries: AstmRecord[], queryId: string): Promise<void> {
    const a = await answerQuery(db, queries, { codeMap: cfg.codeMap, instrument: cfg.name });
    const frames = encodeMessage(a.records);
    deps.log.info(`port ${cfg.name}: query ${queryId} for ${a.specimens.join(', ') || '(no sample id)'}: ${a.orders} order(s) to send`);
    void receiver.transmit(frames).then(async (r) => {
      const id = await recordMessage(db, {
        channel: CHANNEL, direction: 'out', raw: Buffer.concat(frames), sender: cfg.name, messageType: 'ASTM', remoteAddress: cfg.path,
        status: r.ok ? 'processed' : 'error', error: r.ok ? null : `answer to query ${queryId} not delivered: ${r.error}`,
      });
      deps.onAnswered?.({ queryId, messageId: id, ok: r.ok, records: a.records, error: r.error });
    }).catch((err: unknown) => deps.log.warn(`port ${cfg.name}: answer to query ${queryId} not logged: ${(err as Error).message}`));
  }
  return { feed: (c) => receiver.feed(c), idle: () => receiver.idle(), close: () => receiver.close(), stats: () => ({ ...receiver.stats }) };
}

export function lineHandler(cfg: PortConfig, deps: HandlerDeps): PortHandler {
  const db = deps.store.db;
  const fmt = cfg.line!;
  let buf = '';
  let chain: Promise<void> = Promise.resolve();
  const stats = { lines: 0, errors: 0 };
  const handle = async (line: string) => {
    if (!line.trim()) return;
    stats.lines++;
    const id = await recordMessage(db, { channel: CHANNEL, direction: 'in', raw: Buffer.from(line, 'latin1'), sender: cfg.name, messageType: 'LINE', remoteAddress: cfg.path });
    try {
      const p = parseLine(line, fmt, cfg.timeZone, cfg.codeMap);
      if (!p) return;
      const set: ReadingSet = {
        deviceIdentifiers: [...portIdentifiers(cfg), ...(p.device ? [{ value: p.device }] : [])],
        deviceName: cfg.name,
        reports: [{ status: 'final', observations: p.observations, patientIdentifiers: [], notes: [], at: p.at, effective: p.effective }],
        warnings: [],
      };
      const r = await fileReadings(deps.store, set, { plausibility: cfg.plausibility, futureSkewMs: cfg.futureSkewMs, messageId: id });
      await logOutcome(deps, id, r, []);
      deps.onProcessed?.({ messageId: id, result: r });
    } catch (err) {
      stats.errors++;
      await updateMessage(db, id, { status: 'error', error: (err as Error).message });
      deps.onProcessed?.({ messageId: id, error: (err as Error).message });
    }
  };
  return {
    feed(chunk) {
      buf += chunk.toString('latin1');
      const lines = buf.split('\n');
      buf = lines.pop() ?? '';
      for (const l of lines) chain = chain.then(() => handle(l.replace(/\r$/, ''))).catch((e) => deps.log.error(String(e)));
    },
    idle: () => chain,
    close: () => undefined,
    stats: () => ({ ...stats }),
  };
}
