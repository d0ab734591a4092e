/**
 * Child process of process-exit.test.ts: reads a disk, then ends with process.exit() without
 * Vddk.exit(), while the library's threads still exist. Arguments: <configFile> <descriptor path>.
 */
import { createLogger } from '../../src/log.js';
import { Vddk } from '../../src/vddk/index.js';

const [configFile, descriptor] = process.argv.slice(2) as [string, string];
const vddk = await Vddk.start({ configFile, logger: createLogger('exit-child', { level: 'silent' }) });
const conn = await vddk.connectLocal();
const disk = await conn.open(descriptor);
await Promise.all([0, 1, 2, 3].map((i) => disk.read(i * 65536, 65536)));
process.exit(7);
