import { Command } from 'commander';
import { version } from '../version.js';
import { registerSurfaceCommands } from './surface.js';
import { labCommand } from './lab.js';
import { registerVddkCommands } from './vddk.js';
import { firstbootCommand } from './firstboot.js';
import { repoCommand } from './repo.js';
import { workerCommand } from './worker.js';

/** Builds the `vbproxy` command tree. Each area registers its own subcommands here. */
export function buildProgram(): Command {
  const program = new Command('vbproxy')
    .description('VMware backup proxy: CBT-driven, deduplicating, encrypted VM backups')
    .version(version, '-V, --version')
    .showHelpAfterError()
    .exitOverride();
  registerSurfaceCommands(program);
  program.addCommand(labCommand());
  registerVddkCommands(program);
  program.addCommand(firstbootCommand());
  program.addCommand(repoCommand());
  program.addCommand(workerCommand());
  return program;
}
