import type { Command } from 'commander';
import { createLogger } from '../log.js';
import { Vddk } from '../vddk/index.js';

/** `vbproxy vddk ...`: the VDDK library this proxy uses. */
export function registerVddkCommands(program: Command): void {
  const vddk = program.command('vddk').description('the VDDK library (libvixDiskLib) used for disk access');
  vddk
    .command('info')
    .description(
      'load and initialise VDDK, then print its version, transport modes and whether it is the lab library',
    )
    .option(
      '--libdir <dir>',
      'VDDK distribution directory holding lib64/ (default: VBPROXY_VDDK_LIBDIR, else the lab VDDK)',
    )
    .option('--config <file>', 'VDDK configuration file passed to InitEx (default: VBPROXY_VDDK_CONFIG)')
    .option('--json', 'print JSON')
    .action(async (opts: { libdir?: string; config?: string; json?: boolean }) => {
      const lib = await Vddk.start({
        libDir: opts.libdir,
        configFile: opts.config,
        logger: createLogger('vddk', { level: process.env.VBPROXY_LOG_LEVEL ?? 'warn' }),
      });
      try {
        const id = lib.identity;
        const info = {
          library: id.libraryPath,
          version: id.version,
          lab: id.labIdentity !== null,
          identity: id.labIdentity ?? 'VMware VDDK',
          transports: id.transports,
        };
        if (opts.json) {
          process.stdout.write(`${JSON.stringify(info, null, 2)}\n`);
        } else {
          process.stdout.write(
            `library:    ${info.library}\n` +
              `version:    ${info.version}\n` +
              `kind:       ${info.lab ? `lab library (${info.identity})` : 'VMware VDDK'}\n` +
              `transports: ${info.transports.join(', ')}\n`,
          );
        }
      } finally {
        await lib.exit();
      }
    });
}
