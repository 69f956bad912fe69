// `dicom-vault ingest <files or folders>`: the same ingest session as STOW, fed from files. Each
// file is streamed (never read whole); instances are committed per study in batches, so a folder
// of thousands of files makes a handful of study versions, not thousands.
import { createReadStream } from 'node:fs';
import { open, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { parseFileMeta } from '../src/dicom/file-meta.ts';
import { IngestSession, type IngestSessionDeps, type InstanceFailure, type SessionReport } from './session.ts';

/** Instances per study committed together. Default 500. */
export const DEFAULT_COMMIT_BATCH = 500;

export interface FileIngestProgress {
  /** Files looked at so far, and their bytes. */
  files: number;
  bytes: number;
  failed: number;
  /** Files and bytes in all, once the walk has counted them (undefined until then). */
  totalFiles?: number;
  totalBytes?: number;
}

export interface FileIngestResult extends SessionReport {
  files: number;
  /** DICOMDIR files met: media directories, not instances (PS3.10 8.5); reported, not stored. */
  dicomdirs: string[];
}

export interface FileIngestOptions {
  chunkSize: number;
  commitBatch?: number;
  onProgress?: (p: FileIngestProgress) => void;
  /** Walk the paths once first to give progress a total (a terminal's progress bar). */
  countFirst?: boolean;
  signal?: AbortSignal;
}

async function* walk(path: string): AsyncGenerator<string> {
  const st = await stat(path);
  if (st.isFile()) {
    yield path;
    return;
  }
  if (!st.isDirectory()) return;
  const entries = await readdir(path, { withFileTypes: true });
  entries.sort((a, b) => a.name.localeCompare(b.name));
  for (const e of entries) {
    const p = join(path, e.name);
    if (e.isDirectory()) yield* walk(p);
    else if (e.isFile()) yield p;
  }
}

/** The Media Storage SOP Class of a DICOMDIR (PS3.4 Annex F). */
const MEDIA_STORAGE_DIRECTORY = '1.2.840.10008.1.3.10';

/** Whether a file is a DICOMDIR: its File Meta names the Media Storage Directory SOP Class. */
async function isDicomdir(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const head = Buffer.alloc(16 * 1024);
    const { bytesRead } = await fh.read(head, 0, head.length, 0);
    const meta = parseFileMeta(head.subarray(0, bytesRead), true);
    return meta?.mediaStorageSOPClassUID === MEDIA_STORAGE_DIRECTORY;
  } catch {
    return false; // not Part 10 at all: the ingest says why
  } finally {
    await fh.close();
  }
}

export async function ingestFiles(paths: string[], deps: IngestSessionDeps, options: FileIngestOptions): Promise<FileIngestResult> {
  const session = new IngestSession(deps, {
    channel: 'cli',
    chunkSize: options.chunkSize,
    commitBatch: options.commitBatch ?? DEFAULT_COMMIT_BATCH,
    ...(options.signal ? { signal: options.signal } : {}),
  });
  const progress: FileIngestProgress = { files: 0, bytes: 0, failed: 0 };
  if (options.countFirst === true) {
    let totalFiles = 0;
    let totalBytes = 0;
    for (const root of paths) {
      for await (const path of walk(root)) {
        totalFiles++;
        totalBytes += (await stat(path)).size;
      }
    }
    progress.totalFiles = totalFiles;
    progress.totalBytes = totalBytes;
  }
  const dicomdirs: string[] = [];
  let report: SessionReport;
  try {
    for (const root of paths) {
      for await (const path of walk(root)) {
        progress.files++;
        const size = (await stat(path)).size;
        let failure: InstanceFailure | undefined;
        if (await isDicomdir(path)) dicomdirs.push(path);
        else failure = await session.add(createReadStream(path, { highWaterMark: 1024 * 1024 }), path);
        progress.bytes += size;
        if (failure !== undefined) progress.failed++;
        options.onProgress?.(progress);
      }
    }
    report = await session.commit();
  } catch (err) {
    await session.discard();
    throw err;
  }
  return { ...report, files: progress.files, dicomdirs };
}
