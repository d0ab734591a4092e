import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { vcenterBody } from '../api/schemas.js';
import { vsphereConnectionTester } from '../api/vcenter-tester.js';
import { deleteVcenter, getVcenterCredentials, insertVcenter, listVcenters } from '../catalog/vcenters.js';
import { describeError, VbproxyError } from '../errors.js';
import { output, parseWith, resolveVcenter, table, withContext } from './surface-context.js';
import { UsageError } from './usage-error.js';

function readPassword(opts: { passwordFile?: string; passwordStdin?: boolean }): string {
  if ((opts.passwordFile === undefined) === (opts.passwordStdin !== true)) {
    throw new UsageError('give the password with exactly one of --password-file FILE or --password-stdin');
  }
  try {
    const raw =
      opts.passwordFile !== undefined ? readFileSync(opts.passwordFile, 'utf8') : readFileSync(0, 'utf8');
    return raw.replace(/\r?\n$/, '');
  } catch (err) {
    throw new UsageError(
      `cannot read the password from ${opts.passwordFile ?? 'stdin'}: ${(err as Error).message}`,
    );
  }
}

/** `vbproxy vcenter add|list|test|remove`. Passwords come from a file or stdin, never the command line. */
export function vcenterCommand(): Command {
  const cmd = new Command('vcenter').description('manage the vCenters this proxy backs up from');
  const tester = vsphereConnectionTester();
  cmd
    .command('add')
    .description('add a vCenter after a connection test (the password is stored encrypted)')
    .requiredOption('--name <name>', 'a short name')
    .requiredOption('--url <url>', 'the SDK URL, e.g. https://vc.example.com/sdk')
    .requiredOption('--username <user>', 'the vCenter user, e.g. backup@vsphere.local')
    .option('--password-file <file>', 'read the password from this file')
    .option('--password-stdin', 'read the password from standard input')
    .option('--thumbprint <hex>', 'the certificate thumbprint to pin')
    .option('-c, --config <file>', 'configuration file')
    .option('--json', 'JSON output')
    .action(
      async (opts: {
        name: string;
        url: string;
        username: string;
        passwordFile?: string;
        passwordStdin?: boolean;
        thumbprint?: string;
        config?: string;
        json?: boolean;
      }) => {
        const body = parseWith(
          vcenterBody,
          {
            name: opts.name,
            url: opts.url,
            username: opts.username,
            password: readPassword(opts),
            ...(opts.thumbprint === undefined ? {} : { thumbprint: opts.thumbprint }),
          },
          'vcenter add',
        );
        await withContext(opts.config, async (ctx) => {
          try {
            await tester.test({ ...body, thumbprint: body.thumbprint ?? null });
          } catch (err) {
            throw new VbproxyError(
              'VCENTER_CONNECTION_FAILED',
              `connection test failed: ${describeError(err)}`,
              {
                cause: err,
              },
            );
          }
          const v = await insertVcenter(ctx.pool, ctx.secretBox(), body);
          output(opts.json === true, v, () => `vCenter ${v.name} added (id ${v.id})`);
        });
      },
    );
  cmd
    .command('list')
    .description('list vCenters')
    .option('-c, --config <file>', 'configuration file')
    .option('--json', 'JSON output')
    .action(async (opts: { config?: string; json?: boolean }) => {
      await withContext(opts.config, async (ctx) => {
        const list = await listVcenters(ctx.pool);
        output(opts.json === true, list, () =>
          table(
            ['NAME', 'URL', 'USER', 'ID'],
            list.map((v) => [v.name, v.url, v.username, v.id]),
          ),
        );
      });
    });
  cmd
    .command('test <vcenter>')
    .description('test the stored connection to a vCenter (name or id)')
    .option('-c, --config <file>', 'configuration file')
    .option('--json', 'JSON output')
    .action(async (name: string, opts: { config?: string; json?: boolean }) => {
      await withContext(opts.config, async (ctx) => {
        const v = await resolveVcenter(ctx.pool, name);
        const r = await tester.test(await getVcenterCredentials(ctx.pool, ctx.secretBox(), v.id));
        output(opts.json === true, { ok: true, message: r.message }, () => `${v.name}: ${r.message}`);
      });
    });
  cmd
    .command('remove <vcenter>')
    .description('remove a vCenter (refused while a policy uses it)')
    .option('-c, --config <file>', 'configuration file')
    .action(async (name: string, opts: { config?: string }) => {
      await withContext(opts.config, async (ctx) => {
        const v = await resolveVcenter(ctx.pool, name);
        await deleteVcenter(ctx.pool, v.id);
        process.stdout.write(`vCenter ${v.name} removed\n`);
      });
    });
  return cmd;
}
