import { Command } from 'commander';
import { loadConfig } from '../config/load.js';
import { createLogger } from '../log.js';
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
      const agent = createProxyAgent(loaded, { logger: createLogger('vbproxy', { level: 'warn' }) });
      const creds = await agent.registerOnce();
      output(
        opts.json === true,
        { proxyId: creds.proxyId, manager: creds.managerUrl },
        () =>
          `registered with ${creds.managerUrl} as proxy ${creds.proxyId}; credentials in ${loaded.config.manager!.credentialsFile}`,
      );
    });
}
