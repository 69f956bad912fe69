// One ingest session: how every way in (STOW-RS, DIMSE C-STORE, `dicom-vault ingest`) turns Part 10
// streams into stored study versions, with one set of rules:
// - each instance is read, cut, sealed and written as it streams (instance.ts); the next one is
//   read while the last chunks of this one are sealed;
// - an instance that fails anywhere in its path (unreadable, refused by a limit, a block that could
//   not be written, its study's commit) fails alone, with a PS3.4 failure status and a reason;
//   nothing else of the session is affected;
// - at commit, the instances of each study become one new version (study.ts), and a study is
//   committed only once its instances' blocks are durable;
// - an abort (the client gone, the request broken off) discards everything not yet committed.
import { isVaultError, VaultError, type ErrorCode } from '../src/core/errors.ts';
import { STORE_FAILURE, type StoreFailureStatus } from '../src/dicom/status.ts';
import { discardInstances, keysOncePerStudy, readInstance, WriteWindow, type IngestDeps, type IngestedInstance, type ReadInstance } from './instance.ts';
import type { CommitResult, StudyWriter } from './study.ts';
import type { DicomScannerOptions } from '../src/dicom/scanner.ts';

/** Where instances came in: recorded with each new study version. */
export type IngestChannel = 'stow' | 'dimse' | 'cli';

export interface IngestSessionDeps extends IngestDeps {
  writer: Pick<StudyWriter, 'commit'>;
}

export interface IngestSessionOptions {
  channel: IngestChannel;
  chunkSize: number;
  signal?: AbortSignal;
  /** Instances of another study are refused (STOW to /studies/{study}). */
  expectedStudyInstanceUID?: string;
  /**
   * A study is committed as soon as this many of its instances are pending (a CLI ingest of a
   * folder of thousands makes a handful of versions, and holds no more). Default: everything is
   * committed by commit().
   */
  commitBatch?: number;
  /**
   * Metadata (as the scanner counts it) the session may hold for instances not yet committed, in
   * bytes: past it, every pending study is committed at once, so a request of many instances with
   * large headers holds a bounded amount. Default DEFAULT_MAX_HELD_METADATA_BYTES (256 MiB).
   */
  maxHeldMetadataBytes?: number;
  /** The scanner's limits (src/dicom/scanner.ts). */
  scanner?: DicomScannerOptions;
}

/** Default of IngestSessionOptions.maxHeldMetadataBytes: 256 MiB, four instances at the scanner's own limit. */
export const DEFAULT_MAX_HELD_METADATA_BYTES = 256 * 1024 * 1024;

/** An instance stored (or found already stored with the same bytes). */
export interface StoredInstance {
  studyInstanceUID: string;
  seriesInstanceUID: string;
  sopInstanceUID: string;
  sopClassUID: string;
  duplicate: boolean;
}

/** An instance that was not stored, and why. */
export interface InstanceFailure {
  /** What the caller called it: "part 3", a file's path. */
  label: string;
  sopInstanceUID?: string;
  sopClassUID?: string;
  code: ErrorCode | 'DUPLICATE_SOP_INSTANCE';
  status: StoreFailureStatus;
  reason: string;
  /** The node's fault (a store or catalog failure), not the instance's: a retry may succeed. */
  serverSide: boolean;
}

export interface SessionReport {
  stored: StoredInstance[];
  failures: InstanceFailure[];
  /** Studies that got a new version. */
  studies: string[];
  /** Part 10 bytes read, of the instances read whole. */
  bytes: number;
}

interface Pending {
  label: string;
  completed: Promise<IngestedInstance>;
}

/** Errors that end the whole session rather than one instance: the request itself is gone or broken. */
const SESSION_ERRORS: ReadonlySet<ErrorCode> = new Set(['ABORTED', 'MULTIPART_MALFORMED', 'MULTIPART_TRUNCATED']);

export class IngestSession {
  readonly #deps: IngestSessionDeps;
  readonly #options: IngestSessionOptions;
  readonly #window = new WriteWindow();
  readonly #byStudy = new Map<string, Pending[]>();
  readonly #report: SessionReport = { stored: [], failures: [], studies: [], bytes: 0 };
  readonly #studies = new Set<string>();
  #heldBytes = 0;
  /** Instances committed or discarded; what remains in #byStudy is uncommitted. */
  #closed = false;

  constructor(deps: IngestSessionDeps, options: IngestSessionOptions) {
    this.#deps = { ...deps, keys: keysOncePerStudy(deps.keys) };
    this.#options = options;
  }

  /**
   * Reads one instance from `body` to its end. Resolves once its bytes are read (its last seals
   * and writes go on), with its failure when it was refused. Throws, and the session must then be
   * discarded, only when the session itself cannot go on (aborted, or the framing around the
   * instance is broken).
   */
  async add(body: AsyncIterable<Uint8Array>, label: string): Promise<InstanceFailure | undefined> {
    if (this.#closed) throw new VaultError('INTERNAL', 'ingest session already closed');
    const { chunkSize, signal, expectedStudyInstanceUID } = this.#options;
    let read: ReadInstance;
    try {
      read = await readInstance(body, this.#deps, {
        chunkSize,
        window: this.#window,
        ...(signal ? { signal } : {}),
        ...(expectedStudyInstanceUID ? { expectedStudyInstanceUID } : {}),
        ...(this.#options.scanner ? { scanner: this.#options.scanner } : {}),
      });
    } catch (err) {
      if (!isVaultError(err) || SESSION_ERRORS.has(err.code) || signal?.aborted) throw err;
      return this.#fail(failureOf(label, err));
    }
    this.#report.bytes += read.size;
    const study = read.scanned.studyInstanceUID;
    const list = this.#byStudy.get(study) ?? [];
    list.push({ label, completed: read.completed });
    this.#byStudy.set(study, list);
    this.#heldBytes += read.scanned.heldBytes ?? 0;
    if (this.#heldBytes > (this.#options.maxHeldMetadataBytes ?? DEFAULT_MAX_HELD_METADATA_BYTES)) {
      for (const pending of [...this.#byStudy.keys()]) await this.#commitStudy(pending);
      this.#heldBytes = 0;
    } else if (this.#options.commitBatch !== undefined && list.length >= this.#options.commitBatch) await this.#commitStudy(study);
    return undefined;
  }

  /** Records a failure the caller found itself (a part that is not application/dicom). */
  refuse(failure: InstanceFailure): void {
    this.#fail(failure);
  }

  /**
   * Commits every pending study: each becomes a new version once its instances' blocks are
   * durable. Instances that failed along the way are reported, the rest stored.
   */
  async commit(): Promise<SessionReport> {
    for (const study of [...this.#byStudy.keys()]) await this.#commitStudy(study);
    this.#closed = true;
    this.#report.studies = [...this.#studies];
    return this.#report;
  }

  /** Removes every block of what is not committed. Safe to call at any point, and twice. */
  async discard(): Promise<void> {
    this.#closed = true;
    const pending = [...this.#byStudy.values()].flat();
    this.#byStudy.clear();
    const settled = await Promise.allSettled(pending.map((p) => p.completed));
    await discardInstances(
      this.#deps.store,
      settled.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : [])),
    );
  }

  #fail(failure: InstanceFailure): InstanceFailure {
    this.#report.failures.push(failure);
    return failure;
  }

  async #commitStudy(study: string): Promise<void> {
    const pending = this.#byStudy.get(study) ?? [];
    this.#byStudy.delete(study);
    // Instances whose seals or writes failed fail alone (their blocks removed by themselves).
    const settled = await Promise.allSettled(pending.map((p) => p.completed));
    let items: IngestedInstance[] = [];
    const labels = new Map<IngestedInstance, string>();
    settled.forEach((r, i) => {
      if (r.status === 'fulfilled') {
        items.push(r.value);
        labels.set(r.value, pending[i]!.label);
      } else this.#fail(failureOf(pending[i]!.label, r.reason));
    });
    if (items.length === 0) return;
    // The fast path: one version for all of them, its manifest written while their last blocks
    // sync. Should one of them not become durable, it is dropped and the rest committed.
    let result: CommitResult;
    try {
      result = await this.#deps.writer.commit(study, items);
    } catch (err) {
      if (this.#options.signal?.aborted) {
        await discardInstances(this.#deps.store, items);
        throw err;
      }
      const durable = await Promise.allSettled(items.map((i) => i.durable));
      const failed = items.filter((_, i) => durable[i]!.status === 'rejected');
      if (failed.length === 0) {
        // The commit itself failed (the catalog): every instance of this study fails alone.
        await discardInstances(this.#deps.store, items);
        for (const item of items) this.#fail(failureOf(labels.get(item)!, err, item));
        return;
      }
      for (const item of failed) this.#fail(failureOf(labels.get(item)!, (durable[items.indexOf(item)] as PromiseRejectedResult).reason, item));
      await discardInstances(this.#deps.store, failed);
      items = items.filter((i) => !failed.includes(i));
      if (items.length === 0) return;
      try {
        result = await this.#deps.writer.commit(study, items);
      } catch (again) {
        await discardInstances(this.#deps.store, items);
        for (const item of items) this.#fail(failureOf(labels.get(item)!, again, item));
        return;
      }
    }
    if (result.version !== null) this.#studies.add(study);
    for (const o of result.outcomes) {
      if (o.status === 'conflict') {
        this.#fail({
          label: o.sopInstanceUID,
          sopInstanceUID: o.sopInstanceUID,
          sopClassUID: o.sopClassUID,
          code: 'DUPLICATE_SOP_INSTANCE',
          status: STORE_FAILURE.DUPLICATE_SOP_INSTANCE,
          reason: o.reason,
          serverSide: false,
        });
        continue;
      }
      const i = o.instance;
      this.#report.stored.push({
        studyInstanceUID: i.studyInstanceUID,
        seriesInstanceUID: i.seriesInstanceUID,
        sopInstanceUID: i.sopInstanceUID,
        sopClassUID: i.sopClassUID,
        duplicate: o.status === 'duplicate',
      });
    }
  }
}

/** A failure of one instance, with the PS3.4 status a client understands. */
function failureOf(label: string, err: unknown, item?: IngestedInstance): InstanceFailure {
  const vault = isVaultError(err) ? err : new VaultError('INTERNAL', 'internal error', { cause: err });
  const details = vault.details ?? {};
  const sop = item?.scanned.sopInstanceUID ?? (typeof details.sopInstanceUID === 'string' ? details.sopInstanceUID : undefined);
  // A commit that lost its race too often is the node's to retry, not the instance's fault.
  const serverSide = vault.status >= 500 || vault.code === 'CONFLICT';
  const status: StoreFailureStatus =
    vault.code === 'STUDY_UID_MISMATCH'
      ? STORE_FAILURE.DOES_NOT_MATCH
      : vault.code === 'TOO_LARGE' || vault.code === 'STORE_UNAVAILABLE'
        ? STORE_FAILURE.OUT_OF_RESOURCES
        : serverSide
          ? STORE_FAILURE.PROCESSING_FAILURE
          : STORE_FAILURE.CANNOT_UNDERSTAND;
  return {
    label,
    ...(sop !== undefined ? { sopInstanceUID: sop } : {}),
    ...(item ? { sopClassUID: item.scanned.sopClassUID } : {}),
    code: vault.code,
    status,
    reason: serverSide && vault.code === 'INTERNAL' ? 'internal error' : vault.message,
    serverSide,
  };
}
