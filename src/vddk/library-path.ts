import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { VddkLibraryError } from './errors.js';

/** The lab VDDK built by `make -C native` (a VDDK-like distribution directory). */
export const LAB_LIBDIR = resolve(dirname(fileURLToPath(import.meta.url)), '../../../native');

/** VDDK 7 and 8 sonames; 6.x is refused (its VixDiskLibInfo is 8 bytes shorter). */
const SONAMES = ['libvixDiskLib.so.8', 'libvixDiskLib.so.7'];

export interface LocatedLibrary {
  /** The file to load. */
  readonly libraryPath: string;
  /** The distribution directory (the one holding lib64/), passed to InitEx as libDir. */
  readonly libDir: string;
}

/**
 * Finds libvixDiskLib: an explicit file, else `<libDir>/lib64/libvixDiskLib.so.{8,7}` where libDir is
 * the option, else VBPROXY_VDDK_LIBDIR, else the lab library in native/.
 */
export function locateLibrary(options: { libraryPath?: string; libDir?: string } = {}): LocatedLibrary {
  if (options.libraryPath) {
    const libraryPath = resolve(options.libraryPath);
    if (!existsSync(libraryPath)) {
      throw new VddkLibraryError('VDDK_LIBRARY_MISSING', `the VDDK library ${libraryPath} does not exist`);
    }
    const dir = dirname(libraryPath);
    return { libraryPath, libDir: dir.endsWith('/lib64') ? dirname(dir) : dir };
  }
  const fromEnv = process.env.VBPROXY_VDDK_LIBDIR;
  const libDir = resolve(options.libDir ?? (fromEnv && fromEnv.length > 0 ? fromEnv : LAB_LIBDIR));
  const candidates = [join(libDir, 'lib64'), libDir];
  for (const dir of candidates) {
    for (const name of SONAMES) {
      const p = join(dir, name);
      if (existsSync(p)) return { libraryPath: p, libDir: dir.endsWith('/lib64') ? dirname(dir) : dir };
    }
  }
  const isLab = libDir === LAB_LIBDIR;
  throw new VddkLibraryError(
    'VDDK_LIBRARY_MISSING',
    `no ${SONAMES.join(' or ')} under ${libDir}/lib64: ` +
      (isLab
        ? 'the lab VDDK is not built; run "npm run build" (make -C native)'
        : 'set VBPROXY_VDDK_LIBDIR (or --libdir) to the vmware-vix-disklib-distrib directory of VDDK 7 or 8, ' +
          'and start vbproxy with its lib64 directory in LD_LIBRARY_PATH'),
  );
}

/** True when `dir` is on LD_LIBRARY_PATH (VDDK's bundled libraries are only found that way). */
export function onLibraryPath(dir: string): boolean {
  return (process.env.LD_LIBRARY_PATH ?? '')
    .split(':')
    .filter(Boolean)
    .some((d) => resolve(d) === resolve(dir));
}
