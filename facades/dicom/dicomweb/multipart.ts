/**
 * multipart/related (RFC 2387) in both directions, streaming: STOW-RS parts are handed on as streams
 * while they arrive (memory holds one network chunk plus a boundary's worth of bytes), and WADO-RS
 * responses are written part by part from the blob store.
 */
import { PassThrough, type Readable, type Writable } from 'node:stream';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';

export function boundaryOf(contentType: string | undefined): string | undefined {
  const m = /boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType ?? '');
  return m ? (m[1] ?? m[2]) : undefined;
}

export type PartHandler = (headers: Record<string, string>, body: Readable) => Promise<void>;

/** Parses a multipart body, calling `onPart` for each part in order (the next part waits for the handler). */
export async function parseMultipart(body: AsyncIterable<Buffer>, boundary: string, onPart: PartHandler): Promise<number> {
  const delimiter = Buffer.from(`\r\n--${boundary}`);
  type State = 'preamble' | 'afterDelimiter' | 'headers' | 'body' | 'done';
  let buf: Buffer = Buffer.from('\r\n'); // lets the very first boundary match the same CRLF-prefixed delimiter
  let state = 'preamble' as State;
  let part: PassThrough | undefined;
  let handler: Promise<void> | undefined;
  let count = 0;

  const finishPart = async () => {
    if (!part) return;
    part.end();
    await handler;
    part = undefined;
    handler = undefined;
  };

  const step = async (final: boolean): Promise<boolean> => {
    if (state === 'preamble') {
      const i = buf.indexOf(delimiter);
      if (i < 0) {
        buf = buf.subarray(Math.max(0, buf.length - delimiter.length));
        return false;
      }
      buf = buf.subarray(i + delimiter.length);
      state = 'afterDelimiter';
      return true;
    }
    if (state === 'afterDelimiter') {
      if (buf.length < 2) return false;
      if (buf[0] === 0x2d && buf[1] === 0x2d) {
        state = 'done';
        return false;
      }
      const eol = buf.indexOf('\r\n');
      if (eol < 0) return false;
      buf = buf.subarray(eol + 2);
      state = 'headers';
      return true;
    }
    if (state === 'headers') {
      let end = buf.indexOf('\r\n\r\n');
      let headerText: string;
      if (buf.subarray(0, 2).toString() === '\r\n') {
        headerText = '';
        end = -2;
      } else if (end < 0) {
        if (buf.length > 64 * 1024) throw new Error('a multipart part has more than 64 KB of headers');
        return false;
      } else headerText = buf.subarray(0, end).toString('latin1');
      const headers: Record<string, string> = {};
      for (const line of headerText.split('\r\n')) {
        const c = line.indexOf(':');
        if (c > 0) headers[line.slice(0, c).trim().toLowerCase()] = line.slice(c + 1).trim();
      }
      buf = buf.subarray(end + 4);
      part = new PassThrough();
      // A truncated body destroys the part with an error: never let that become an uncaught exception.
      part.on('error', () => undefined);
      count++;
      handler = onPart(headers, part);
      // A handler that fails early must not leave the parser writing into a stream nobody reads.
      handler.catch(() => part?.resume());
      state = 'body';
      return true;
    }
    if (state === 'body') {
      const i = buf.indexOf(delimiter);
      if (i >= 0) {
        if (i > 0 && !part!.write(buf.subarray(0, i))) await once(part!, 'drain');
        buf = buf.subarray(i + delimiter.length);
        await finishPart();
        state = 'afterDelimiter';
        return true;
      }
      const keep = final ? 0 : delimiter.length - 1;
      if (buf.length > keep) {
        const chunk = buf.subarray(0, buf.length - keep);
        buf = buf.subarray(buf.length - keep);
        if (!part!.write(chunk)) await once(part!, 'drain');
      }
      return false;
    }
    return false;
  };

  for await (const chunk of body) {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    while ((state as State) !== 'done' && (await step(false)));
    if ((state as State) === 'done') break;
  }
  if ((state as State) === 'body') {
    await step(true);
    part?.destroy(new Error('the multipart body ended before the closing boundary'));
    // The handler reports its own failures (the STOW route records each part's); what matters now is that it ended.
    await handler?.catch(() => undefined);
    throw new Error('the multipart body ended before the closing boundary');
  }
  if (count === 0) throw new Error(`no part delimited by boundary "${boundary}" was found`);
  return count;
}

/** Writes a multipart/related response part by part; returns the Content-Type to send. */
export class MultipartWriter {
  readonly boundary = `conflux-${randomBytes(12).toString('hex')}`;
  constructor(private readonly out: Writable) {}

  contentType(type: string, extra = ''): string {
    return `multipart/related; type="${type}"; boundary=${this.boundary}${extra}`;
  }

  async part(contentType: string, body: Readable | Buffer, extraHeaders: Record<string, string> = {}): Promise<void> {
    const head = [`--${this.boundary}`, `Content-Type: ${contentType}`, ...Object.entries(extraHeaders).map(([k, v]) => `${k}: ${v}`), '', ''].join('\r\n');
    await this.write(Buffer.from(head));
    if (Buffer.isBuffer(body)) await this.write(body);
    else for await (const chunk of body) await this.write(chunk as Buffer);
    await this.write(Buffer.from('\r\n'));
  }

  async end(): Promise<void> {
    await this.write(Buffer.from(`--${this.boundary}--\r\n`));
    this.out.end();
  }

  private async write(b: Buffer): Promise<void> {
    if (!this.out.write(b)) await once(this.out, 'drain');
  }
}
