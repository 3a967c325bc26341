/**
 * One configured serial port, kept open: when the device (a USB adapter, a pty) disappears the port is
 * reopened every `reconnectMs` until it is back. Bytes go to `onData`; `write` answers on the line.
 *
 * A vanished device does not always surface as an error: a pty whose other end died reads as endless
 * zero-byte reads, and the library spins on them with the port still "open". So a watchdog also checks,
 * every `reconnectMs`, that the configured path still resolves to the device that was opened; when it
 * does not (unplugged, or re-enumerated as another tty behind the same by-id link) the port is reopened.
 */
import { realpath } from 'node:fs/promises';
import { SerialPort } from 'serialport';
import type { Logger } from '../../src/index.js';
import type { PortConfig } from './config.js';

export class ManagedPort {
  private port: SerialPort | undefined;
  private timer: NodeJS.Timeout | undefined;
  private watchdog: NodeJS.Timeout | undefined;
  private device: string | undefined;
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
    void this.open();
  }

  get isOpen(): boolean {
    return this.port?.isOpen ?? false;
  }

  write(bytes: Buffer): void {
    if (this.port?.isOpen) this.port.write(bytes);
  }

  /** What the configured path points at now (a by-id or socat link resolves to the tty), or undefined when gone. */
  private resolveDevice(): Promise<string | undefined> {
    // realpath fails exactly when the path (or the link's target) is not there: that is the answer.
    return realpath(this.cfg.path).catch(() => undefined);
  }

  private async open(): Promise<void> {
    if (this.stopped) return;
    const device = await this.resolveDevice();
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
      this.device = device;
      this.reported = false;
      this.opens++;
      this.watch(port);
      this.log.info(`port ${this.cfg.name} open on ${this.cfg.path} (${this.cfg.baudRate} ${this.cfg.dataBits}${this.cfg.parity[0].toUpperCase()}${this.cfg.stopBits}, ${this.cfg.protocol})`);
      this.onOpen?.();
    });
    port.on('data', (chunk: Buffer) => this.onData(chunk));
    port.on('close', () => {
      if (this.port === port) {
        this.port = undefined;
        clearInterval(this.watchdog);
      }
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

  private watch(port: SerialPort): void {
    clearInterval(this.watchdog);
    this.watchdog = setInterval(() => {
      void this.resolveDevice().then((now) => {
        if (this.port !== port || now === this.device) return;
        this.log.warn(`port ${this.cfg.name} (${this.cfg.path}) now ${now ? `points at ${now}` : 'is gone'}; reopening`);
        clearInterval(this.watchdog);
        if (port.isOpen) port.close(() => undefined);
        else {
          this.port = undefined;
          this.retry();
        }
      });
    }, this.cfg.reconnectMs);
    this.watchdog.unref();
  }

  private retry(): void {
    if (this.stopped || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.open();
    }, this.cfg.reconnectMs);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    clearInterval(this.watchdog);
    const p = this.port;
    this.port = undefined;
    if (p?.isOpen) await new Promise<void>((resolve) => p.close(() => resolve()));
  }
}
