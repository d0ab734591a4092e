import koffi from 'koffi';
import { constants, promises as fsp } from 'node:fs';

type SyncfsFn = ReturnType<ReturnType<typeof koffi.load>['func']>;
let syncfs: SyncfsFn | undefined;

function libcSyncfs(): SyncfsFn {
  if (!syncfs) syncfs = koffi.load('libc.so.6').func('int syncfs(int fd)');
  return syncfs;
}

/**
 * Flushes the whole file system that holds `dir` (Linux `syncfs(2)`): every file's data and every
 * directory entry written so far become durable in one call, instead of one fsync per chunk
 * object. The call runs on libuv's thread pool, so the event loop does not wait on the disk.
 * On NFS this commits the client's dirty pages to the server.
 */
export async function syncFilesystem(dir: string): Promise<void> {
  const fn = libcSyncfs();
  const fh = await fsp.open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    const rc = await new Promise<number>((resolve, reject) => {
      fn.async(fh.fd, (err: unknown, res: number) => (err ? reject(err) : resolve(res)));
    });
    if (rc !== 0) throw Object.assign(new Error(`syncfs failed on ${dir}`), { code: 'EIO' });
  } finally {
    await fh.close();
  }
}
