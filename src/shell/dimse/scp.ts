// The DIMSE Storage SCP: modalities and PACS push with C-STORE (and check with C-ECHO). Each
// instance's data set flows, PDV by PDV as it arrives, behind a Part 10 header built here, into
// the same streaming ingest STOW-RS feeds; the C-STORE is answered only once the ingest says the
// instance is durable (or why it is not). An association that breaks off mid-instance aborts
// the ingest's signal, and nothing of that instance counts as stored.
//
// Association negotiation, release and abort are dcmjs-dimse's. The rest is done here, for
// speed, where a C-STORE spends its time (profiled: bench/README.md's DIMSE scenario):
// - P-DATA-TF PDUs are read from the socket by pdu-reader.ts, which hands each PDV's value on
//   in pieces as it arrives, rather than by dcmjs-dimse, which gathers every PDU whole by
//   concatenating socket reads; only the other PDUs (small) reach dcmjs-dimse, whole.
// - Command sets are read and responses written by command.ts, not through dcmjs's Dataset.
// - A data set's pieces go straight into the ingest's inbound queue (inbound.ts), which pauses
//   the socket when the ingest falls behind.
// Where dcmjs-dimse's defaults do not fit a node that takes GB instances, they are replaced
// through its own hooks rather than patched:
// - Its Server listens on every interface, with no way to name a host; a plain net.Server here
//   makes one Scp per connection, as dcmjs-dimse's Server does.
// - It advertises the smaller of its and the peer's max PDU length; the node advertises its own.
// - Its timeouts count time the SCP itself is busy (an fsync, a paused socket) as the peer's
//   silence, so they are set out of reach and an idle watchdog of our own replaces them.
import net, { type AddressInfo, type Socket } from 'node:net';
import dimse from 'dcmjs-dimse';
import type { association as dimseAssociation } from 'dcmjs-dimse';
import type { Logger } from 'pino';
import { VaultError, isVaultError } from '../../core/errors.ts';
import { CommandField, MAX_COMMAND_BYTES, UNRECOGNIZED_OPERATION, commandPdu, decodeCommand, encodeResponse, type CommandSet } from './command.ts';
import { IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, part10Header } from './file-meta.ts';
import { InstanceInbound } from './inbound.ts';
import { AbortReason, PduReader, abortReasonOf, pduError } from './pdu-reader.ts';
import { VERIFICATION_SOP_CLASS, chooseTransferSyntax, isStorageSopClass } from './presentation.ts';

type Association = dimseAssociation.Association;

const { Scp, Implementation, constants } = dimse;
const { PresentationContextResult, RejectResult, RejectSource, RejectReason, Status } = constants;

/** Address the SCP listens on by default: loopback, like the HTTP side. */
export const DEFAULT_DIMSE_HOST = '127.0.0.1';
/** TCP port by default: 11112, IANA's DICOM port outside the privileged range (104 needs root). */
export const DEFAULT_DIMSE_PORT = 11112;
/** The node's AE title by default (1 to 16 characters). */
export const DEFAULT_AE_TITLE = 'DICOMVAULT';
/**
 * Largest PDU the peer may send us, in bytes, advertised in A-ASSOCIATE-AC (256 KiB, as
 * dcmjs-dimse's own default). PDUs are read as they arrive, never gathered whole, so their
 * size costs no memory here.
 */
export const DEFAULT_MAX_PDU_LENGTH = 256 * 1024;
/**
 * How long an association may stay silent while it is the peer's turn, in milliseconds (60 s).
 * Time spent waiting on the node (the ingest committing, a socket paused for backpressure)
 * does not count.
 */
export const DEFAULT_IDLE_TIMEOUT_MS = 60_000;
/** Data set bytes of one instance held before the socket is paused (1 MiB, the ingest's chunk size). */
export const INBOUND_HIGH_WATER_MARK = 1024 * 1024;
/** Smallest max PDU length accepted in options, in bytes (dcmtk's floor; below it DIMSE gets silly). */
const MIN_MAX_PDU_LENGTH = 4096;
/** Most the peer may be told it can send us in one PDU, in bytes (PS3.8 allows up to 2^32-1). */
const MAX_MAX_PDU_LENGTH = 16 * 1024 * 1024;

export type DimseStoreResult = { status: 'stored' } | { status: 'failed'; dimseStatus: number; comment: string };

/** The ingest a C-STORE feeds: `part10` is a complete Part 10 stream (preamble, File Meta, data set). */
export interface DimseIngest {
  store(part10: AsyncIterable<Uint8Array>, context: { callingAeTitle: string; signal: AbortSignal }): Promise<DimseStoreResult>;
}

export interface DimseServerOptions {
  /** Default DEFAULT_DIMSE_HOST. */
  host?: string;
  /** Default DEFAULT_DIMSE_PORT; 0 picks a free port. */
  port?: number;
  /** This node's AE title; associations calling another are refused. Default DEFAULT_AE_TITLE. */
  aeTitle?: string;
  /** When set, only these calling AE titles may associate (A-ASSOCIATE-RJ "calling AE title not recognized" otherwise). */
  allowedCallingAeTitles?: readonly string[];
  /** Accept associations whatever AE title they call (default false: only `aeTitle`). */
  acceptAnyCalledAeTitle?: boolean;
  /** In bytes; default DEFAULT_MAX_PDU_LENGTH. */
  maxPduLength?: number;
  /** In milliseconds; default DEFAULT_IDLE_TIMEOUT_MS. */
  idleTimeoutMs?: number;
  logger: Logger;
  ingest: DimseIngest;
}

export interface DimseServer {
  /** The port listened on (the one picked when options.port was 0). */
  port: number;
  /** Stops listening, aborts open associations (and their ingests) and waits for those ingests to settle. */
  close(): Promise<void>;
}

/** C-STORE statuses used here (PS3.7 Annex C, PS3.4 B.2.3). */
const PROCESSING_FAILURE = 0x0110;
const SOP_CLASS_NOT_SUPPORTED = 0x0122;
const CANNOT_UNDERSTAND = 0xc000;
/** ErrorComment is LO: at most 64 characters. */
const MAX_ERROR_COMMENT = 64;

interface ServerContext {
  aeTitle: string;
  allowedCallingAeTitles: ReadonlySet<string> | undefined;
  acceptAnyCalledAeTitle: boolean;
  maxPduLength: number;
  idleTimeoutMs: number;
  logger: Logger;
  ingest: DimseIngest;
  /** Every store not yet settled, so close() can wait for them. */
  pending: Set<Promise<unknown>>;
}

/** What becomes of one C-STORE: an answer for the peer, or nothing (the association is gone). */
type Outcome = { answer: true; status: number; comment: string } | { answer: false };

interface InboundStore {
  inbound: InstanceInbound;
  controller: AbortController;
  outcome: Promise<Outcome>;
}

/** A presentation context proposed in the association: its abstract syntax and, if accepted, its transfer syntax. */
interface ContextInfo {
  abstractSyntax: string;
  transferSyntax: string | undefined;
}

/** A message whose data set is being received: a C-STORE's goes to its store, any other's is dropped. */
interface Message {
  contextId: number;
  command: CommandSet;
  store: InboundStore | null;
}

// dcmjs-dimse's own timers, set out of reach (the watchdog below replaces them). Its options
// treat 0 as "use the default", hence a large number rather than 0.
const NEVER_MS = 2 ** 31 - 1;

class StorageScp extends Scp {
  readonly #socket: Socket;
  readonly #ctx: ServerContext;
  readonly #log: Logger;
  readonly #reader: PduReader;
  /** dcmjs-dimse's reader of the socket, which is handed every PDU other than P-DATA-TF, whole. */
  readonly #dcmjsRead: (pdu: Buffer) => void;
  /** Presentation contexts by ID, once the association is accepted. */
  #contexts: Map<number, ContextInfo> | null = null;
  /** The fragments of the command being received. */
  #commandPieces: Buffer[] = [];
  #commandBytes = 0;
  #commandContext = -1;
  #message: Message | null = null;
  #current: InboundStore | null = null;
  #callingAeTitle = '';
  #lastHeard = Date.now();
  /** A C-STORE's data set is all in and its answer waits on the ingest: the peer may be silent. */
  #awaitingIngest = false;
  #socketPaused = false;
  #closed = false;
  readonly #watchdog: NodeJS.Timeout;

  constructor(socket: Socket, ctx: ServerContext) {
    super(socket, { connectTimeout: NEVER_MS, associationTimeout: NEVER_MS, pduTimeout: NEVER_MS });
    this.#socket = socket;
    this.#ctx = ctx;
    this.#log = ctx.logger.child({ peer: `${socket.remoteAddress}:${socket.remotePort}` });
    // dcmjs-dimse's constructor put its reader on the socket; the socket's reads come here
    // instead (pdu-reader.ts says why), and it gets the PDUs it still handles from us.
    const dcmjsListeners = socket.listeners('data');
    if (dcmjsListeners.length !== 1) throw new VaultError('INTERNAL', `dcmjs-dimse put ${dcmjsListeners.length} readers on the socket, not 1`);
    this.#dcmjsRead = dcmjsListeners[0] as (pdu: Buffer) => void;
    socket.off('data', this.#dcmjsRead);
    this.#reader = new PduReader(
      {
        pdu: (bytes) => this.#dcmjsRead(bytes),
        pdv: (contextId, control, piece, end) => this.#pdv(contextId, control, piece, end),
      },
      ctx.maxPduLength,
    );
    // dcmjs-dimse set the socket's inactivity timeout to connectTimeout; a socket paused for
    // backpressure is inactive through no fault of the peer.
    socket.setTimeout(0);
    // Each C-STORE waits on its small response: without this, Nagle's algorithm and the peer's
    // delayed ACK can hold every response back ~40 ms.
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      this.#lastHeard = Date.now();
      try {
        this.#reader.push(chunk);
      } catch (err) {
        this.#protocolError(err);
      }
    });
    this.on('close', () => {
      this.#closed = true;
      clearInterval(this.#watchdog);
      this.#abortCurrent('the association ended before the instance was stored');
    });
    this.on('networkError', (err: Error) => {
      this.#log.warn({ err: err.message }, 'DIMSE connection error; closing the association');
      socket.destroy();
    });
    this.#watchdog = setInterval(() => this.#checkIdle(), Math.min(1000, Math.max(10, ctx.idleTimeoutMs / 4)));
    this.#watchdog.unref();
  }

  /** Ends the association at once (the server is closing). */
  shutdown(reason: string): void {
    this.#abortCurrent(reason);
    this.#socket.destroy();
  }

  override associationRequested(association: Association): void {
    const ctx = this.#ctx;
    const calling = association.getCallingAeTitle().trim();
    const called = association.getCalledAeTitle().trim();
    this.#callingAeTitle = calling;
    if (ctx.allowedCallingAeTitles && !ctx.allowedCallingAeTitles.has(calling)) {
      this.#log.warn({ callingAeTitle: calling }, 'association rejected: calling AE title not recognized');
      this.#reject(RejectReason.CallingAeNotRecognized);
      return;
    }
    if (!ctx.acceptAnyCalledAeTitle && called !== ctx.aeTitle) {
      this.#log.warn({ callingAeTitle: calling, calledAeTitle: called }, 'association rejected: called AE title not recognized');
      this.#reject(RejectReason.CalledAeNotRecognized);
      return;
    }

    // What the A-ASSOCIATE-AC advertises is the longest PDU the node takes, whatever the peer
    // takes (dcmjs-dimse's default would advertise the smaller of the two, holding a peer that
    // receives 16 KiB PDUs to sending 16 KiB ones). The node's own PDUs are small responses.
    association.setMaxPduLength(ctx.maxPduLength);
    // One operation at a time: each C-STORE is answered before the next is read.
    association.setNegotiateAsyncOps(false);

    const contexts = new Map<number, ContextInfo>();
    for (const { id } of association.getPresentationContexts()) {
      const pc = association.getPresentationContext(id);
      const abstractSyntax = pc.getAbstractSyntaxUid();
      contexts.set(id, { abstractSyntax, transferSyntax: undefined });
      if (abstractSyntax !== VERIFICATION_SOP_CLASS && !isStorageSopClass(abstractSyntax)) {
        pc.setResult(PresentationContextResult.RejectAbstractSyntaxNotSupported);
        continue;
      }
      const transferSyntax = chooseTransferSyntax(pc.getTransferSyntaxUids());
      if (transferSyntax === undefined) {
        pc.setResult(PresentationContextResult.RejectTransferSyntaxesNotSupported);
        continue;
      }
      pc.setResult(PresentationContextResult.Accept, transferSyntax);
      contexts.set(id, { abstractSyntax, transferSyntax });
      // SCP/SCU role selection: the node is only ever the SCP of what it accepts.
      if ((pc.getProviderRole() as boolean | undefined) !== undefined) pc.setProviderRole(false);
    }
    const accepted = [...contexts.values()].filter((c) => c.transferSyntax !== undefined).length;
    this.#log.info({ callingAeTitle: calling, calledAeTitle: called, accepted, proposed: contexts.size }, 'association accepted');
    this.#contexts = contexts;
    this.sendAssociationAccept();
  }

  override associationReleaseRequested(): void {
    this.#log.debug({ callingAeTitle: this.#callingAeTitle }, 'association released');
    this.sendAssociationReleaseResponse();
  }

  override abort(source: number, reason: number): void {
    this.#log.warn({ callingAeTitle: this.#callingAeTitle, source, reason }, 'association aborted by the peer (A-ABORT)');
    this.#abortCurrent('the peer aborted the association');
    this.#socket.destroy();
  }

  /** A piece of a PDV (pdu-reader.ts): the fragments of a command, or of the data set that follows it. */
  #pdv(contextId: number, control: number, piece: Buffer, end: boolean): void {
    if (this.#contexts === null) throw pduError('P-DATA-TF before an association was accepted', AbortReason.UnexpectedPdu);
    if (!this.#contexts.has(contextId)) {
      throw pduError(`PDV on presentation context ${contextId}, which was not proposed`, AbortReason.InvalidPduParameterValue);
    }
    // PS3.8 E.2: bit 0 set for a command fragment, bit 1 for the last fragment.
    const last = end && (control & 0x02) !== 0;
    if ((control & 0x01) !== 0) {
      if (this.#message !== null) throw pduError('a command arrived in the middle of a data set', AbortReason.UnexpectedPdu);
      // No asynchronous operations were negotiated: one operation at a time (PS3.7 D.3.3.3).
      if (this.#awaitingIngest) throw pduError('a command arrived before the last C-STORE was answered', AbortReason.UnexpectedPdu);
      if (this.#commandContext !== -1 && this.#commandContext !== contextId) {
        throw pduError('the fragments of a command came on different presentation contexts', AbortReason.InvalidPduParameterValue);
      }
      this.#commandContext = contextId;
      this.#commandBytes += piece.length;
      if (this.#commandBytes > MAX_COMMAND_BYTES) throw pduError(`a command set over ${MAX_COMMAND_BYTES} bytes`, AbortReason.InvalidPduParameterValue);
      if (piece.length > 0) this.#commandPieces.push(piece);
      if (!last) return;
      const bytes = this.#commandPieces.length === 1 ? this.#commandPieces[0]! : Buffer.concat(this.#commandPieces);
      this.#commandPieces = [];
      this.#commandBytes = 0;
      this.#commandContext = -1;
      this.#command(contextId, decodeCommand(bytes));
      return;
    }
    const message = this.#message;
    if (message === null) throw pduError('a data set arrived without a command before it', AbortReason.UnexpectedPdu);
    if (message.contextId !== contextId)
      throw pduError('a data set came on another presentation context than its command', AbortReason.InvalidPduParameterValue);
    message.store?.inbound.push(piece);
    if (!last) return;
    this.#message = null;
    this.#dataSetReceived(message);
  }

  #command(contextId: number, command: CommandSet): void {
    const { commandField } = command;
    if (commandField === CommandField.CStoreRq) {
      if (!command.hasDataSet) {
        this.#respond(contextId, command, CANNOT_UNDERSTAND, 'C-STORE request without a data set');
        return;
      }
      this.#message = { contextId, command, store: this.#startStore(this.#contexts!.get(contextId)!, command) };
      return;
    }
    if ((commandField & 0x8000) !== 0 || commandField === CommandField.CCancelRq) {
      // A response (the node sends no requests) or a C-CANCEL (nothing here to cancel): nothing to answer.
      this.#log.warn({ callingAeTitle: this.#callingAeTitle, commandField: hex(commandField) }, 'DIMSE command ignored');
    }
    // A C-ECHO is answered, any other request refused, once the data set (if any) has passed.
    if (command.hasDataSet) this.#message = { contextId, command, store: null };
    else this.#answerOther(contextId, command);
  }

  #answerOther(contextId: number, command: CommandSet): void {
    const { commandField } = command;
    if (commandField === CommandField.CEchoRq) this.#respond(contextId, command, Status.Success, '');
    else if ((commandField & 0x8000) === 0 && commandField !== CommandField.CCancelRq) {
      this.#log.warn({ callingAeTitle: this.#callingAeTitle, commandField: hex(commandField) }, 'DIMSE request refused: not an operation of a Storage SCP');
      this.#respond(contextId, command, UNRECOGNIZED_OPERATION, 'not an operation of this Storage SCP');
    }
  }

  /** The last fragment of a message's data set is in: a C-STORE is answered once its ingest has settled. */
  #dataSetReceived(message: Message): void {
    const store = message.store;
    if (store === null) {
      this.#answerOther(message.contextId, message.command);
      return;
    }
    store.inbound.end();
    this.#awaitingIngest = true;
    void store.outcome.then((outcome) => {
      if (this.#current === store) this.#current = null;
      this.#awaitingIngest = false;
      this.#lastHeard = Date.now();
      if (outcome.answer && !this.#closed) this.#respond(message.contextId, message.command, outcome.status, outcome.comment);
    });
  }

  #respond(contextId: number, request: CommandSet, status: number, comment: string): void {
    if (this.#socket.destroyed) return;
    const command = encodeResponse({
      commandField: request.commandField | 0x8000,
      messageIdBeingRespondedTo: request.messageId,
      sopClassUid: request.sopClassUid,
      sopInstanceUid: request.sopInstanceUid,
      status,
      errorComment: status === Status.Success ? '' : errorComment(comment),
    });
    this.#socket.write(commandPdu(contextId, command));
  }

  #startStore(context: ContextInfo, request: CommandSet): InboundStore {
    const inbound = new InstanceInbound(INBOUND_HIGH_WATER_MARK, {
      pause: () => this.#pauseSocket(),
      resume: () => this.#resumeSocket(),
    });
    const controller = new AbortController();
    const { sopClassUid } = request;
    const transferSyntaxUid = context.transferSyntax ?? '';
    // Bound into each line logged rather than a child logger per C-STORE (pino serialises a child's bindings at once).
    const where = { callingAeTitle: this.#callingAeTitle, sopClassUid, transferSyntaxUid };
    const log = this.#log;
    const started = performance.now();

    let outcome: Promise<Outcome>;
    if (sopClassUid !== context.abstractSyntax || context.transferSyntax === undefined) {
      // PS3.7 9.3.1.1: the Affected SOP Class is that of an accepted presentation context.
      inbound.discard();
      log.warn({ ...where, abstractSyntax: context.abstractSyntax }, 'C-STORE refused: SOP class not that of an accepted presentation context');
      outcome = Promise.resolve({ answer: true, status: SOP_CLASS_NOT_SUPPORTED, comment: 'SOP Class not accepted in this presentation context' });
    } else {
      const header = part10Header({
        sopClassUid,
        sopInstanceUid: request.sopInstanceUid,
        transferSyntaxUid,
        sourceAeTitle: this.#callingAeTitle,
      });
      const part10 = part10Stream(header, inbound);
      outcome = this.#ctx.ingest.store(part10, { callingAeTitle: this.#callingAeTitle, signal: controller.signal }).then(
        (result): Outcome => {
          const ms = performance.now() - started;
          const figures = { ...where, bytes: inbound.received, ms: Math.round(ms) };
          if (result.status === 'stored') {
            if (controller.signal.aborted) {
              log.warn(figures, 'instance stored, but the association ended before the C-STORE could be answered');
              return { answer: false };
            }
            if (!inbound.complete) {
              // The ingest must read the whole data set before it can call it stored.
              inbound.discard();
              log.error(figures, 'C-STORE failed: the ingest reported stored before reading the whole data set');
              return { answer: true, status: PROCESSING_FAILURE, comment: 'ingest ended before the data set did' };
            }
            log.debug({ ...figures, mbPerS: Math.round(inbound.received / 1e3 / Math.max(ms, 1)) }, 'C-STORE stored');
            return { answer: true, status: Status.Success, comment: '' };
          }
          inbound.discard();
          if (controller.signal.aborted) {
            log.warn(figures, 'C-STORE not stored: the association ended mid-instance');
            return { answer: false };
          }
          log.warn({ ...figures, status: hex(result.dimseStatus), comment: result.comment }, 'C-STORE failed');
          return { answer: true, status: result.dimseStatus, comment: result.comment };
        },
        (err: unknown): Outcome => {
          inbound.discard();
          const figures = { ...where, bytes: inbound.received, ms: Math.round(performance.now() - started) };
          if (controller.signal.aborted) {
            log.warn(figures, 'C-STORE not stored: the association ended mid-instance');
            return { answer: false };
          }
          // The ingest answers its known failures; a throw is the node's own fault. VaultError
          // messages carry no patient data; anything else is not echoed to the peer.
          log.error({ ...figures, err }, 'C-STORE failed: the ingest threw');
          return { answer: true, status: PROCESSING_FAILURE, comment: isVaultError(err) ? err.message : 'internal error' };
        },
      );
    }
    const settled = outcome.finally(() => this.#ctx.pending.delete(settled));
    this.#ctx.pending.add(settled);
    const store = { inbound, controller, outcome };
    this.#current = store;
    return store;
  }

  #abortCurrent(why: string): void {
    const store = this.#current;
    this.#current = null;
    if (store === null || store.controller.signal.aborted) return;
    const reason = new VaultError('ABORTED', why);
    store.controller.abort(reason);
    store.inbound.fail(reason);
  }

  /** The peer broke the protocol (or a PDU could not be read): A-ABORT, and the connection closes. */
  #protocolError(err: unknown): void {
    this.#log.warn(
      { callingAeTitle: this.#callingAeTitle, err: err instanceof Error ? err.message : String(err) },
      'DIMSE protocol error; aborting the association',
    );
    this.#abortCurrent('the association was aborted on a protocol error');
    if (this.#contexts !== null) this.sendAbort(constants.AbortSource.ServiceProvider, abortReasonOf(err));
    // Closed once the A-ABORT is written; destroyed anyway should the peer not close its side.
    this.#socket.end();
    setTimeout(() => this.#socket.destroy(), 1000).unref();
  }

  #reject(reason: number): void {
    this.sendAssociationReject(RejectResult.Permanent, RejectSource.ServiceUser, reason);
    // The peer releases the transport on A-ASSOCIATE-RJ (PS3.8 7.1.1.7); so do we, once written.
    this.#socket.end();
  }

  #pauseSocket(): void {
    this.#socketPaused = true;
    this.#socket.pause();
  }

  #resumeSocket(): void {
    this.#socketPaused = false;
    this.#lastHeard = Date.now();
    if (!this.#socket.destroyed) this.#socket.resume();
  }

  #checkIdle(): void {
    if (this.#closed || this.#awaitingIngest || this.#socketPaused) return;
    if (Date.now() - this.#lastHeard < this.#ctx.idleTimeoutMs) return;
    this.#log.warn({ callingAeTitle: this.#callingAeTitle, idleTimeoutMs: this.#ctx.idleTimeoutMs }, 'association idle too long; aborting it');
    this.#abortCurrent('the association was idle too long');
    // A-ABORT first when there is an association to abort (dcmjs-dimse skips it otherwise).
    if (this.#callingAeTitle !== '') this.sendAbort(constants.AbortSource.ServiceProvider, constants.AbortReason.NotSpecified);
    this.#socket.destroy();
  }
}

/** The Part 10 stream the ingest reads: the header, then the data set's pieces as they arrive. */
async function* part10Stream(header: Uint8Array, inbound: InstanceInbound): AsyncGenerator<Uint8Array> {
  try {
    yield header;
    for (;;) {
      const chunk = await inbound.take();
      if (chunk === null) return;
      yield chunk;
    }
  } finally {
    // The ingest stopped reading (or failed): what is still to come is received and dropped.
    if (!inbound.complete) inbound.discard();
  }
}

/** ErrorComment is LO: at most 64 characters, no backslash or control characters (PS3.5 6.2). */
function errorComment(comment: string): string {
  return comment
    .replace(/[\\\x00-\x1f\x7f]/g, ' ')
    .slice(0, MAX_ERROR_COMMENT)
    .trimEnd();
}

function hex(status: number): string {
  return `0x${status.toString(16).padStart(4, '0')}`;
}

function checkOptions(options: DimseServerOptions): { aeTitle: string; maxPduLength: number; idleTimeoutMs: number } {
  const aeTitle = options.aeTitle ?? DEFAULT_AE_TITLE;
  // PS3.5 Table 6.2-1, AE: 1-16 characters, no backslash or control characters, not all spaces.
  if (aeTitle.trim() === '' || aeTitle.length > 16 || /[\\\x00-\x1f\x7f]/.test(aeTitle) || aeTitle !== aeTitle.trim()) {
    throw new VaultError('CONFIG_INVALID', `DIMSE AE title "${aeTitle}" is not 1 to 16 characters without backslash, control characters or edge spaces`);
  }
  const maxPduLength = options.maxPduLength ?? DEFAULT_MAX_PDU_LENGTH;
  if (!Number.isInteger(maxPduLength) || maxPduLength < MIN_MAX_PDU_LENGTH || maxPduLength > MAX_MAX_PDU_LENGTH) {
    throw new VaultError('CONFIG_INVALID', `DIMSE max PDU length must be an integer from ${MIN_MAX_PDU_LENGTH} to ${MAX_MAX_PDU_LENGTH} bytes`);
  }
  const idleTimeoutMs = options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
  if (!Number.isFinite(idleTimeoutMs) || idleTimeoutMs <= 0) {
    throw new VaultError('CONFIG_INVALID', 'DIMSE idle timeout must be a positive number of milliseconds');
  }
  const port = options.port ?? DEFAULT_DIMSE_PORT;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new VaultError('CONFIG_INVALID', `DIMSE port ${port} is not a TCP port`);
  return { aeTitle, maxPduLength, idleTimeoutMs };
}

export async function startDimseServer(options: DimseServerOptions): Promise<DimseServer> {
  const { aeTitle, maxPduLength, idleTimeoutMs } = checkOptions(options);
  const host = options.host ?? DEFAULT_DIMSE_HOST;
  const logger = options.logger.child({ component: 'dimse', aeTitle });

  // dcmjs-dimse logs every PDU to the console (AE titles, UIDs); the node logs its own events.
  dimse.log.setLevel('silent');
  // Process-wide in dcmjs-dimse. Its max PDU length caps every association's; each association
  // here sets its own below that cap, so raising the cap for one server leaves others as set.
  Implementation.setImplementationClassUid(IMPLEMENTATION_CLASS_UID);
  Implementation.setImplementationVersion(IMPLEMENTATION_VERSION_NAME);
  if (Implementation.getMaxPduLength() < maxPduLength) Implementation.setMaxPduLength(maxPduLength);

  const ctx: ServerContext = {
    aeTitle,
    allowedCallingAeTitles: options.allowedCallingAeTitles ? new Set(options.allowedCallingAeTitles.map((t) => t.trim())) : undefined,
    acceptAnyCalledAeTitle: options.acceptAnyCalledAeTitle ?? false,
    maxPduLength,
    idleTimeoutMs,
    logger,
    ingest: options.ingest,
    pending: new Set(),
  };
  const associations = new Set<StorageScp>();
  const server = net.createServer((socket) => {
    const scp = new StorageScp(socket, ctx);
    associations.add(scp);
    socket.once('close', () => associations.delete(scp));
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port: options.port ?? DEFAULT_DIMSE_PORT }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => logger.error({ err }, 'DIMSE listener error'));
  const port = (server.address() as AddressInfo).port;
  logger.info({ host, port, maxPduLength }, 'DIMSE Storage SCP listening');

  return {
    port,
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const scp of associations) scp.shutdown('the node is shutting down');
      await closed;
      await Promise.allSettled([...ctx.pending]);
      logger.info('DIMSE Storage SCP closed');
    },
  };
}
