import { Command } from 'commander';
import { optionalSecret } from '../api/server.js';
import { openCatalog, type Pool } from '../catalog/db.js';
import { SecretBox } from '../catalog/secret-box.js';
import { loadConfig, readSecretFile } from '../config/load.js';
import { describeError } from '../errors.js';
import { createLogger } from '../log.js';
import { vsphereInventory } from '../manager/inventory.js';
import { createProxyAgent } from '../manager/proxy-agent.js';
import { output } from './surface-context.js';
import { UsageError } from './usage-error.js';

/** `vbproxy register`: one registration with the manager now (the API process keeps it alive after). */
export function registerCommand(): Command {
  return new Command('register')
    .description(
      'register this proxy with the manager using the enrollment token file, and store the credentials (0600)',
    )
    .option('-c, --config <file>', 'configuration file')
    .option('--json', 'JSON output')
    .action(async (opts: { config?: string; json?: boolean }) => {
      const loaded = loadConfig(opts.config);
      if (loaded.config.manager === undefined) {
        throw new UsageError(
          `${loaded.path} has no "manager" section (url, enrollmentTokenFile, credentialsFile)`,
        );
      }
      const logger = createLogger('vbproxy', { level: 'warn' });
      // The hosts and datastores come from the catalog's vCenters; without the catalog the
      // registration goes on with empty lists (it must never be blocked by the inventory).
      let pool: Pool | undefined;
      try {
        pool = await openCatalog(loaded.config.database.url, {
          max: 1,
          password: optionalSecret(loaded, 'database.passwordFile'),
        });
      } catch (err) {
        logger.warn(
          `the catalog is not reachable (${describeError(err)}): registering without hosts and datastores`,
        );
      }
      try {
        const agent = createProxyAgent(loaded, {
          logger,
          ...(pool === undefined
            ? {}
            : {
                inventory: vsphereInventory({
                  pool,
                  secretBox: () =>
                    SecretBox.fromKeyFile(
                      readSecretFile(loaded, 'catalog.secretKeyFile'),
                      loaded.config.catalog.secretKeyFile,
                    ),
                  proxyVmMoref: loaded.config.proxy.vmMoref ?? null,
                  logger,
                }),
              }),
        });
        const creds = await agent.registerOnce();
        output(
          opts.json === true,
          { proxyId: creds.proxyId, manager: creds.managerUrl },
          () =>
            `registered with ${creds.managerUrl} as proxy ${creds.proxyId}; credentials in ${loaded.config.manager!.credentialsFile}`,
        );
      } finally {
        await pool?.end();
      }
    });
}
