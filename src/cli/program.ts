import { Command } from 'commander';
import { version } from '../version.js';
import { firstbootCommand } from './firstboot.js';

/** Builds the `vbproxy` command tree. Each area registers its own subcommands here. */
export function buildProgram(): Command {
  const program = new Command('vbproxy')
    .description('VMware backup proxy: CBT-driven, deduplicating, encrypted VM backups')
    .version(version, '-V, --version')
    .showHelpAfterError()
    .exitOverride();
  program.addCommand(firstbootCommand());
  return program;
}
