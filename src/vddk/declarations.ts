/**
 * Every VixDiskLib struct and function vbproxy uses, declared once. The binding (`bindLibrary`) is
 * made from this table, the layout test compares the structs with the C compiler, and the lab
 * library in native/ implements the same list (native/include/vixDiskLib.h).
 *
 * Layouts are VDDK 7/8's on x86_64 Linux (LP64): see docs/vddk.md. Pointers the library allocates
 * (GetInfo, QueryAllocatedBlocks, GetErrorText) are declared as `void *` so that the binding keeps
 * the raw pointer it must hand back to the matching Free function.
 */
import koffi, { type LibraryHandle, type TypeObject } from 'koffi';
import { vddkErrorFromFailure, vixCode, VddkLibraryError, type VddkError } from './errors.js';

/** A raw pointer as koffi hands it over (an opaque external value, or a BigInt address). */
export type Pointer = unknown;
/** A VixError as koffi returns a uint64_t: a Number, or a BigInt when it does not fit in 53 bits. */
export type VixResult = number | bigint;
/** A registered callback (koffi.register's result). */
export type CallbackPointer = bigint;
/** A single-element array koffi fills for an `_Out_` parameter. */
export type OutSlot<T> = [T];

/** The struct types, created once per JS thread (koffi type names are per-thread and unique). */
export interface VddkTypes {
  readonly VixDiskLibUidPasswdCreds: TypeObject;
  readonly VixDiskLibSessionIdCreds: TypeObject;
  readonly VixDiskLibCreds: TypeObject;
  readonly VixDiskLibVStorageObjectSpec: TypeObject;
  readonly VixDiskLibSpec: TypeObject;
  readonly VixDiskLibConnectParams: TypeObject;
  readonly VixDiskLibGeometry: TypeObject;
  readonly VixDiskLibInfo: TypeObject;
  readonly VixDiskLibBlock: TypeObject;
  readonly VixDiskLibBlockList: TypeObject;
  readonly VixDiskLibGenericLogFunc: TypeObject;
  readonly VixDiskLibCompletionCB: TypeObject;
}

let types: VddkTypes | undefined;

/** The koffi struct and callback types of the VixDiskLib API (the struct half of the table). */
export function vddkTypes(): VddkTypes {
  if (types) return types;
  koffi.alias('VixError', 'uint64_t');
  koffi.alias('VixDiskLibSectorType', 'uint64_t');
  koffi.alias('Bool', 'char');
  koffi.pointer('VixDiskLibConnection', koffi.opaque('VixDiskLibConnectParam'));
  koffi.pointer('VixDiskLibHandle', koffi.opaque('VixDiskLibHandleStruct'));
  const VixDiskLibUidPasswdCreds = koffi.struct('VixDiskLibUidPasswdCreds', {
    userName: 'char *',
    password: 'char *',
  });
  const VixDiskLibSessionIdCreds = koffi.struct('VixDiskLibSessionIdCreds', {
    cookie: 'char *',
    userName: 'char *',
    key: 'char *',
  });
  const VixDiskLibCreds = koffi.union('VixDiskLibCreds', {
    uid: VixDiskLibUidPasswdCreds,
    sessionId: VixDiskLibSessionIdCreds,
    ticketId: 'void *',
  });
  const VixDiskLibVStorageObjectSpec = koffi.struct('VixDiskLibVStorageObjectSpec', {
    id: 'char *',
    datastoreMoRef: 'char *',
    ssId: 'char *',
  });
  const VixDiskLibSpec = koffi.union('VixDiskLibSpec', { vStorageObjSpec: VixDiskLibVStorageObjectSpec });
  const VixDiskLibConnectParams = koffi.struct('VixDiskLibConnectParams', {
    vmxSpec: 'char *',
    serverName: 'char *',
    thumbPrint: 'char *',
    privateUse: 'long',
    credType: 'int', // VixDiskLibCredType
    creds: VixDiskLibCreds,
    port: 'uint32_t',
    nfcHostPort: 'uint32_t',
    vimApiVer: 'char *',
    reserved: koffi.array('char', 8),
    state: 'void *',
    spec: VixDiskLibSpec,
    specType: 'int', // VixDiskLibSpecType
  });
  const VixDiskLibGeometry = koffi.struct('VixDiskLibGeometry', {
    cylinders: 'uint32_t',
    heads: 'uint32_t',
    sectors: 'uint32_t',
  });
  const VixDiskLibInfo = koffi.struct('VixDiskLibInfo', {
    biosGeo: VixDiskLibGeometry,
    physGeo: VixDiskLibGeometry,
    capacity: 'uint64_t',
    adapterType: 'int', // VixDiskLibAdapterType
    numLinks: 'int',
    parentFileNameHint: 'char *',
    uuid: 'char *',
    logicalSectorSize: 'uint32_t', // VDDK 7.0+
    physicalSectorSize: 'uint32_t', // VDDK 7.0+
  });
  const VixDiskLibBlock = koffi.struct('VixDiskLibBlock', { offset: 'uint64_t', length: 'uint64_t' });
  // A variable-length array in C: element i is at byte 8 + 16 * i.
  const VixDiskLibBlockList = koffi.struct('VixDiskLibBlockList', {
    numBlocks: 'uint32_t',
    blocks: koffi.array(VixDiskLibBlock, 1),
  });
  // va_list arrives as a pointer on x86_64 SysV; fmt stays a raw pointer for vsnprintf.
  const VixDiskLibGenericLogFunc = koffi.proto('void VixDiskLibGenericLogFunc(void *fmt, void *args)');
  const VixDiskLibCompletionCB = koffi.proto('void VixDiskLibCompletionCB(void *cbData, uint64_t result)');
  types = {
    VixDiskLibUidPasswdCreds,
    VixDiskLibSessionIdCreds,
    VixDiskLibCreds,
    VixDiskLibVStorageObjectSpec,
    VixDiskLibSpec,
    VixDiskLibConnectParams,
    VixDiskLibGeometry,
    VixDiskLibInfo,
    VixDiskLibBlock,
    VixDiskLibBlockList,
    VixDiskLibGenericLogFunc,
    VixDiskLibCompletionCB,
  };
  return types;
}

/** The struct names the layout test checks against the C compiler, with their C field names. */
export const STRUCT_FIELDS = {
  VixDiskLibConnectParams: [
    'vmxSpec',
    'serverName',
    'thumbPrint',
    'privateUse',
    'credType',
    'creds',
    'port',
    'nfcHostPort',
    'vimApiVer',
    'reserved',
    'state',
    'spec',
    'specType',
  ],
  VixDiskLibUidPasswdCreds: ['userName', 'password'],
  VixDiskLibSessionIdCreds: ['cookie', 'userName', 'key'],
  VixDiskLibVStorageObjectSpec: ['id', 'datastoreMoRef', 'ssId'],
  VixDiskLibGeometry: ['cylinders', 'heads', 'sectors'],
  VixDiskLibInfo: [
    'biosGeo',
    'physGeo',
    'capacity',
    'adapterType',
    'numLinks',
    'parentFileNameHint',
    'uuid',
    'logicalSectorSize',
    'physicalSectorSize',
  ],
  VixDiskLibBlock: ['offset', 'length'],
  VixDiskLibBlockList: ['numBlocks', 'blocks'],
} as const;

interface Declaration<F> {
  readonly prototype: string;
  /** Absent from real VDDK (lab-only); a missing optional symbol binds to undefined. */
  readonly optional?: boolean;
  /** Phantom: the TypeScript signature of the bound function. */
  readonly signature?: F;
}

function decl<F extends (...args: never[]) => unknown>(prototype: string, optional = false): Declaration<F> {
  return { prototype, optional };
}

type Params = Pointer;
type Conn = Pointer;
type Handle = Pointer;
type Sector = number | bigint;

/** The function half of the table: name -> C prototype (koffi syntax) and TypeScript signature. */
export const VDDK_FUNCTIONS = {
  VixDiskLib_InitEx: decl<
    (
      major: number,
      minor: number,
      log: CallbackPointer | null,
      warn: CallbackPointer | null,
      panic: CallbackPointer | null,
      libDir: string | null,
      configFile: string | null,
    ) => VixResult
  >(
    'VixError VixDiskLib_InitEx(uint32_t majorVersion, uint32_t minorVersion, VixDiskLibGenericLogFunc *log, ' +
      'VixDiskLibGenericLogFunc *warn, VixDiskLibGenericLogFunc *panic, const char *libDir, const char *configFile)',
  ),
  VixDiskLib_Exit: decl<() => void>('void VixDiskLib_Exit()'),
  VixDiskLib_ListTransportModes: decl<() => string>('const char *VixDiskLib_ListTransportModes()'),
  VixDiskLib_AllocateConnectParams: decl<() => Params>('void *VixDiskLib_AllocateConnectParams()'),
  VixDiskLib_FreeConnectParams: decl<(params: Params) => void>(
    'void VixDiskLib_FreeConnectParams(void *params)',
  ),
  VixDiskLib_PrepareForAccess: decl<(params: Params, identity: string) => VixResult>(
    'VixError VixDiskLib_PrepareForAccess(void *connectParams, const char *identity)',
  ),
  VixDiskLib_EndAccess: decl<(params: Params, identity: string) => VixResult>(
    'VixError VixDiskLib_EndAccess(void *connectParams, const char *identity)',
  ),
  VixDiskLib_Cleanup: decl<
    (params: Params, cleaned: OutSlot<number>, remaining: OutSlot<number>) => VixResult
  >(
    'VixError VixDiskLib_Cleanup(void *connectParams, _Out_ uint32_t *numCleanedUp, _Out_ uint32_t *numRemaining)',
  ),
  VixDiskLib_ConnectEx: decl<
    (
      params: Params | null,
      readOnly: number,
      snapshotRef: string | null,
      transportModes: string | null,
      connection: OutSlot<Conn | null>,
    ) => VixResult
  >(
    'VixError VixDiskLib_ConnectEx(void *connectParams, Bool readOnly, const char *snapshotRef, ' +
      'const char *transportModes, _Out_ VixDiskLibConnection *connection)',
  ),
  VixDiskLib_Disconnect: decl<(connection: Conn) => VixResult>(
    'VixError VixDiskLib_Disconnect(VixDiskLibConnection connection)',
  ),
  VixDiskLib_Open: decl<
    (connection: Conn, path: string, flags: number, handle: OutSlot<Handle | null>) => VixResult
  >(
    'VixError VixDiskLib_Open(VixDiskLibConnection connection, const char *path, uint32_t flags, ' +
      '_Out_ VixDiskLibHandle *diskHandle)',
  ),
  VixDiskLib_Close: decl<(handle: Handle) => VixResult>(
    'VixError VixDiskLib_Close(VixDiskLibHandle diskHandle)',
  ),
  VixDiskLib_GetTransportMode: decl<(handle: Handle) => string | null>(
    'const char *VixDiskLib_GetTransportMode(VixDiskLibHandle diskHandle)',
  ),
  VixDiskLib_GetInfo: decl<(handle: Handle, info: OutSlot<Pointer | null>) => VixResult>(
    'VixError VixDiskLib_GetInfo(VixDiskLibHandle diskHandle, _Out_ void **info)',
  ),
  VixDiskLib_FreeInfo: decl<(info: Pointer) => void>('void VixDiskLib_FreeInfo(void *info)'),
  VixDiskLib_Read: decl<(handle: Handle, start: Sector, count: Sector, buffer: Pointer) => VixResult>(
    'VixError VixDiskLib_Read(VixDiskLibHandle diskHandle, VixDiskLibSectorType startSector, ' +
      'VixDiskLibSectorType numSectors, void *readBuffer)',
  ),
  VixDiskLib_Write: decl<(handle: Handle, start: Sector, count: Sector, buffer: Pointer) => VixResult>(
    'VixError VixDiskLib_Write(VixDiskLibHandle diskHandle, VixDiskLibSectorType startSector, ' +
      'VixDiskLibSectorType numSectors, void *writeBuffer)',
  ),
  VixDiskLib_ReadAsync: decl<
    (
      handle: Handle,
      start: Sector,
      count: Sector,
      buffer: Pointer,
      cb: CallbackPointer,
      cbData: number,
    ) => VixResult
  >(
    'VixError VixDiskLib_ReadAsync(VixDiskLibHandle diskHandle, VixDiskLibSectorType startSector, ' +
      'VixDiskLibSectorType numSectors, void *readBuffer, VixDiskLibCompletionCB *callback, void *cbData)',
  ),
  VixDiskLib_WriteAsync: decl<
    (
      handle: Handle,
      start: Sector,
      count: Sector,
      buffer: Pointer,
      cb: CallbackPointer,
      cbData: number,
    ) => VixResult
  >(
    'VixError VixDiskLib_WriteAsync(VixDiskLibHandle diskHandle, VixDiskLibSectorType startSector, ' +
      'VixDiskLibSectorType numSectors, void *writeBuffer, VixDiskLibCompletionCB *callback, void *cbData)',
  ),
  VixDiskLib_Wait: decl<(handle: Handle) => VixResult>(
    'VixError VixDiskLib_Wait(VixDiskLibHandle diskHandle)',
  ),
  VixDiskLib_Flush: decl<(handle: Handle) => VixResult>(
    'VixError VixDiskLib_Flush(VixDiskLibHandle diskHandle)',
  ),
  VixDiskLib_QueryAllocatedBlocks: decl<
    (handle: Handle, start: Sector, count: Sector, chunk: Sector, list: OutSlot<Pointer | null>) => VixResult
  >(
    'VixError VixDiskLib_QueryAllocatedBlocks(VixDiskLibHandle diskHandle, VixDiskLibSectorType startSector, ' +
      'VixDiskLibSectorType numSectors, VixDiskLibSectorType chunkSize, _Out_ void **blockList)',
  ),
  VixDiskLib_FreeBlockList: decl<(list: Pointer) => VixResult>(
    'VixError VixDiskLib_FreeBlockList(void *blockList)',
  ),
  VixDiskLib_GetMetadataKeys: decl<
    (handle: Handle, keys: Buffer | null, maxLen: number, required: OutSlot<number>) => VixResult
  >(
    'VixError VixDiskLib_GetMetadataKeys(VixDiskLibHandle diskHandle, void *keys, size_t maxLen, ' +
      '_Out_ size_t *requiredLen)',
  ),
  VixDiskLib_ReadMetadata: decl<
    (handle: Handle, key: string, buf: Buffer | null, bufLen: number, required: OutSlot<number>) => VixResult
  >(
    'VixError VixDiskLib_ReadMetadata(VixDiskLibHandle diskHandle, const char *key, void *buf, size_t bufLen, ' +
      '_Out_ size_t *requiredLen)',
  ),
  VixDiskLib_GetErrorText: decl<(err: VixResult, locale: null) => Pointer | null>(
    'void *VixDiskLib_GetErrorText(VixError err, const char *locale)',
  ),
  VixDiskLib_FreeErrorText: decl<(text: Pointer | null) => void>(
    'void VixDiskLib_FreeErrorText(void *errMsg)',
  ),
  VixDiskLibLab_Identify: decl<() => string>('const char *VixDiskLibLab_Identify()', true),
} as const;

type Signature<D> = D extends Declaration<infer F> ? F : never;
type Bound<F> = F extends (...args: infer A) => infer R
  ? ((...args: A) => R) & { async: (...args: [...A, (err: unknown, result: R) => void]) => void }
  : never;

export type VddkFunctionName = keyof typeof VDDK_FUNCTIONS;
/** The library as bound: one typed function per declaration (optional ones may be undefined). */
export type VddkFunctions = {
  [K in VddkFunctionName as (typeof VDDK_FUNCTIONS)[K] extends { optional: true } ? never : K]: Bound<
    Signature<(typeof VDDK_FUNCTIONS)[K]>
  >;
} & {
  VixDiskLibLab_Identify?: Bound<Signature<(typeof VDDK_FUNCTIONS)['VixDiskLibLab_Identify']>>;
};

export interface BoundLibrary {
  readonly path: string;
  readonly fn: VddkFunctions;
  readonly types: VddkTypes;
  unload(): void;
}

const loadHint =
  'set VBPROXY_VDDK_LIBDIR (or --libdir) to the VDDK distribution (the directory holding lib64/), ' +
  "and start the process with that lib64 directory in LD_LIBRARY_PATH so VDDK's own libraries load";

/**
 * Loads the library at `path` and binds every declared function. A library that does not load, or
 * lacks a required symbol, gives a VddkLibraryError naming the file, the symbol and what to set.
 */
export function bindLibrary(path: string): BoundLibrary {
  const t = vddkTypes();
  let lib: LibraryHandle;
  try {
    lib = koffi.load(path);
  } catch (cause) {
    throw new VddkLibraryError(
      'VDDK_LIBRARY_LOAD',
      `cannot load the VDDK library ${path}: ${(cause as Error).message}; ${loadHint}`,
      { cause },
    );
  }
  const fn: Record<string, unknown> = {};
  for (const [name, d] of Object.entries(VDDK_FUNCTIONS) as [string, Declaration<unknown>][]) {
    try {
      fn[name] = lib.func(d.prototype);
    } catch (cause) {
      if (d.optional) continue;
      lib.unload();
      throw new VddkLibraryError(
        'VDDK_SYMBOL_MISSING',
        `the VDDK library ${path} has no symbol ${name} (vbproxy needs VDDK 7.0 or later); ${loadHint}`,
        { cause },
      );
    }
  }
  return { path, fn: fn as VddkFunctions, types: t, unload: () => lib.unload() };
}

/** VDDK's text for a VixError (GetErrorText, then FreeErrorText). */
export function libraryErrorText(lib: BoundLibrary, raw: VixResult): string {
  const ptr = lib.fn.VixDiskLib_GetErrorText(raw, null);
  if (ptr === null) return `VixError ${vixCode(raw)}`;
  try {
    return koffi.decode.string(ptr);
  } finally {
    lib.fn.VixDiskLib_FreeErrorText(ptr);
  }
}

/** The typed error for a raw VixError result of `operation` (for code that calls the library directly). */
export function resultError(
  lib: BoundLibrary,
  operation: string,
  raw: VixResult,
  object?: string,
  detail?: string,
): VddkError {
  return vddkErrorFromFailure({
    code: vixCode(raw),
    operation,
    text: libraryErrorText(lib, raw),
    object,
    detail,
  });
}
