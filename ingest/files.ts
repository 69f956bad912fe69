// `dicom-vault ingest <files or folders>`: the same pipeline as STOW, fed from files. Each file
// is streamed (never read whole); stored instances are committed per study in batches, so a
// folder of thousands of files makes a handful of study versions, not thousands.
import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { isVaultError } from '../src/core/errors.ts';
import { discardInstances, ingestInstance, keysOncePerStudy, WriteWindow, type IngestDeps, type IngestedInstance } from './instance.ts';
import type { StudyWriter } from './study.ts';

/** Instances per study committed together. Default 500. */
export const DEFAULT_COMMIT_BATCH = 500;

export interface FileIngestProgress {
  files: number;
  stored: number;
  duplicates: number;
  failed: number;
  bytes: number;
}

export interface FileIngestResult extends FileIngestProgress {
  studies: string[];
  failures: Array<{ path: string; code: string; message: string }>;
}

export interface FileIngestOptions {
  chunkSize: number;
  commitBatch?: number;
  onProgress?: (p: FileIngestProgress) => void;
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

export async function ingestFiles(
  paths: string[],
  deps: IngestDeps & { writer: Pick<StudyWriter, 'commit'> },
  options: FileIngestOptions,
): Promise<FileIngestResult> {
  const batch = options.commitBatch ?? DEFAULT_COMMIT_BATCH;
  const result: FileIngestResult = { files: 0, stored: 0, duplicates: 0, failed: 0, bytes: 0, studies: [], failures: [] };
  const pending = new Map<string, IngestedInstance[]>();
  const studies = new Set<string>();

  const commit = async (study: string): Promise<void> => {
    const items = pending.get(study) ?? [];
    pending.delete(study);
    if (items.length === 0) return;
    try {
      // The commit waits for the instances' blocks to be durable before the catalog names them.
      const r = await deps.writer.commit(study, items);
      for (const o of r.outcomes) {
        if (o.status === 'stored') result.stored++;
        else if (o.status === 'duplicate') result.duplicates++;
        else {
          result.failed++;
          result.failures.push({ path: o.sopInstanceUID, code: 'DUPLICATE_SOP_INSTANCE', message: o.reason });
        }
      }
    } catch (err) {
      await discardInstances(deps.store, items);
      throw err;
    }
  };
  const window = new WriteWindow();
  const ingestDeps = { ...deps, keys: keysOncePerStudy(deps.keys) };

  try {
    for (const root of paths) {
      for await (const path of walk(root)) {
        result.files++;
        try {
          const ingested = await ingestInstance(createReadStream(path, { highWaterMark: 1024 * 1024 }), ingestDeps, {
            chunkSize: options.chunkSize,
            window,
            ...(options.signal ? { signal: options.signal } : {}),
          });
          result.bytes += ingested.size;
          const study = ingested.scanned.studyInstanceUID;
          studies.add(study);
          const list = pending.get(study) ?? [];
          list.push(ingested);
          pending.set(study, list);
          if (list.length >= batch) await commit(study);
        } catch (err) {
          if (!isVaultError(err) || err.status >= 500 || err.code === 'ABORTED') throw err;
          result.failed++;
          result.failures.push({ path, code: err.code, message: err.message });
        }
        options.onProgress?.(result);
      }
    }
    for (const study of [...pending.keys()]) await commit(study);
  } catch (err) {
    await discardInstances(deps.store, [...pending.values()].flat());
    throw err;
  }
  result.studies = [...studies];
  return result;
}
