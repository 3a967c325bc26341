/**
 * One configured serial port, kept open: when the device (a USB adapter, a pty) disappears the port is
 * reopened every `reconnectMs` until it is back. Bytes go to `onData`; `write` answers on the line.
 */
import { SerialPort } from 'serialport';
import type { Logger } from '../../src/index.js';
import type { PortConfig } from './config.js';

export class ManagedPort {
  private port: SerialPort | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private reported = false;
  /** Opens so far (1 = first open; more = reconnections). */
  opens = 0;

  constructor(
    readonly cfg: PortConfig,
    private readonly onData: (chunk: Buffer) => void,
    private readonly log: Logger,
    private readonly onOpen?: () => void,
  ) {}

  start(): void {
    this.open();
  }

  get isOpen(): boolean {
    return this.port?.isOpen ?? false;
  }

  write(bytes: Buffer): void {
    if (this.port?.isOpen) this.port.write(bytes);
  }

  private open(): void {
    if (this.stopped) return;
    const port = new SerialPort({
      path: this.cfg.path,
      baudRate: this.cfg.baudRate,
      dataBits: this.cfg.dataBits,
      parity: this.cfg.parity,
      stopBits: this.cfg.stopBits,
      autoOpen: false,
    });
    port.open((err) => {
      if (err) {
        if (!this.reported) this.log.warn(`port ${this.cfg.name} (${this.cfg.path}) cannot be opened: ${err.message}; retrying every ${this.cfg.reconnectMs} ms`);
        this.reported = true;
        this.retry();
        return;
      }
      if (this.stopped) {
        port.close(() => undefined);
        return;
      }
      this.port = port;
      this.reported = false;
      this.opens++;
      this.log.info(`port ${this.cfg.name} open on ${this.cfg.path} (${this.cfg.baudRate} ${this.cfg.dataBits}${this.cfg.parity[0].toUpperCase()}${this.cfg.stopBits}, ${this.cfg.protocol})`);
      this.onOpen?.();
    });
    port.on('data', (chunk: Buffer) => this.onData(chunk));
    port.on('close', () => {
      if (this.port === port) this.port = undefined;
      if (!this.stopped) {
        this.log.warn(`port ${this.cfg.name} (${this.cfg.path}) closed; reconnecting`);
        this.retry();
      }
    });
    port.on('error', (err) => {
      this.log.warn(`port ${this.cfg.name} (${this.cfg.path}): ${err.message}`);
      if (port.isOpen) port.close(() => undefined);
      else if (this.port === port) {
        this.port = undefined;
        this.retry();
      }
    });
  }

  private retry(): void {
    if (this.stopped || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.open();
    }, this.cfg.reconnectMs);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    const p = this.port;
    this.port = undefined;
    if (p?.isOpen) await new Promise<void>((resolve) => p.close(() => resolve()));
  }
}
