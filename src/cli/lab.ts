import { readFileSync } from 'node:fs';
import https from 'node:https';
import { join, resolve } from 'node:path';
import tls from 'node:tls';
import { Command, InvalidArgumentError } from 'commander';
import { VbproxyError } from '../errors.js';
import { loadLabDefinition } from '../lab/definition.js';
import { startLab } from '../lab/lab.js';
import { normaliseFingerprint } from '../vsphere/transport.js';
import { UsageError } from './usage-error.js';

function intArg(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < 0)
      throw new InvalidArgumentError(`${name} must be a non-negative integer`);
    return n;
  };
}

interface Endpoint {
  url: string;
  username: string;
  fingerprint256: string;
}

/** Calls the running lab's control API (pinned to the lab's certificate, basic auth). */
async function control(dir: string, method: string, path: string, body?: Buffer): Promise<unknown> {
  const root = resolve(dir);
  let ep: Endpoint;
  let password: string;
  try {
    ep = JSON.parse(readFileSync(join(root, 'state', 'endpoint.json'), 'utf8')) as Endpoint;
    password = readFileSync(join(root, 'state', 'password'), 'utf8').trim();
  } catch {
    throw new UsageError(`${root} holds no running lab: start one with "vbproxy lab --dir ${dir}"`);
  }
  const url = new URL(path, ep.url);
  const pinned = normaliseFingerprint(ep.fingerprint256);
  return new Promise((resolvePromise, reject) => {
    const req = https.request(
      url,
      {
        method,
        rejectUnauthorized: false,
        headers: {
          Authorization: `Basic ${Buffer.from(`${ep.username}:${password}`).toString('base64')}`,
          'Content-Length': body?.length ?? 0,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          if ((res.statusCode ?? 500) >= 400) {
            reject(new VbproxyError('LAB_CONTROL', `the lab refused ${method} ${path}: ${text.trim()}`));
          } else {
            resolvePromise(text ? (JSON.parse(text) as unknown) : undefined);
          }
        });
      },
    );
    req.on('socket', (s) => {
      (s as tls.TLSSocket).once('secureConnect', () => {
        const got = normaliseFingerprint((s as tls.TLSSocket).getPeerCertificate().fingerprint256 ?? '');
        if (got !== pinned)
          req.destroy(
            new VbproxyError('LAB_CONTROL', `the server at ${ep.url} is not this lab (certificate ${got})`),
          );
      });
    });
    req.on('error', (err) =>
      reject(
        err instanceof VbproxyError
          ? err
          : new VbproxyError(
              'LAB_CONTROL',
              `cannot reach the lab at ${ep.url}: ${err.message}; is it running?`,
            ),
      ),
    );
    req.end(body);
  });
}

/** `vbproxy lab ...`: run the lab vSphere and talk to a running one. */
export function labCommand(): Command {
  const lab = new Command('lab')
    .description('Run the lab vSphere (a simulated vCenter with real CBT) on a lab directory')
    .requiredOption('--dir <dir>', 'lab root: datastores, attach records, vddk.conf, state')
    .option(
      '--definition <file>',
      'lab definition (JSON) for a new lab; default: three sample VMs and a proxy',
    )
    .option('--port <n>', 'HTTPS port (default: any free port)', intArg('--port'))
    .option('--host <address>', 'address to listen on', '127.0.0.1')
    .action(async (opts: { dir: string; definition?: string; port?: number; host: string }) => {
      const definition = opts.definition ? loadLabDefinition(opts.definition) : undefined;
      const running = await startLab({ dir: opts.dir, definition, port: opts.port, host: opts.host });
      const out = process.stdout;
      out.write(`lab vSphere listening\n`);
      out.write(`  url:          ${running.url}\n`);
      out.write(`  user:         ${running.username}\n`);
      out.write(`  password:     in ${running.passwordFile} (mode 0600)\n`);
      out.write(`  sha256:       ${running.fingerprint256}\n`);
      out.write(`  sha1 (VDDK):  ${running.thumbprintSha1}\n`);
      out.write(`  vddk.conf:    ${running.vddkConf}\n`);
      out.write(
        `  VMs:          ${running.world.vms.map((v) => `${v.name} (${v.moref}${v.proxy ? ', proxy' : ''})`).join(', ')}\n`,
      );
      await new Promise<void>((resolveStop) => {
        const stop = (): void => {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          void running.stop().then(() => resolveStop());
        };
        process.on('SIGINT', stop);
        process.on('SIGTERM', stop);
      });
      out.write('lab vSphere stopped\n');
    });

  lab
    .command('write')
    .description("Write guest data into a VM's disk (its topmost file), recorded by CBT")
    .requiredOption('--vm <name|moref>', 'the VM')
    .requiredOption('--disk <key>', 'the disk device key, e.g. 2000', intArg('--disk'))
    .requiredOption('--offset <bytes>', 'where to write', intArg('--offset'))
    .option('--file <path>', 'the data to write')
    .option('--fill <byte>', 'write this byte value (0-255) --length times', intArg('--fill'))
    .option('--length <bytes>', 'with --fill: how many bytes', intArg('--length'))
    .action(
      async (
        opts: { vm: string; disk: number; offset: number; file?: string; fill?: number; length?: number },
        cmd: Command,
      ) => {
        const dir = (cmd.parent?.opts() as { dir: string }).dir;
        let data: Buffer;
        if (opts.file !== undefined) {
          data = readFileSync(opts.file);
        } else if (opts.fill !== undefined && opts.length !== undefined) {
          if (opts.fill > 255) throw new UsageError('--fill must be a byte value (0-255)');
          data = Buffer.alloc(opts.length, opts.fill);
        } else {
          throw new UsageError('give --file, or --fill with --length');
        }
        const path = `/lab/vms/${encodeURIComponent(opts.vm)}/disks/${opts.disk}/write?offset=${opts.offset}`;
        await control(dir, 'POST', path, data);
        process.stdout.write(
          `wrote ${data.length} bytes to disk ${opts.disk} of ${opts.vm} at offset ${opts.offset}\n`,
        );
      },
    );

  lab
    .command('cbt-reset')
    .description("Reset CBT on a VM's disks (new CBT uuid: older changeIds become invalid)")
    .requiredOption('--vm <name|moref>', 'the VM')
    .action(async (opts: { vm: string }, cmd: Command) => {
      const dir = (cmd.parent?.opts() as { dir: string }).dir;
      await control(dir, 'POST', `/lab/vms/${encodeURIComponent(opts.vm)}/cbt-reset`);
      process.stdout.write(`CBT reset on ${opts.vm}\n`);
    });

  lab
    .command('fault')
    .description('Inject a fault into the running lab (JSON rule, see docs/lab.md 6.5), or clear them')
    .option(
      '--rule <json>',
      'e.g. {"method":"CreateSnapshot_Task","action":"task","fault":"ApplicationQuiesceFault"}',
    )
    .option('--clear', 'remove every injected fault')
    .action(async (opts: { rule?: string; clear?: boolean }, cmd: Command) => {
      const dir = (cmd.parent?.opts() as { dir: string }).dir;
      if (opts.clear) {
        await control(dir, 'DELETE', '/lab/faults');
        process.stdout.write('faults cleared\n');
        return;
      }
      if (!opts.rule) throw new UsageError('give --rule <json> or --clear');
      try {
        JSON.parse(opts.rule);
      } catch {
        throw new UsageError('--rule is not valid JSON');
      }
      await control(dir, 'POST', '/lab/faults', Buffer.from(opts.rule));
      process.stdout.write('fault injected\n');
    });
  return lab;
}
