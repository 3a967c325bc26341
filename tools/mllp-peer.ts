/**
 * A real MLLP receiver for the outbound tests, standing in for Epic Bridges / Cerner: parses every message
 * with @medplum/core's HL7 parser (not ours), answers as the test says (AA, AE, AR, nothing, close the
 * connection, or answer late), and can go down and come back on the same port.
 */
import net from 'node:net';
import { Hl7Message } from '@medplum/core';
import { frame, MllpDecoder } from '../facades/hl7v2/mllp.js';

export type PeerAction = 'AA' | 'AE' | 'AR' | 'drop' | { delayMs: number; code: 'AA' | 'AE' | 'AR' };

export interface Received {
  text: string;
  msg: Hl7Message;
  controlId: string;
  /** The action taken for it. */
  action: PeerAction;
  connection: number;
}

export interface Peer {
  port: number;
  received: Received[];
  /** Connections accepted so far. */
  connections: number;
  /** Decides the answer for each message (default AA). */
  answer: (msg: Hl7Message, index: number) => PeerAction;
  down(): Promise<void>;
  up(): Promise<void>;
  close(): Promise<void>;
  /** Resolves when `n` messages have been received. */
  waitFor(n: number, timeoutMs?: number): Promise<void>;
}

export async function startPeer(answer: Peer['answer'] = () => 'AA', port = 0, host = '127.0.0.1'): Promise<Peer> {
  const sockets = new Set<net.Socket>();
  let server: net.Server | undefined;
  const waiters: Array<{ n: number; resolve: () => void }> = [];
  const peer: Peer = {
    port,
    received: [],
    connections: 0,
    answer,
    async down() {
      for (const s of sockets) s.destroy();
      sockets.clear();
      await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
      server = undefined;
    },
    async up() {
      server = net.createServer((socket) => {
        const connection = ++peer.connections;
        sockets.add(socket);
        socket.on('close', () => sockets.delete(socket));
        socket.on('error', () => undefined);
        const decoder = new MllpDecoder({
          frame: (payload) => {
            const text = payload.toString('utf8');
            const msg = Hl7Message.parse(text);
            const action = peer.answer(msg, peer.received.length);
            const controlId = msg.getSegment('MSH')?.getField(10)?.toString() ?? '';
            peer.received.push({ text, msg, controlId, action, connection });
            for (const w of [...waiters]) {
              if (peer.received.length >= w.n) {
                waiters.splice(waiters.indexOf(w), 1);
                w.resolve();
              }
            }
            if (action === 'drop') {
              socket.destroy();
              return;
            }
            const code = typeof action === 'string' ? action : action.code;
            const ack = msg.buildAck({ ackCode: code }).toString();
            const send = () => {
              if (!socket.destroyed) socket.write(frame(code === 'AA' ? ack : `${ack}\rERR|||207^Application internal error^HL70357|E||||test peer said ${code}`));
            };
            if (typeof action === 'string') send();
            else setTimeout(send, action.delayMs);
          },
        });
        socket.on('data', (c: Buffer) => decoder.push(c));
      });
      await new Promise<void>((resolve, reject) => {
        server!.once('error', reject);
        server!.listen(peer.port, host, () => resolve());
      });
      peer.port = (server.address() as net.AddressInfo).port;
    },
    async close() {
      await peer.down();
    },
    waitFor(n, timeoutMs = 15_000) {
      if (peer.received.length >= n) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`peer got ${peer.received.length} of ${n} messages in ${timeoutMs} ms`)), timeoutMs);
        waiters.push({
          n,
          resolve: () => {
            clearTimeout(t);
            resolve();
          },
        });
      });
    },
  };
  await peer.up();
  return peer;
}
