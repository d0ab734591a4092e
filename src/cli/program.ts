import { Command } from 'commander';
import { version } from '../version.js';

type Register = (program: Command) => void;

/**
 * The command groups of `vbproxy`, each with the top-level command names it registers. A group's
 * modules (and so their dependencies: Express, pg, BullMQ, node-soap, koffi, ...) are imported only
 * when one of its commands runs, so that every invocation pays only for what it uses.
 */
const groups: ReadonlyArray<{
  readonly commands: readonly string[];
  load(args: readonly string[]): Promise<Register>;
}> = [
  {
    commands: ['api', 'status', 'register', 'vcenter', 'policy', 'jobs', 'backup', 'restore'],
    load: async () => (await import('./surface.js')).registerSurfaceCommands,
  },
  {
    commands: ['lab'],
    load: async () => {
      const { labCommand } = await import('./lab.js');
      return (program) => program.addCommand(labCommand());
    },
  },
  {
    commands: ['vddk'],
    load: async () => (await import('./vddk.js')).registerVddkCommands,
  },
  {
    commands: ['firstboot'],
    load: async () => {
      const { firstbootCommand } = await import('./firstboot.js');
      return (program) => program.addCommand(firstbootCommand());
    },
  },
  {
    commands: ['repo'],
    load: async (args) => {
      // The passphrase's key derivation starts while repo.js and its imports load.
      (await import('./repo-ahead.js')).startAhead(args);
      const { repoCommand } = await import('./repo.js');
      return (program) => program.addCommand(repoCommand());
    },
  },
  {
    commands: ['worker'],
    load: async () => {
      const { workerCommand } = await import('./worker.js');
      return (program) => program.addCommand(workerCommand());
    },
  },
];

/**
 * Builds the `vbproxy` command tree for `args` (the arguments after the script). Only the group
 * of the command named in `args` is loaded (none for `--version`); help, or a command no group
 * knows, loads them all, so that help lists everything and an unknown command is reported
 * against the full list.
 */
export async function buildProgram(args: readonly string[] = process.argv.slice(2)): Promise<Command> {
  const program = new Command('vbproxy')
    .description('VMware backup proxy: CBT-driven, deduplicating, encrypted VM backups')
    .version(version, '-V, --version')
    .showHelpAfterError()
    .exitOverride();
  const first = args.find((a) => !a.startsWith('-'));
  const named = groups.filter((g) => first !== undefined && g.commands.includes(first));
  const versionOnly = args.length > 0 && args.every((a) => a === '-V' || a === '--version');
  const wanted = named.length > 0 ? named : versionOnly ? [] : groups;
  for (const group of wanted) (await group.load(args))(program);
  return program;
}
