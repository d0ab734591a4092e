/**
 * Child process of hotadd-crash.test.ts: opens a disk in hotadd mode, reports it, then keeps
 * reading until the parent kills it. Arguments: <configFile> <[ds] path> <thumbprint>.
 */
import { createLogger } from '../../src/log.js';
import { Vddk } from '../../src/vddk/index.js';

const [configFile, dsPath, thumbprint] = process.argv.slice(2) as [string, string, string];
const vddk = await Vddk.start({ configFile, logger: createLogger('hotadd-child', { level: 'silent' }) });
const conn = await vddk.connect({
  server: 'vcenter.lab',
  thumbprint,
  credentials: { kind: 'password', userName: 'backup', password: 'secret' },
  vmMoref: 'vm-42',
  snapshotMoref: 'snapshot-5',
  transports: ['hotadd'],
});
const disk = await conn.open(dsPath);
process.stdout.write(`ATTACHED ${disk.transport}\n`);
for (let offset = 0; ; offset = (offset + 65536) % disk.capacity) {
  const pending = disk.read(offset, 65536);
  process.stdout.write('READING\n');
  await pending;
}
