import { Command, Option } from 'commander';
import { createToken, readTokensFile, revokeToken, SCOPES, type Scope } from '../api/auth.js';
import { startApi } from '../api/server.js';
import { loadConfig } from '../config/load.js';
import { createLogger } from '../log.js';
import { vsphereInventory } from '../manager/inventory.js';
import { createProxyAgent } from '../manager/proxy-agent.js';
import type { RegistrationAgent } from '../manager/agent.js';
import type { Redis } from 'ioredis';
import { output, table } from './surface-context.js';
import { UsageError } from './usage-error.js';

/** `vbproxy api`: the REST API server, and `vbproxy api token ...` to manage its bearer tokens. */
export function apiCommand(): Command {
  const api = new Command('api')
    .description('run the REST API (and the manager registration), or manage API tokens')
    .option(
      '-c, --config <file>',
      'configuration file (default: $VBPROXY_CONFIG or /etc/vbproxy/config.json)',
    )
    .action(async (opts: { config?: string }) => {
      const loaded = loadConfig(opts.config);
      const logger = createLogger('vbproxy-api', {
        level: process.env.VBPROXY_LOG_LEVEL ?? loaded.config.logLevel,
      });
      let agent: RegistrationAgent | undefined;
      const running = await startApi(loaded, {
        logger,
        registration: () => {
          const s = agent?.status();
          return s === undefined
            ? { state: 'not-configured', proxyId: null }
            : { state: s.state, proxyId: s.proxyId };
        },
      });
      if (loaded.config.manager !== undefined) {
        agent = createProxyAgent(loaded, {
          pool: running.pool,
          logger,
          apiUrl: running.url,
          inventory: vsphereInventory({
            pool: running.pool,
            secretBox: () => running.secretBox,
            proxyVmMoref: loaded.config.proxy.vmMoref ?? null,
            logger,
          }),
          redisOk: async () =>
            ((await running.queues.backup.client) as unknown as Redis).ping().then(
              () => true,
              () => false,
            ),
        });
        agent.start();
      }
      process.stdout.write(`vbproxy API listening on ${running.url}\n`);
      await new Promise<void>((resolve) => {
        const stop = () => resolve();
        process.once('SIGTERM', stop);
        process.once('SIGINT', stop);
      });
      logger.info('stopping');
      await agent?.stop();
      await running.close();
    });

  const token = new Command('token').description(
    'manage API bearer tokens (stored as SHA-256 hashes in api.tokensFile)',
  );
  token
    .command('create')
    .description('create a token and print it once')
    .requiredOption('--name <name>', 'a name for the token (who uses it)')
    .addOption(new Option('--scope <scope>', 'read < operate < admin').choices(SCOPES).default('read'))
    .option('-c, --config <file>', 'configuration file')
    .option('--json', 'JSON output')
    .action((_opts: unknown, cmd: Command) => {
      const opts = cmd.optsWithGlobals<{ name: string; scope: Scope; config?: string; json?: boolean }>();
      const loaded = loadConfig(opts.config);
      const t = createToken(loaded.config.api.tokensFile, opts.name, [opts.scope]);
      output(opts.json === true, { name: opts.name, scope: opts.scope, token: t }, () => t);
    });
  token
    .command('list')
    .description('list token names and scopes (never the tokens)')
    .option('-c, --config <file>', 'configuration file')
    .option('--json', 'JSON output')
    .action((_opts: unknown, cmd: Command) => {
      const opts = cmd.optsWithGlobals<{ config?: string; json?: boolean }>();
      const loaded = loadConfig(opts.config);
      const tokens = readTokensFile(loaded.config.api.tokensFile).tokens.map((t) => ({
        name: t.name,
        scopes: t.scopes,
        createdAt: t.createdAt ?? null,
      }));
      output(opts.json === true, tokens, () =>
        table(
          ['NAME', 'SCOPES', 'CREATED'],
          tokens.map((t) => [t.name, t.scopes.join(','), t.createdAt]),
        ),
      );
    });
  token
    .command('revoke')
    .description('remove a token by name')
    .requiredOption('--name <name>', 'the token name')
    .option('-c, --config <file>', 'configuration file')
    .action((_opts: unknown, cmd: Command) => {
      const opts = cmd.optsWithGlobals<{ name: string; config?: string }>();
      const loaded = loadConfig(opts.config);
      if (!revokeToken(loaded.config.api.tokensFile, opts.name)) {
        throw new UsageError(`no token named "${opts.name}"`);
      }
      process.stdout.write(`token "${opts.name}" revoked\n`);
    });
  api.addCommand(token);
  return api;
}
