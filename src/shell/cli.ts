// The `dicom-vault` command. Every command is a file in commands/; this file builds the program
// (commander: per-command --help naming every flag with its environment variable and default),
// runs it, and turns failures into one line and an exit status (commands/io.ts EXIT).
import { Command, CommanderError } from 'commander';
import pkg from '../../package.json' with { type: 'json' };
import { isVaultError } from '../core/errors.ts';
import { anchorCommands } from './commands/anchor.ts';
import { auditCommands } from './commands/audit.ts';
import { carCommands } from './commands/car.ts';
import { catalogCommands } from './commands/catalog.ts';
import { doctorCommand } from './commands/doctor.ts';
import { eraseCommands } from './commands/erase.ts';
import { exportCommand } from './commands/export.ts';
import { gcCommand } from './commands/gc.ts';
import { ingestCommand } from './commands/ingest.ts';
import { patientCommands } from './commands/patient.ts';
import { EXIT, stdio, type Io } from './commands/io.ts';
import { serveCommand } from './commands/serve.ts';
import { userCommands } from './commands/user.ts';
import { verifyCommand } from './commands/verify.ts';

export function buildProgram(io: Io = stdio): Command {
  const program = new Command('dicom-vault')
    .description('A storage node for large medical imaging studies: encrypted, content-addressed, anchored, served over DICOMweb.')
    .version(pkg.version, '-V, --version')
    .showSuggestionAfterError(true)
    .configureOutput({ writeOut: (s) => process.stdout.write(s), writeErr: (s) => process.stderr.write(s) })
    // Errors are printed once, by run() below.
    .configureOutput({ outputError: () => undefined })
    .exitOverride();
  serveCommand(program, io);
  ingestCommand(program, io);
  verifyCommand(program, io);
  exportCommand(program, io);
  carCommands(program, io);
  gcCommand(program, io);
  catalogCommands(program, io);
  doctorCommand(program, io);
  userCommands(program, io);
  anchorCommands(program, io);
  auditCommands(program, io);
  patientCommands(program, io);
  eraseCommands(program, io);
  for (const cmd of program.commands) cmd.exitOverride().configureOutput({ outputError: () => undefined });
  return program;
}

/** Runs the command line; resolves with the exit status. */
export async function run(argv: string[], io: Io = stdio): Promise<number> {
  const program = buildProgram(io);
  process.exitCode = undefined;
  // Whatever a command writes (databases, keys, exported files) is for this user alone.
  process.umask(0o077);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.OK;
  } catch (e) {
    if (e instanceof CommanderError) {
      // --help and --version end with a CommanderError of exit code 0.
      if (e.exitCode === 0) return EXIT.OK;
      // A command group without its subcommand: its help is already on stderr.
      if (e.code === 'commander.help') return EXIT.USAGE;
      io.err(`dicom-vault: ${e.message.replace(/^error: /, '')} (see dicom-vault --help)`);
      return EXIT.USAGE;
    }
    if (isVaultError(e)) io.err(`dicom-vault: ${e.code}: ${e.message}`);
    else {
      // One line for the operator; the stack only when asked for.
      io.err(`dicom-vault: INTERNAL: ${e instanceof Error ? e.message : String(e)}`);
      if (e instanceof Error && /^(debug|trace)$/.test(process.env.DICOM_VAULT_LOG_LEVEL ?? '')) io.err(e.stack ?? '');
    }
    return EXIT.FAILED;
  }
}

process.exitCode = await run(process.argv.slice(2));
