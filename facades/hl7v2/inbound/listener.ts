/**
 * The MLLP listener: TCP (or TLS) connections, framing, one message at a time per connection (ACKs go
 * back in order), idle timeouts, a maximum message size. Many connections run concurrently.
 */
import net from 'node:net';
import tls from 'node:tls';
import { frame, MllpDecoder } from '../mllp.js';
import { processPayload, type ProcessorDeps } from './processor.js';

export interface ListenerOptions {
  port: number;
  host?: string;
  maxMessageBytes?: number;
  idleTimeoutMs?: number;
  tls?: { cert: string | Buffer; key: string | Buffer; ca?: string | Buffer; requestCert?: boolean };
}

export type ListenerTls = NonNullable<ListenerOptions['tls']>;

export interface MllpListener {
  port: number;
  close(): Promise<void>;
}

export async function startMllpListener(deps: ProcessorDeps, opts: ListenerOptions): Promise<MllpListener> {
  const sockets = new Set<net.Socket>();
  const onConnection = (socket: net.Socket) => {
    sockets.add(socket);
    socket.setNoDelay(true);
    const peer = `${socket.remoteAddress}:${socket.remotePort}`;
    socket.setTimeout(opts.idleTimeoutMs ?? 5 * 60_000, () => {
      deps.log.info(`MLLP ${peer}: idle timeout, closing`);
      socket.end();
    });
    // Messages on one connection are processed in order so that ACKs match the sender's sequence.
    let chain: Promise<void> = Promise.resolve();
    const decoder = new MllpDecoder(
      {
        frame: (payload) => {
          chain = chain.then(async () => {
            try {
              const { replies } = await processPayload(deps, payload, { remoteAddress: peer });
              for (const r of replies) if (!socket.destroyed) socket.write(frame(r));
            } catch (e) {
              // No ACK: the sender will resend, and the log row (if any) shows the attempt.
              deps.log.error(`MLLP ${peer}: message not processed: ${(e as Error).message}`);
            }
          });
        },
        garbage: (bytes) => deps.log.warn(`MLLP ${peer}: discarded ${bytes.length} bytes outside a frame`),
        oversize: (size) => deps.log.warn(`MLLP ${peer}: frame exceeds ${opts.maxMessageBytes ?? 16 * 1024 * 1024} bytes (${size}), discarded`),
      },
      opts.maxMessageBytes,
    );
    socket.on('data', (chunk: Buffer) => decoder.push(chunk));
    socket.on('error', (err) => deps.log.warn(`MLLP ${peer}: ${err.message}`));
    socket.on('close', () => {
      sockets.delete(socket);
      if (decoder.pendingBytes) deps.log.warn(`MLLP ${peer}: closed inside a frame (${decoder.pendingBytes} bytes lost)`);
    });
  };
  // With a CA, a client certificate is mandatory: requestCert alone would let certificate-less clients in
  // if rejectUnauthorized were ever turned off, so both are explicit.
  const server = opts.tls
    ? tls.createServer({ ...opts.tls, requestCert: opts.tls.requestCert ?? !!opts.tls.ca, rejectUnauthorized: true }, onConnection)
    : net.createServer(onConnection);
  // Connections still in the TLS handshake are not in `sockets` yet; close() must end them too, or
  // server.close() waits for the handshake timeout (120 s) of any idle or plain-TCP client.
  const raw = new Set<net.Socket>();
  if (opts.tls) {
    server.on('connection', (s: net.Socket) => {
      raw.add(s);
      s.once('close', () => raw.delete(s));
    });
    // Without this, refused handshakes (plain TCP, no or untrusted client certificate) leave no trace.
    // An untrusted client certificate is refused by Node after the handshake with a bare close ("socket
    // hang up"); authorizationError says why.
    server.on('tlsClientError', (err: Error, s: tls.TLSSocket) => {
      const peer = s.remoteAddress ? `${s.remoteAddress}:${s.remotePort}` : 'a client';
      const why = s.authorizationError ? `client certificate refused (${String(s.authorizationError)})` : err.message.trim();
      deps.log.warn(`MLLP ${peer}: TLS connection refused: ${why}`);
    });
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host ?? '0.0.0.0', () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        for (const s of raw) s.destroy();
        server.close(() => resolve());
      }),
  };
}
