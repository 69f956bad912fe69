// The Writable dcmjs-dimse writes a C-STORE data set into, PDV by PDV as P-DATA-TF PDUs arrive
// (Scp.createStoreWritableStream), turned into the pull side the ingest reads with `take()`.
//
// Backpressure: dcmjs-dimse reads its socket with 'data' events and never pauses it; it waits
// for 'drain' only after the first write of a data set (Network._processPDataTf). So the
// inbound itself pauses the socket whenever a write finds its buffer full, and resumes it on
// 'drain'. TCP then holds the sender back, and what sits in memory per association is bounded by
// the high-water mark, one socket read and one PDU.
import { Writable } from 'node:stream';

export interface FlowControl {
  pause(): void;
  resume(): void;
}

export class InstanceInbound extends Writable {
  readonly #flow: FlowControl;
  #chunk: Buffer | null = null;
  #release: (() => void) | null = null;
  #wake: (() => void) | null = null;
  #ended = false;
  #failure: Error | null = null;
  #discarding = false;
  #paused = false;
  /** Data set bytes received from the network so far. */
  received = 0;
  /** Data set bytes handed to the reader so far. */
  taken = 0;

  constructor(highWaterMark: number, flow: FlowControl) {
    super({ highWaterMark, decodeStrings: true });
    this.#flow = flow;
  }

  override write(
    chunk: unknown,
    encoding?: BufferEncoding | ((error: Error | null | undefined) => void),
    cb?: (error: Error | null | undefined) => void,
  ): boolean {
    if (Buffer.isBuffer(chunk)) this.received += chunk.length;
    const ok = super.write(chunk, encoding as BufferEncoding, cb);
    if (!ok && !this.#paused) {
      this.#paused = true;
      this.#flow.pause();
      // 'drain' never comes once end() has been called (the last PDV's write may be the one
      // that filled the buffer); 'finish' then says the same.
      const resume = (): void => {
        this.off('drain', resume);
        this.off('finish', resume);
        if (!this.#paused) return;
        this.#paused = false;
        this.#flow.resume();
      };
      this.on('drain', resume);
      this.on('finish', resume);
    }
    return ok;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.#discarding) return callback();
    this.#chunk = chunk;
    this.#release = () => callback();
    this.#wakeReader();
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.#ended = true;
    this.#wakeReader();
    callback();
  }

  /** The next chunk of the data set, or null at its end; throws the reason once failed. */
  async take(): Promise<Buffer | null> {
    for (;;) {
      if (this.#failure) throw this.#failure;
      const chunk = this.#chunk;
      if (chunk) {
        this.#chunk = null;
        this.taken += chunk.length;
        this.#releaseChunk();
        return chunk;
      }
      if (this.#ended) return null;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
    }
  }

  /** All of the data set has been received and taken. */
  get complete(): boolean {
    return this.#ended && this.#chunk === null && this.#failure === null && !this.#discarding;
  }

  /** The association broke off: the reader's next take() throws `reason`; what still comes is dropped. */
  fail(reason: Error): void {
    if (this.#failure === null) this.#failure = reason;
    this.discard();
    this.#wakeReader();
  }

  /** The reader stopped early: the rest of the data set is received and dropped, so the socket flows on. */
  discard(): void {
    this.#discarding = true;
    this.#chunk = null;
    this.#releaseChunk();
  }

  #releaseChunk(): void {
    const release = this.#release;
    this.#release = null;
    release?.();
  }

  #wakeReader(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }
}
