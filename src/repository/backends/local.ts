import { constants, promises as fsp } from 'node:fs';
import { syncFilesystem } from './syncfs.js';
import type { FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { NoSpaceError, RepositoryError } from '../errors.js';
import {
  ObjectNotFoundError,
  TEMP_MARK,
  type Backend,
  type ObjectInfo,
  type ObjectWriter,
} from '../backend.js';

function errno(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err
    ? String((err as { code: unknown }).code)
    : undefined;
}

/**
 * A repository in a local directory (or an NFS/SMB mount): each object is a file. Writes go to a
 * temporary name in the same directory, are fsynced, then renamed over the final name; `syncDirs`
 * fsyncs directories so that renames survive a power loss.
 */
export class LocalBackend implements Backend {
  private readonly madeDirs = new Set<string>();

  constructor(readonly location: string) {}

  private abs(path: string): string {
    return join(this.location, path);
  }

  private wrap(err: unknown, path: string, action: string): Error {
    const code = errno(err);
    if (code === 'ENOSPC' || code === 'EDQUOT') return new NoSpaceError(this.abs(path), err);
    if (code === 'ENOENT') return new ObjectNotFoundError(this.location, path, err);
    if (err instanceof RepositoryError) return err;
    return new RepositoryError(
      'REPO_IO',
      `could not ${action} ${this.abs(path)}: ${String((err as Error).message ?? err)}`,
      {
        cause: err,
        transient: code === 'EIO' || code === 'EAGAIN' || code === 'ETIMEDOUT' || code === 'ESTALE',
      },
    );
  }

  private async ensureDir(dir: string): Promise<void> {
    if (this.madeDirs.has(dir)) return;
    await fsp.mkdir(dir, { recursive: true });
    this.madeDirs.add(dir);
  }

  private tempName(path: string): string {
    return `${this.abs(path)}${TEMP_MARK}${process.pid}.${randomBytes(4).toString('hex')}`;
  }

  private async openTemp(path: string): Promise<{ fh: FileHandle; temp: string }> {
    const temp = this.tempName(path);
    await this.ensureDir(dirname(temp));
    try {
      return { fh: await fsp.open(temp, 'wx', 0o600), temp };
    } catch (err) {
      if (errno(err) !== 'ENOENT') throw err;
      this.madeDirs.delete(dirname(temp));
      await this.ensureDir(dirname(temp));
      return { fh: await fsp.open(temp, 'wx', 0o600), temp };
    }
  }

  async read(path: string): Promise<Buffer> {
    try {
      return await fsp.readFile(this.abs(path));
    } catch (err) {
      throw this.wrap(err, path, 'read');
    }
  }

  async readRange(path: string, offset: number, length: number): Promise<Buffer> {
    let fh: FileHandle | undefined;
    try {
      fh = await fsp.open(this.abs(path), 'r');
      const buf = Buffer.allocUnsafeSlow(length);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await fh.read(buf, done, length - done, offset + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      return done === length ? buf : buf.subarray(0, done);
    } catch (err) {
      throw this.wrap(err, path, 'read');
    } finally {
      await fh?.close();
    }
  }

  async stat(path: string): Promise<ObjectInfo | undefined> {
    try {
      const s = await fsp.stat(this.abs(path));
      return { size: s.size, mtimeMs: s.mtimeMs };
    } catch (err) {
      if (errno(err) === 'ENOENT') return undefined;
      throw this.wrap(err, path, 'stat');
    }
  }

  async write(path: string, data: Buffer): Promise<void> {
    let temp: string | undefined;
    try {
      const t = await this.openTemp(path);
      temp = t.temp;
      try {
        let done = 0;
        while (done < data.length) done += (await t.fh.write(data, done, data.length - done)).bytesWritten;
        await t.fh.sync();
      } finally {
        await t.fh.close();
      }
      await fsp.rename(temp, this.abs(path));
      temp = undefined;
    } catch (err) {
      if (temp) await fsp.rm(temp, { force: true }).catch(() => undefined);
      throw this.wrap(err, path, 'write');
    }
  }

  async createExclusive(path: string, data: Buffer): Promise<boolean> {
    const target = this.abs(path);
    try {
      await this.ensureDir(dirname(target));
      // Write the content under a temporary name, then link() it to the final name: link fails
      // with EEXIST when the name is taken, so the object appears complete or not at all.
      const t = await this.openTemp(path);
      try {
        await t.fh.write(data);
        await t.fh.sync();
      } finally {
        await t.fh.close();
      }
      try {
        await fsp.link(t.temp, target);
      } catch (err) {
        if (errno(err) === 'EEXIST') return false;
        throw err;
      } finally {
        await fsp.rm(t.temp, { force: true });
      }
      await this.syncDirs([dirname(path)]);
      return true;
    } catch (err) {
      throw this.wrap(err, path, 'create');
    }
  }

  async touch(path: string): Promise<boolean> {
    const now = new Date();
    try {
      await fsp.utimes(this.abs(path), now, now);
      return true;
    } catch (err) {
      if (errno(err) === 'ENOENT') return false;
      throw this.wrap(err, path, 'touch');
    }
  }

  async delete(path: string): Promise<boolean> {
    try {
      await fsp.unlink(this.abs(path));
      return true;
    } catch (err) {
      if (errno(err) === 'ENOENT') return false;
      throw this.wrap(err, path, 'delete');
    }
  }

  async deletePrefix(path: string): Promise<void> {
    await fsp.rm(this.abs(path), { recursive: true, force: true });
  }

  async list(dir: string): Promise<string[]> {
    try {
      return (await fsp.readdir(this.abs(dir))).sort();
    } catch (err) {
      if (errno(err) === 'ENOENT' || errno(err) === 'ENOTDIR') return [];
      throw this.wrap(err, dir, 'list');
    }
  }

  async writer(path: string): Promise<ObjectWriter> {
    const { fh, temp } = await this.openTemp(path).catch((err: unknown) => {
      throw this.wrap(err, path, 'create');
    });
    let length = 0;
    let closed = false;
    const fail = (err: unknown): never => {
      throw this.wrap(err, path, 'write');
    };
    return {
      get length() {
        return length;
      },
      append: async (data: Buffer) => {
        try {
          let done = 0;
          while (done < data.length) {
            done += (await fh.write(data, done, data.length - done, length + done)).bytesWritten;
          }
          length += data.length;
        } catch (err) {
          fail(err);
        }
      },
      truncate: async (len: number) => {
        await fh.truncate(len).catch(fail);
        length = len;
      },
      commit: async () => {
        try {
          await fh.sync();
          await fh.close();
          closed = true;
          await fsp.rename(temp, this.abs(path));
        } catch (err) {
          fail(err);
        }
      },
      abort: async () => {
        if (!closed) await fh.close().catch(() => undefined);
        closed = true;
        await fsp.rm(temp, { force: true });
      },
    };
  }

  async syncAll(): Promise<void> {
    try {
      await syncFilesystem(this.location);
    } catch (err) {
      throw this.wrap(err, '', 'flush (syncfs) the file system of');
    }
  }

  async syncDirs(dirs: Iterable<string>): Promise<void> {
    for (const dir of new Set(dirs)) {
      let fh: FileHandle | undefined;
      try {
        fh = await fsp.open(this.abs(dir), constants.O_RDONLY | constants.O_DIRECTORY);
        await fh.sync();
      } catch (err) {
        if (errno(err) !== 'ENOENT') throw this.wrap(err, dir, 'sync');
      } finally {
        await fh?.close();
      }
    }
  }
}
