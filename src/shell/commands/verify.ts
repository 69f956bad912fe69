// `dicom-vault verify <study>`: every block and instance of a study, and the anchor of its current root.
import type { Command } from 'commander';
import { assertUid } from '../../dicom/uid.ts';
import { verifyStudy } from '../../read/verify.ts';
import { createLogger } from '../log.ts';
import { openVault } from '../vault.ts';
import { checkAnchorOfStudy, printStudyAnchor } from './anchor.ts';
import { EXIT, mb, nodeOptionsOf, stdio, withNodeFlags, type Io } from './io.ts';

export function verifyCommand(program: Command, io: Io = stdio): void {
  withNodeFlags(
    program
      .command('verify')
      .description('check every block and instance of a study, and its anchor; names what is missing or corrupt')
      .argument('<study-uid>', 'Study Instance UID')
      .option('--json', 'print the report as JSON'),
  ).action(async (studyArg: string, opts: { json?: boolean }, cmd: Command) => {
    const options = nodeOptionsOf(cmd);
    const study = assertUid(studyArg, 'study UID');
    const vault = await openVault(options, createLogger('warn'));
    try {
      const report = await verifyStudy(vault, study, (p) => process.stderr.write(`\r${p.blocks} blocks, ${mb(p.bytes)} MB checked`));
      process.stderr.write('\n');
      const anchor = await checkAnchorOfStudy(vault, options, study);
      if (opts.json) io.out(JSON.stringify({ ...report, anchor }, null, 2));
      else {
        io.out(
          `study ${study} root ${report.root}: ${report.versions} versions, ${report.instances} instances, ${report.blocks} blocks, ${mb(report.bytes)} MB`,
        );
        for (const p of report.problems) io.out(`${p.kind.toUpperCase()} ${p.cid} (${p.where}): ${p.message}`);
        io.out(report.ok ? 'OK: every block and instance verified' : `FAILED: ${report.problems.length} problem(s)`);
        if (anchor) printStudyAnchor(anchor, io);
      }
      process.exitCode = report.ok && (anchor?.ok ?? true) ? EXIT.OK : EXIT.PROBLEMS;
    } finally {
      await vault.close();
    }
  });
}
