import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, Option } from 'commander';
import { describeError } from '../errors.js';
import { PropertyValidationError } from '../appliance/errors.js';
import { lookupServiceAccount, runFirstboot } from '../appliance/firstboot.js';
import { LAYOUT } from '../appliance/layout.js';
import type { OvfEnvSource } from '../appliance/ovf-env.js';
import { ExitCode } from './exit-codes.js';
import { UsageError } from './usage-error.js';

interface FirstbootCliOptions {
  root: string;
  source: 'auto' | 'vmtools' | 'iso' | 'file';
  ovfEnv?: string;
  iso?: string;
  force: boolean;
  apply: boolean;
}

/**
 * `vbproxy firstboot`: configures the appliance from its OVF environment. Run once by
 * vbproxy-firstboot.service. Progress goes to the journal as plain lines; the outcome (done, or
 * every bad property) also goes to every active console, so that the VM console shows it.
 */
export function firstbootCommand(): Command {
  return new Command('firstboot')
    .description(
      'configure the appliance from its OVF environment (vApp properties); run by vbproxy-firstboot.service',
    )
    .addOption(
      new Option('--source <source>', 'where to read the OVF environment')
        .choices(['auto', 'vmtools', 'iso', 'file'])
        .default('auto'),
    )
    .option('--ovf-env <file>', 'read the OVF environment from this file (implies --source file)')
    .option('--iso <image>', 'read ovf-env.xml from this ISO image or CD-ROM device (implies --source iso)')
    .option('--root <dir>', 'file system root to write into (for image builds and tests)', '/')
    .option('--force', 'run even though first boot has already completed', false)
    .option('--no-apply', 'write the files only; do not set the host name or reload the network')
    .action((o: FirstbootCliOptions) => {
      const say = (line: string): void => {
        process.stdout.write(`vbproxy firstboot: ${line}\n`);
      };
      let source: OvfEnvSource;
      if (o.ovfEnv !== undefined) source = { kind: 'file', path: o.ovfEnv };
      else if (o.iso !== undefined) source = { kind: 'iso', devices: [o.iso] };
      else if (o.source === 'file') throw new UsageError('--source file needs --ovf-env <file>');
      else source = { kind: o.source };

      if (!o.force && existsSync(join(o.root, LAYOUT.firstbootDoneFile))) {
        say(`already completed (${LAYOUT.firstbootDoneFile} exists); use --force to run again`);
        return;
      }
      const isLiveSystem = o.root === '/';
      // Files belong to the service account of the system being configured: only known on the live system.
      const serviceAccount = isLiveSystem ? lookupServiceAccount() : undefined;
      if (isLiveSystem && !serviceAccount) {
        throw new UsageError('the vbproxy service account does not exist; is this the vbproxy appliance?');
      }
      try {
        const r = runFirstboot({
          root: o.root,
          source,
          apply: o.apply && isLiveSystem,
          report: say,
          ...(serviceAccount ? { serviceAccount } : {}),
        });
        const done = `done: ${r.settings.hostname} will register with ${r.settings.manager.url}`;
        say(done);
        if (isLiveSystem) writeToConsoles(`vbproxy firstboot: ${done}\n`);
      } catch (err) {
        // One clear block in the journal and on every console, then a failed unit.
        const text = err instanceof PropertyValidationError ? err.message : describeError(err);
        const block = `FAILED: ${text}`
          .split('\n')
          .map((line) => `vbproxy firstboot: ${line}\n`)
          .join('');
        process.stderr.write(block);
        if (isLiveSystem) writeToConsoles(block);
        process.exitCode = ExitCode.failure;
      }
    });
}

/**
 * Writes `text` to every active kernel console (e.g. tty0, the VMware console, and ttyS0): the
 * unit's StandardError=journal+console reaches only the last console= of the kernel command line.
 */
function writeToConsoles(text: string): void {
  let active: string[] = [];
  try {
    active = readFileSync('/sys/class/tty/console/active', 'utf8').trim().split(/\s+/);
  } catch {
    return;
  }
  for (const name of active) {
    if (!/^[A-Za-z0-9]+$/.test(name)) continue;
    try {
      appendFileSync(`/dev/${name}`, `\r\n${text.replace(/\n/g, '\r\n')}`);
    } catch {
      // A console we cannot open is one nobody reads.
    }
  }
}
