// Frames are decoded on a small pool of worker threads, never on the server's event loop: a
// 512x512 JPEG 2000 frame costs ~20 ms of CPU, a large one seconds. Each worker decodes one frame
// at a time (the codecs are synchronous); frames wait in one bounded queue for the next free
// worker. A worker that crashes, or does not answer within the time limit (a codec looping on a
// crafted codestream), is terminated and replaced; its frame fails with DECODE_FAILED and the
// pool goes on. `render` decodes and renders (render/index.ts) in the same trip, so a rendered
// resource costs the event loop nothing either.
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { ERRORS, VaultError, type ErrorCode } from '../../core/errors.ts';
import { abortError } from '../../core/abort.ts';
import type { RenderInfo, RenderOptions } from '../render/index.ts';
import { canDecode, isNativeLittleEndian } from './decode.ts';
import { checkFrameInfo, type DecodedFrame, type FrameInfo } from './frame.ts';
import type { DecodeReply, DecodeRequest } from './worker.ts';

export interface DecodePoolOptions {
  /** Worker threads, started on demand. Default: the machine's available parallelism. */
  workers?: number;
  /** Frames waiting for a worker at most; beyond, decode rejects with DECODE_BUSY. Default 256. */
  maxQueue?: number;
  /** A frame not decoded within this many ms fails and its worker is replaced. Default 30 000. */
  timeoutMs?: number;
}

export interface DecodeOptions {
  /** Aborting rejects at once (ABORTED); a frame already being decoded finishes unseen. */
  signal?: AbortSignal;
  /** This frame's time limit instead of the pool's. */
  timeoutMs?: number;
}

export const DEFAULT_MAX_QUEUE = 256;
export const DEFAULT_DECODE_TIMEOUT_MS = 30_000;

interface Task {
  id: number;
  request: DecodeRequest;
  timeoutMs: number;
  settled: boolean;
  resolve(result: DecodedFrame | Uint8Array): void;
  reject(err: Error): void;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

interface Slot {
  worker: Worker;
  task: Task | undefined;
  timer: NodeJS.Timeout | undefined;
  /** Set once the worker is being replaced: its later events are ignored. */
  gone: boolean;
}

export class DecodePool {
  readonly #size: number;
  readonly #maxQueue: number;
  readonly #timeoutMs: number;
  readonly #slots: Slot[] = [];
  #queue: Task[] = [];
  #nextId = 1;
  #closed = false;
  /** Workers replaced after a crash or a time-out, since the pool started. */
  replaced = 0;

  constructor(options: DecodePoolOptions = {}) {
    const workers = options.workers ?? availableParallelism();
    const maxQueue = options.maxQueue ?? DEFAULT_MAX_QUEUE;
    const timeoutMs = options.timeoutMs ?? DEFAULT_DECODE_TIMEOUT_MS;
    if (!Number.isInteger(workers) || workers < 1 || workers > 64)
      throw new VaultError('CONFIG_INVALID', 'DecodePool: workers must be an integer from 1 to 64');
    if (!Number.isInteger(maxQueue) || maxQueue < 0) throw new VaultError('CONFIG_INVALID', 'DecodePool: maxQueue must be a non-negative integer');
    if (!(timeoutMs > 0)) throw new VaultError('CONFIG_INVALID', 'DecodePool: timeoutMs must be positive');
    this.#size = workers;
    this.#maxQueue = maxQueue;
    this.#timeoutMs = timeoutMs;
  }

  /** Worker threads running now. */
  get workers(): number {
    return this.#slots.length;
  }

  /** Frames waiting for a worker now. */
  get queued(): number {
    return this.#queue.length;
  }

  /**
   * Decodes one frame on a worker. `encoded` is copied (the caller keeps its buffer). Rejects with
   * DECODE_FAILED (corrupt or unsupported data, a crashed or timed-out worker), DECODE_BUSY (the
   * queue is full) or ABORTED.
   */
  decode(transferSyntaxUID: string, encoded: Uint8Array, info: FrameInfo, options: DecodeOptions = {}): Promise<DecodedFrame> {
    return this.#submit(transferSyntaxUID, encoded, info, undefined, options) as Promise<DecodedFrame>;
  }

  /**
   * Decodes one frame and renders it (render/index.ts renderFrame) on a worker: the decoded
   * pixels stay there, the image comes back. A native frame (Implicit or Explicit VR Little
   * Endian) is rendered as it is. Rejects as decode does, and with INVALID_QUERY for bad options.
   */
  render(transferSyntaxUID: string, frame: Uint8Array, info: RenderInfo, render: RenderOptions, options: DecodeOptions = {}): Promise<Uint8Array> {
    return this.#submit(transferSyntaxUID, frame, info, { info, options: render }, options) as Promise<Uint8Array>;
  }

  #submit(
    transferSyntaxUID: string,
    encoded: Uint8Array,
    info: FrameInfo,
    render: DecodeRequest['render'],
    options: DecodeOptions,
  ): Promise<DecodedFrame | Uint8Array> {
    try {
      if (this.#closed) throw new VaultError('INTERNAL', 'the decode pool is closed');
      if (!canDecode(transferSyntaxUID) && !(render !== undefined && isNativeLittleEndian(transferSyntaxUID))) {
        throw new VaultError('DECODE_FAILED', `no decoder for transfer syntax ${transferSyntaxUID}`);
      }
      checkFrameInfo(info);
      if (options.signal?.aborted === true) throw abortError(options.signal);
      // Reject only a frame that would have to wait, and only once the queue is full.
      if (this.#queue.length >= this.#maxQueue && this.#idleSlot() === undefined && this.#slots.length >= this.#size) {
        throw new VaultError('DECODE_BUSY', `${this.#queue.length} frames are already waiting to be decoded`);
      }
    } catch (err) {
      return Promise.reject(err as Error);
    }
    // A buffer of its own, moved to the worker (Buffer.slice would share a pooled slab).
    const copy = new ArrayBuffer(encoded.byteLength);
    new Uint8Array(copy).set(encoded);
    const plain: FrameInfo = {
      rows: info.rows,
      columns: info.columns,
      samplesPerPixel: info.samplesPerPixel,
      bitsAllocated: info.bitsAllocated,
      bitsStored: info.bitsStored,
      pixelRepresentation: info.pixelRepresentation,
      photometricInterpretation: info.photometricInterpretation,
      planarConfiguration: info.planarConfiguration,
    };
    return new Promise<DecodedFrame | Uint8Array>((resolve, reject) => {
      const id = this.#nextId++;
      const task: Task = {
        id,
        request: { id, transferSyntaxUID, encoded: copy, info: plain, ...(render === undefined ? {} : { render }) },
        timeoutMs: options.timeoutMs ?? this.#timeoutMs,
        settled: false,
        resolve,
        reject,
        signal: options.signal,
        onAbort: undefined,
      };
      if (options.signal !== undefined) {
        const signal = options.signal;
        task.onAbort = () => {
          this.#queue = this.#queue.filter((t) => t !== task);
          this.#settle(task, abortError(signal));
        };
        signal.addEventListener('abort', task.onAbort, { once: true });
      }
      this.#queue.push(task);
      this.#pump();
    });
  }

  /** Stops every worker; frames waiting or being decoded reject. Later calls reject. */
  async close(): Promise<void> {
    this.#closed = true;
    const closed = new VaultError('INTERNAL', 'the decode pool was closed');
    for (const task of this.#queue.splice(0)) this.#settle(task, closed);
    const slots = this.#slots.splice(0);
    await Promise.all(
      slots.map(async (slot) => {
        slot.gone = true;
        clearTimeout(slot.timer);
        if (slot.task !== undefined) this.#settle(slot.task, closed);
        await slot.worker.terminate();
      }),
    );
  }

  #idleSlot(): Slot | undefined {
    return this.#slots.find((s) => s.task === undefined);
  }

  /** Hands waiting frames to idle workers, starting workers up to the pool's size. */
  #pump(): void {
    while (this.#queue.length > 0 && !this.#closed) {
      const slot = this.#idleSlot() ?? (this.#slots.length < this.#size ? this.#spawn() : undefined);
      if (slot === undefined) return;
      const task = this.#queue.shift()!;
      if (task.settled) continue;
      slot.task = task;
      slot.worker.ref(); // pending work keeps the process alive; idle workers do not
      slot.timer = setTimeout(
        () => this.#replace(slot, new VaultError('DECODE_FAILED', `decoding the frame took longer than ${task.timeoutMs} ms; its worker was replaced`)),
        task.timeoutMs,
      );
      try {
        slot.worker.postMessage(task.request, [task.request.encoded]);
      } catch (err) {
        this.#replace(slot, new VaultError('DECODE_FAILED', 'cannot send a frame to a decoder worker', { cause: err }));
      }
    }
  }

  #spawn(): Slot {
    const worker = new Worker(new URL('./worker.ts', import.meta.url), {
      // Not the process's flags: some make no sense in a worker.
      execArgv: [],
      // JavaScript objects stay small; pixels live in ArrayBuffers and WebAssembly memory.
      resourceLimits: { maxOldGenerationSizeMb: 256 },
    });
    const slot: Slot = { worker, task: undefined, timer: undefined, gone: false };
    worker.on('message', (reply: DecodeReply) => this.#onReply(slot, reply));
    worker.on('error', (err) => this.#replace(slot, new VaultError('DECODE_FAILED', `a decoder worker failed: ${err.message}`, { cause: err })));
    worker.on('exit', (code) => this.#replace(slot, new VaultError('DECODE_FAILED', `a decoder worker exited (code ${code})`)));
    worker.unref(); // after the listeners: adding a 'message' listener refs the worker again
    this.#slots.push(slot);
    return slot;
  }

  #onReply(slot: Slot, reply: DecodeReply): void {
    const task = slot.task;
    if (slot.gone || task === undefined || reply.id !== task.id) return;
    clearTimeout(slot.timer);
    slot.task = undefined;
    slot.worker.unref();
    if ('error' in reply) {
      const code = (reply.error.code in ERRORS ? reply.error.code : 'DECODE_FAILED') as ErrorCode;
      this.#settle(task, new VaultError(code, reply.error.message));
    } else if ('image' in reply) {
      this.#settle(task, undefined, new Uint8Array(reply.image));
    } else {
      this.#settle(task, undefined, {
        pixels: new Uint8Array(reply.pixels),
        photometricInterpretation: reply.photometricInterpretation,
        planarConfiguration: reply.planarConfiguration,
      });
    }
    this.#pump();
  }

  /** Terminates a worker that crashed or hangs; its frame fails; the next frame gets a new worker. */
  #replace(slot: Slot, err: VaultError): void {
    if (slot.gone) return;
    slot.gone = true;
    clearTimeout(slot.timer);
    const i = this.#slots.indexOf(slot);
    if (i >= 0) this.#slots.splice(i, 1);
    if (!this.#closed) this.replaced++;
    if (slot.task !== undefined) this.#settle(slot.task, err);
    slot.task = undefined;
    void slot.worker.terminate();
    this.#pump();
  }

  #settle(task: Task, err: Error | undefined, result?: DecodedFrame | Uint8Array): void {
    if (task.settled) return;
    task.settled = true;
    if (task.onAbort !== undefined) task.signal?.removeEventListener('abort', task.onAbort);
    if (err !== undefined) task.reject(err);
    else task.resolve(result!);
  }
}
