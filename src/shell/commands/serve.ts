// `dicom-vault serve`: opens the data directory and serves until told to stop. SIGTERM or SIGINT
// (what systemd, a container runtime or Ctrl-C send) stops new work at once, lets requests in
// flight finish for up to the shutdown timeout, then breaks what is left, closes the stores and
// stops the embedded chain. A second signal stops at once.
import { Option, type Command } from 'commander';
import { startNode } from '../server.ts';
import { EXIT, nodeOptionsOf, stdio, withNodeFlags, type Io } from './io.ts';

/** Seconds in-flight requests get to finish after SIGTERM or SIGINT. Default 30. */
export const DEFAULT_SHUTDOWN_TIMEOUT_S = 30;

export function serveCommand(program: Command, io: Io = stdio): void {
  withNodeFlags(
    program
      .command('serve')
      .description('serve DICOMweb (STOW-RS, QIDO-RS, WADO-RS) at http://HOST:PORT/dicom-web')
      .addOption(
        new Option('--shutdown-timeout <seconds>', 'seconds requests in flight get to finish after SIGTERM or SIGINT').default(
          String(DEFAULT_SHUTDOWN_TIMEOUT_S),
          String(DEFAULT_SHUTDOWN_TIMEOUT_S),
        ),
      ),
  ).action(async (_opts: unknown, cmd: Command) => {
    const options = nodeOptionsOf(cmd);
    const timeoutS = Number(cmd.opts<{ shutdownTimeout: string }>().shutdownTimeout);
    const node = await startNode(options, undefined, { anchoring: true });
    io.err(`dicom-vault serving ${node.url} (data in ${options.dataDir})`);
    await new Promise<void>((resolve) => {
      let stopping = false;
      const stop = (signal: NodeJS.Signals): void => {
        if (stopping) {
          io.err(`dicom-vault: ${signal} again, stopping now`);
          node.app.server.closeAllConnections();
          return;
        }
        stopping = true;
        io.err(`dicom-vault stopping (${signal}): finishing requests in flight, ${timeoutS} s at most`);
        const force = setTimeout(() => {
          io.err('dicom-vault: shutdown timeout reached, breaking the connections left');
          node.app.server.closeAllConnections();
        }, Math.max(0, timeoutS) * 1000);
        force.unref();
        void node.close().then(
          () => {
            clearTimeout(force);
            resolve();
          },
          (err: unknown) => {
            io.err(`dicom-vault: error while stopping: ${err instanceof Error ? err.message : String(err)}`);
            resolve();
          },
        );
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
    io.err('dicom-vault stopped');
    process.exitCode = EXIT.OK;
  });
}
