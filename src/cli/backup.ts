import { Command } from 'commander';
import { runPolicy } from '../api/operations.js';
import { policyRunBody } from '../api/schemas.js';
import { printRun } from './policy.js';
import { parseWith, resolvePolicy, vmResolverOf, withContext } from './surface-context.js';

/** `vbproxy backup now`: queue backups under a policy immediately. */
export function backupCommand(): Command {
  const cmd = new Command('backup').description('start backups');
  cmd
    .command('now')
    .description("queue a backup now under a policy (its VMs, or only --vm), using the policy's settings")
    .requiredOption('--policy <policy>', 'policy name or id')
    .option('--vm <moref...>', 'only these VMs (e.g. vm-42)')
    .option('-c, --config <file>', 'configuration file')
    .option('--json', 'JSON output')
    .action(async (opts: { policy: string; vm?: string[]; config?: string; json?: boolean }) => {
      const vms = parseWith(policyRunBody, { vmMorefs: opts.vm }, '--vm').vmMorefs;
      await withContext(opts.config, async (ctx) => {
        const p = await resolvePolicy(ctx.pool, opts.policy);
        const r = await runPolicy(
          { ...ctx, repositoryPath: ctx.loaded.config.repository.path, vmResolver: vmResolverOf(ctx) },
          p,
          vms,
          'manual',
        );
        printRun(opts.json === true, r);
      });
    });
  return cmd;
}
