import { Command } from 'commander';
import { startRestore } from '../api/operations.js';
import { restoreBody } from '../api/schemas.js';
import { output, parseWith, resolveVcenter, withContext } from './surface-context.js';
import { UsageError } from './usage-error.js';

/** `vbproxy restore`: queue a restore of a restore point to raw files, an existing VM or a new VM. */
export function restoreCommand(): Command {
  return new Command('restore')
    .description(
      'restore a restore point: --to-dir DIR (raw images), --to-vm MOREF or --new-vm NAME (with --vcenter)',
    )
    .requiredOption('--point <id>', 'the restore point id (see the API or jobs output)')
    .option('--to-dir <dir>', 'write each disk as a raw image file in this directory on the proxy')
    .option('--to-vm <moref>', 'write into the disks of this existing, powered-off VM')
    .option('--new-vm <name>', 'create a new VM from the configuration in the restore point')
    .option('--vcenter <vcenter>', 'the vCenter for --to-vm/--new-vm (name or id)')
    .option('--datastore <name>', 'datastore for --new-vm')
    .option('--disk <key...>', 'only these disk keys')
    .option('-c, --config <file>', 'configuration file')
    .option('--json', 'JSON output')
    .action(
      async (opts: {
        point: string;
        toDir?: string;
        toVm?: string;
        newVm?: string;
        vcenter?: string;
        datastore?: string;
        disk?: string[];
        config?: string;
        json?: boolean;
      }) => {
        const targets = [opts.toDir, opts.toVm, opts.newVm].filter((t) => t !== undefined).length;
        if (targets !== 1) throw new UsageError('give exactly one of --to-dir, --to-vm or --new-vm');
        if (opts.toDir === undefined && opts.vcenter === undefined) {
          throw new UsageError('--to-vm and --new-vm need --vcenter');
        }
        const diskKeys = opts.disk?.map((d) => Number(d));
        await withContext(opts.config, async (ctx) => {
          const vcenterId =
            opts.vcenter === undefined ? undefined : (await resolveVcenter(ctx.pool, opts.vcenter)).id;
          const target =
            opts.toDir !== undefined
              ? { kind: 'file', directory: opts.toDir, diskKeys }
              : opts.toVm !== undefined
                ? { kind: 'vm', vcenterId, vmMoref: opts.toVm, diskKeys }
                : { kind: 'new-vm', vcenterId, name: opts.newVm, datastore: opts.datastore };
          const body = parseWith(restoreBody, { restorePointId: opts.point, target }, 'restore');
          const jobId = await startRestore(
            { ...ctx, repositoryPath: ctx.loaded.config.repository.path },
            body.restorePointId,
            body.target,
            'manual',
          );
          output(
            opts.json === true,
            { jobId },
            () => `restore queued as job ${jobId} (follow it: vbproxy jobs watch ${jobId})`,
          );
        });
      },
    );
}
