// One C-STORE data set on its way from the socket to the ingest: the SCP pushes the PDV pieces
// as they arrive (views of the socket's buffers, not copies), the ingest pulls them with take().
//
// Backpressure: once `highWaterMark` bytes wait here, the socket is paused (TCP then holds the
// sender back); it is resumed when the reader has taken them down to half of that, so the
// socket refills while the reader still has bytes to work on. What one association holds is
// bounded by the high-water mark and one socket read.

export interface FlowControl {
  pause(): void;
  resume(): void;
}

export class InstanceInbound {
  readonly #highWaterMark: number;
  readonly #flow: FlowControl;
  readonly #queue: Buffer[] = [];
  /** Index of the next piece to take in #queue (shifting an array per piece costs more). */
  #head = 0;
  #queued = 0;
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
    this.#highWaterMark = highWaterMark;
    this.#flow = flow;
  }

  /** The next piece of the data set. */
  push(piece: Buffer): void {
    this.received += piece.length;
    if (this.#discarding || piece.length === 0) return;
    this.#queue.push(piece);
    this.#queued += piece.length;
    if (this.#queued >= this.#highWaterMark && !this.#paused) {
      this.#paused = true;
      this.#flow.pause();
    }
    this.#wakeReader();
  }

  /** The data set's last piece has been pushed. */
  end(): void {
    this.#ended = true;
    this.#wakeReader();
  }

  /** Whether end() has been called. */
  get ended(): boolean {
    return this.#ended;
  }

  /** The next piece of the data set, or null at its end; throws the reason once failed. */
  async take(): Promise<Buffer | null> {
    for (;;) {
      if (this.#failure) throw this.#failure;
      if (this.#head < this.#queue.length) {
        const piece = this.#queue[this.#head]!;
        this.#queue[this.#head++] = EMPTY;
        if (this.#head === this.#queue.length) {
          this.#queue.length = 0;
          this.#head = 0;
        } else if (this.#head >= 1024) {
          // A reader that never quite catches up: the taken slots are dropped now and then.
          this.#queue.splice(0, this.#head);
          this.#head = 0;
        }
        this.#queued -= piece.length;
        this.taken += piece.length;
        if (this.#paused && this.#queued <= this.#highWaterMark / 2) this.#resume();
        return piece;
      }
      if (this.#ended) return null;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
    }
  }

  /** All of the data set has been received and taken. */
  get complete(): boolean {
    return this.#ended && this.#queued === 0 && this.#failure === null && !this.#discarding;
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
    this.#queue.length = 0;
    this.#head = 0;
    this.#queued = 0;
    if (this.#paused) this.#resume();
  }

  #resume(): void {
    this.#paused = false;
    this.#flow.resume();
  }

  #wakeReader(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }
}

const EMPTY = Buffer.alloc(0);
