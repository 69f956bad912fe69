// What a patient import leaves beside the data (src/shell/commands/car.ts): one folder per import
// under <data-dir>/imports/, with the sender's receipts (each version's CID and anchor salt), its
// grants as FHIR Consent and its audit entries (the patient's IDs), and studies.json naming the
// imported studies. Erasure must reach them too: a study's erasure drops its receipts; once every
// study of an import is erased, the whole folder goes (nothing in it is about anyone else).
import { existsSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { StudyRecordEraser } from '../erasure/service.ts';

export const IMPORTS_DIR = 'imports';
export const IMPORTED_STUDIES_FILE = 'studies.json';

/** Writes the list of an import's studies beside its records (read back by the eraser). */
export function writeImportedStudies(dir: string, studies: readonly string[]): void {
  writeFileSync(join(dir, IMPORTED_STUDIES_FILE), JSON.stringify(studies), { mode: 0o600 });
}

/** The imported studies of one folder: studies.json, else (an import made before it) the receipts' own study UIDs. */
function studiesOf(dir: string): string[] {
  const listed = join(dir, IMPORTED_STUDIES_FILE);
  if (existsSync(listed)) return JSON.parse(readFileSync(listed, 'utf8')) as string[];
  const receipts = join(dir, 'receipts.json');
  if (!existsSync(receipts)) return [];
  return [...new Set((JSON.parse(readFileSync(receipts, 'utf8')) as Array<{ study?: string }>).flatMap((r) => (r.study ? [r.study] : [])))];
}

export function importRecordsEraser(dataDir: string): StudyRecordEraser {
  return {
    eraseStudyRecords(studies) {
      const root = join(dataDir, IMPORTS_DIR);
      if (!existsSync(root) || studies.length === 0) return;
      const erased = new Set(studies);
      for (const entry of readdirSync(root, { withFileTypes: true })) {
        if (!entry.isDirectory()) continue;
        const dir = join(root, entry.name);
        const imported = studiesOf(dir);
        if (!imported.some((s) => erased.has(s))) continue;
        if (imported.every((s) => erased.has(s))) {
          rmSync(dir, { recursive: true, force: true });
          continue;
        }
        // Some studies of the import stay: only the erased ones' receipts go (written whole, then renamed).
        const receipts = join(dir, 'receipts.json');
        if (existsSync(receipts)) {
          const kept = (JSON.parse(readFileSync(receipts, 'utf8')) as Array<{ study?: string }>).filter((r) => r.study === undefined || !erased.has(r.study));
          writeFileSync(`${receipts}.tmp`, JSON.stringify(kept, null, 2), { mode: 0o600 });
          renameSync(`${receipts}.tmp`, receipts);
        }
        writeImportedStudies(
          dir,
          imported.filter((s) => !erased.has(s)),
        );
      }
    },
  };
}
