/**
 * Message log retention: with MESSAGE_LOG_RETENTION_DAYS set, finished messages (processed or error) older than
 * that are deleted every hour, as an interface engine's data pruner does. Held and in-flight messages are kept
 * whatever their age: they are still somebody's work.
 */
import type { Runtime } from '../runtime.js';
import type { Logger } from '../facade.js';
import { pruneMessages } from './message-log.js';

const EVERY_MS = 60 * 60 * 1000;

export function startMessagePruner(rt: Runtime, log: Logger): void {
  const days = rt.config.messageLogRetentionDays;
  if (days === undefined) return;
  const run = async () => {
    const n = await pruneMessages(rt.db, new Date(Date.now() - days * 86_400_000));
    if (n) log.info(`message log: deleted ${n} finished message(s) older than ${days} day(s)`);
  };
  const tick = () => void run().catch((err) => log.warn(`message log pruning failed: ${(err as Error).message}`));
  const first = setTimeout(tick, 60_000);
  const timer = setInterval(tick, EVERY_MS);
  first.unref();
  timer.unref();
  rt.onClose.push(async () => {
    clearTimeout(first);
    clearInterval(timer);
  });
  log.info(`message log: finished messages are kept ${days} day(s)`);
}
