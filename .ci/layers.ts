// The architecture, checked in CI: which part may import which, and no import cycles, between
// folders or between files. Each part may import itself and the parts listed for it (all below
// it); anything else fails with the importing file, the imported file and the rule.
//
//   src/shell                                    HTTP app, DICOMweb and DIMSE, commands, wiring
//   src/audit                                    the record of every access and its exports (BALP, PS3.15, syslog)
//   src/access                                   the access seam: identity and grants decide what a request sees
//   src/web                                      the browser pages (served by the shell; import nothing of ours)
//   src/transfer  src/maintenance  src/erasure   features over the parts below
//   src/identity  src/grants                     who is calling; what patients granted
//   ingest  src/read  anchor                     the write path, the read path, anchoring
//   storage  src/catalog                         block stores; the catalog
//   src/dicom  src/format                        the DICOM toolkit; the stored-study format
//   src/core                                     the ground: imports nothing of ours
//
// Hand-written rather than dependency-cruiser or madge: both read TypeScript through the
// TypeScript compiler's JavaScript API, which TypeScript 7 (the Go compiler this project uses)
// does not have before 7.1 (dependency-cruiser 18.9 says so and skips every .ts file). Imports
// here are found by their syntax, which the formatter keeps regular: `import ... from '...'`,
// `export ... from '...'`, `import('...')`, `new URL('...', import.meta.url)`.
import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { dirname, join, normalize, relative } from 'node:path';

const ROOT = join(import.meta.dirname, '..');
const PARTS = [
  'src/core',
  'src/dicom',
  'src/format',
  'storage',
  'src/catalog',
  'ingest',
  'src/read',
  'anchor',
  'src/identity',
  'src/grants',
  'src/access',
  'src/audit',
  'src/transfer',
  'src/maintenance',
  'src/erasure',
  'src/web',
  'src/shell',
  'bench',
  'test',
  'bin',
];
/** Every part the shell may import: all those listed before it. */
const BELOW_SHELL = PARTS.slice(0, PARTS.indexOf('src/shell'));
const LOWER = ['src/core', 'src/dicom', 'src/format', 'storage', 'src/catalog'];
export const ALLOWED: Record<string, string[]> = {
  'src/core': [],
  'src/dicom': ['src/core'],
  'src/format': ['src/core'],
  storage: ['src/core', 'src/format'],
  'src/catalog': ['src/core', 'src/dicom'],
  ingest: LOWER,
  'src/read': LOWER,
  anchor: ['src/core', 'src/catalog', 'src/format', 'storage'],
  'src/identity': ['src/core', 'src/catalog'],
  'src/grants': ['src/core', 'src/dicom', 'src/catalog', 'src/identity'],
  'src/access': ['src/core', 'src/dicom', 'src/catalog', 'src/identity', 'src/grants'],
  // The audit log (its tree is anchor/merkle.ts's hashing; entries sealed as src/format seals) and
  // its exports, which read the access seam's events and the catalog's patients.
  'src/audit': ['src/core', 'src/dicom', 'src/format', 'anchor', 'src/catalog', 'src/identity', 'src/grants', 'src/access'],
  'src/transfer': [...LOWER, 'src/read'],
  'src/maintenance': [...LOWER, 'src/read'],
  'src/erasure': LOWER,
  // The browser pages and their build: nothing of the node's (they talk to it over HTTP only). The
  // shell serves their bundle (src/web/dist), found by URL.
  'src/web': [],
  // The shell wires every part below it; the bench drives the shell and the bin.
  'src/shell': [...BELOW_SHELL, 'package.json'],
  bench: [...BELOW_SHELL, 'src/shell', 'bin'],
  test: [...PARTS.filter((p) => p !== 'test'), 'package.json'],
  bin: ['src/shell', 'package.json'],
};

export function partOf(file: string): string | undefined {
  if (file === 'package.json') return 'package.json';
  return PARTS.filter((p) => file === p || file.startsWith(`${p}/`)).sort((a, b) => b.length - a.length)[0];
}

const SPECIFIER = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+|new URL\(\s*)['"](\.{1,2}\/[^'"]+)['"]/g;

export function importsOf(file: string, source: string): string[] {
  const out: string[] = [];
  for (const m of source.matchAll(SPECIFIER)) out.push(normalize(join(dirname(file), m[1]!)));
  return out;
}

function sourceFiles(): string[] {
  return execFileSync('git', ['ls-files', '-co', '--exclude-standard', '--', ...PARTS.filter((p) => p !== 'bin'), 'bin'], { cwd: ROOT, encoding: 'utf8' })
    .split('\n')
    .filter((f) => /\.(ts|js|mjs)$/.test(f));
}

/** Strongly connected components of more than one node (or a node that imports itself). */
function cycles(edges: Map<string, Set<string>>): string[][] {
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const on = new Set<string>();
  const out: string[][] = [];
  const visit = (v: string): void => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    on.add(v);
    for (const w of edges.get(v) ?? []) {
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        on.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || edges.get(v)?.has(v)) out.push(scc.sort());
    }
  };
  for (const v of edges.keys()) if (!idx.has(v)) visit(v);
  return out;
}

export function check(): { problems: string[]; files: number; imports: number; folders: Map<string, Set<string>> } {
  const problems: string[] = [];
  const fileEdges = new Map<string, Set<string>>();
  const folderEdges = new Map<string, Set<string>>();
  let imports = 0;
  const files = sourceFiles();
  for (const file of files) {
    const from = partOf(file);
    fileEdges.set(file, new Set());
    for (const target of importsOf(file, readFileSync(join(ROOT, file), 'utf8'))) {
      const rel = relative(ROOT, join(ROOT, target));
      const to = partOf(rel);
      if (from === undefined || to === undefined) continue;
      imports++;
      fileEdges.get(file)!.add(rel);
      if (from === to) continue;
      if (!folderEdges.has(from)) folderEdges.set(from, new Set());
      folderEdges.get(from)!.add(to);
      if (!(ALLOWED[from] ?? []).includes(to))
        problems.push(`${file} imports ${rel}: ${from} may import only ${ALLOWED[from]?.join(', ') || 'nothing of ours'}`);
    }
  }
  for (const c of cycles(folderEdges)) problems.push(`folders import each other in a cycle: ${c.join(' -> ')}`);
  for (const c of cycles(fileEdges)) problems.push(`files import each other in a cycle: ${c.join(' -> ')}`);
  return { problems, files: files.length, imports, folders: folderEdges };
}

if (import.meta.main) {
  const { problems, files, imports, folders } = check();
  for (const p of problems) process.stderr.write(`layers: ${p}\n`);
  if (process.argv.includes('--graph')) for (const [from, to] of [...folders].sort()) process.stdout.write(`${from} -> ${[...to].sort().join(', ')}\n`);
  process.stdout.write(`layers: ${files} files, ${imports} imports between them, ${problems.length} problem(s)\n`);
  process.exitCode = problems.length === 0 ? 0 : 1;
}
