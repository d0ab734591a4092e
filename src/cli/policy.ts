import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { createPolicy, removePolicy, replacePolicy, runPolicy } from '../api/operations.js';
import { policyBody, policyRunBody } from '../api/schemas.js';
import { listPolicies, type PolicyFields } from '../catalog/policies.js';
import {
  output,
  parseWith,
  resolvePolicy,
  resolveVcenter,
  table,
  vmResolverOf,
  withContext,
  type CliContext,
} from './surface-context.js';
import { UsageError } from './usage-error.js';

async function readPolicyFile(
  ctx: CliContext,
  file: string,
  vcenter: string | undefined,
): Promise<PolicyFields> {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new UsageError(`cannot read the policy file ${file}: ${(err as Error).message}`);
  }
  if (vcenter !== undefined && raw !== null && typeof raw === 'object') {
    (raw as Record<string, unknown>).vcenterId = (await resolveVcenter(ctx.pool, vcenter)).id;
  }
  const b = parseWith(policyBody, raw, file);
  return { ...b, repository: b.repository ?? ctx.loaded.config.repository.path };
}

function opsDeps(ctx: CliContext) {
  return { ...ctx, repositoryPath: ctx.loaded.config.repository.path };
}

/** Prints the result of a run (shared with `vbproxy backup now`). */
export function printRun(
  json: boolean,
  r: { jobs: { vmMoref: string; jobId: string; queued: boolean; reason?: string }[] },
) {
  output(json, r, () =>
    table(
      ['VM', 'JOB', 'QUEUED'],
      r.jobs.map((j) => [j.vmMoref, j.jobId, j.queued ? 'yes' : `no: ${j.reason ?? ''}`]),
    ),
  );
}

/** `vbproxy policy list|show|create|update|delete|run`. */
export function policyCommand(): Command {
  const cmd = new Command('policy').description('manage backup policies');
  const common = (c: Command) =>
    c.option('-c, --config <file>', 'configuration file').option('--json', 'JSON output');
  common(cmd.command('list').description('list policies')).action(
    async (opts: { config?: string; json?: boolean }) => {
      await withContext(opts.config, async (ctx) => {
        const list = await listPolicies(ctx.pool);
        output(opts.json === true, list, () =>
          table(
            ['NAME', 'SCHEDULE', 'CONSISTENCY', 'TRANSPORTS', 'ENABLED', 'ID'],
            list.map((p) => [
              p.name,
              p.schedule,
              p.consistency,
              p.transports.join(','),
              p.enabled ? 'yes' : 'no',
              p.id,
            ]),
          ),
        );
      });
    },
  );
  common(cmd.command('show <policy>').description('show a policy (name or id)')).action(
    async (name: string, opts: { config?: string; json?: boolean }) => {
      await withContext(opts.config, async (ctx) => {
        const p = await resolvePolicy(ctx.pool, name);
        output(true, p, () => '');
      });
    },
  );
  common(
    cmd
      .command('create')
      .description('create a policy from a JSON file (the API body of POST /api/v1/policies)')
      .requiredOption('--file <file>', 'policy JSON')
      .option('--vcenter <vcenter>', 'the vCenter (name or id), instead of vcenterId in the file'),
  ).action(async (opts: { file: string; vcenter?: string; config?: string; json?: boolean }) => {
    await withContext(opts.config, async (ctx) => {
      const p = await createPolicy(opsDeps(ctx), await readPolicyFile(ctx, opts.file, opts.vcenter));
      output(opts.json === true, p, () => `policy ${p.name} created (id ${p.id})`);
    });
  });
  common(
    cmd
      .command('update <policy>')
      .description('replace a policy with the content of a JSON file')
      .requiredOption('--file <file>', 'policy JSON')
      .option('--vcenter <vcenter>', 'the vCenter (name or id)'),
  ).action(
    async (name: string, opts: { file: string; vcenter?: string; config?: string; json?: boolean }) => {
      await withContext(opts.config, async (ctx) => {
        const current = await resolvePolicy(ctx.pool, name);
        const p = await replacePolicy(
          opsDeps(ctx),
          current.id,
          await readPolicyFile(ctx, opts.file, opts.vcenter),
        );
        output(opts.json === true, p, () => `policy ${p.name} updated`);
      });
    },
  );
  common(cmd.command('delete <policy>').description('delete a policy (restore points stay)')).action(
    async (name: string, opts: { config?: string }) => {
      await withContext(opts.config, async (ctx) => {
        const p = await resolvePolicy(ctx.pool, name);
        await removePolicy(opsDeps(ctx), p.id);
        process.stdout.write(`policy ${p.name} deleted\n`);
      });
    },
  );
  common(
    cmd
      .command('run <policy>')
      .description('run a policy now: queue a backup per VM')
      .option('--vm <moref...>', 'only these VMs'),
  ).action(async (name: string, opts: { vm?: string[]; config?: string; json?: boolean }) => {
    await withContext(opts.config, async (ctx) => {
      const p = await resolvePolicy(ctx.pool, name);
      const r = await runPolicy(
        { ...ctx, repositoryPath: ctx.loaded.config.repository.path, vmResolver: vmResolverOf(ctx) },
        p,
        parseWith(policyRunBody, { vmMorefs: opts.vm }, '--vm').vmMorefs,
        'manual',
      );
      printRun(opts.json === true, r);
    });
  });
  return cmd;
}
