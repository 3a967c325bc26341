/**
 * MLLP client for one destination: one connection, reused for every message, one message in flight at
 * a time (HL7 original-mode acknowledgement is strictly request/response). A timeout or a broken
 * connection destroys the socket, because a late ACK on it would be taken for the next message's.
 */
import net from 'node:net';
import tls from 'node:tls';
import { existsSync, readFileSync } from 'node:fs';
import { frame, MllpDecoder } from '../mllp.js';
import { decodeHl7 } from '../envelope.js';
import type { TlsSettings } from './destinations.js';
import { ConfluxError } from '../../../src/index.js';

export class MllpTransportError extends ConfluxError {
  constructor(
    message: string,
    /** 'connect' (peer down or refused), 'timeout' (no ACK in time), 'closed' (dropped mid-exchange). */
    readonly kind: 'connect' | 'timeout' | 'closed',
  ) {
    super('mllp-transport', message);
  }
}

export interface MllpClientOptions {
  host: string;
  port: number;
  tls?: TlsSettings;
  connectTimeoutMs?: number;
  /** Close an idle connection after this long (receivers drop idle links anyway). */
  idleMs?: number;
}

const pem = (v: string | undefined) => (v === undefined ? undefined : v.includes('-----BEGIN') ? v : existsSync(v) ? readFileSync(v) : v);

export class MllpClient {
  private socket?: net.Socket;
  private connecting?: Promise<net.Socket>;
  private waiter?: { resolve(ack: string): void; reject(err: Error): void };
  private idleTimer?: NodeJS.Timeout;
  private busy = false;
  /** Connections opened so far (tests check reuse). */
  connects = 0;

  constructor(private readonly opts: MllpClientOptions) {}

  /** Sends one message and resolves with the first frame the peer answers (decoded text). */
  async send(message: string, ackTimeoutMs: number): Promise<string> {
    if (this.busy) throw new Error('MllpClient.send called while a message is in flight');
    this.busy = true;
    clearTimeout(this.idleTimer);
    try {
      const socket = await this.connect();
      return await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => {
          this.waiter = undefined;
          this.reset();
          reject(new MllpTransportError(`no ACK from ${this.where} within ${ackTimeoutMs} ms`, 'timeout'));
        }, ackTimeoutMs);
        this.waiter = {
          resolve: (ack) => {
            clearTimeout(timer);
            resolve(ack);
          },
          reject: (err) => {
            clearTimeout(timer);
            reject(err);
          },
        };
        socket.write(frame(message));
      });
    } finally {
      this.busy = false;
      if (this.socket && this.opts.idleMs) this.idleTimer = setTimeout(() => this.reset(), this.opts.idleMs).unref();
    }
  }

  private get where(): string {
    return `${this.opts.host}:${this.opts.port}`;
  }

  private connect(): Promise<net.Socket> {
    if (this.socket && !this.socket.destroyed) return Promise.resolve(this.socket);
    this.connecting ??= new Promise<net.Socket>((resolve, reject) => {
      const t = this.opts.tls;
      const socket = t
        ? tls.connect({
            host: this.opts.host,
            port: this.opts.port,
            ca: pem(t.ca),
            cert: pem(t.cert),
            key: pem(t.key),
            servername: t.servername ?? (net.isIP(this.opts.host) ? undefined : this.opts.host),
            rejectUnauthorized: t.rejectUnauthorized !== false,
          })
        : net.connect({ host: this.opts.host, port: this.opts.port });
      socket.setNoDelay(true);
      socket.setKeepAlive(true, 30_000);
      const timer = setTimeout(() => {
        socket.destroy();
        fail(new MllpTransportError(`connecting to ${this.where} timed out`, 'connect'));
      }, this.opts.connectTimeoutMs ?? 10_000);
      let settled = false;
      const fail = (err: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.connecting = undefined;
        reject(err instanceof MllpTransportError ? err : new MllpTransportError(`cannot connect to ${this.where}: ${err.message}`, 'connect'));
      };
      socket.once('error', fail);
      socket.once(t ? 'secureConnect' : 'connect', () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        socket.off('error', fail);
        this.connects++;
        this.attach(socket);
        this.connecting = undefined;
        resolve(socket);
      });
    });
    return this.connecting;
  }

  private attach(socket: net.Socket): void {
    this.socket = socket;
    const decoder = new MllpDecoder({
      frame: (payload) => {
        const w = this.waiter;
        this.waiter = undefined;
        // A frame nobody waits for (a duplicate ACK, an unsolicited message) is ignored.
        w?.resolve(decodeHl7(payload));
      },
    });
    socket.on('data', (chunk: Buffer) => decoder.push(chunk));
    const gone = (why: string) => {
      if (this.socket === socket) this.socket = undefined;
      const w = this.waiter;
      this.waiter = undefined;
      w?.reject(new MllpTransportError(`${this.where} ${why} before answering`, 'closed'));
    };
    socket.on('error', (err) => gone(`failed (${err.message})`));
    socket.on('close', () => gone('closed the connection'));
  }

  private reset(): void {
    const s = this.socket;
    this.socket = undefined;
    s?.destroy();
  }

  close(): void {
    clearTimeout(this.idleTimer);
    const w = this.waiter;
    this.waiter = undefined;
    w?.reject(new MllpTransportError(`connection to ${this.where} closed locally`, 'closed'));
    this.reset();
  }
}
