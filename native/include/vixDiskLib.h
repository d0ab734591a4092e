/*
 * vixDiskLib.h - the part of VMware's VixDiskLib C API that vbproxy uses, with VDDK 7/8 layouts
 * (x86_64 Linux, LP64). Written for vbproxy's lab VDDK from the public layout description in
 * docs/vddk.md; it is not VMware's header. The koffi declarations in src/vddk/declarations.ts
 * must match it (test/vddk/layout.test.ts compares both).
 */
#ifndef VBPROXY_LAB_VIXDISKLIB_H
#define VBPROXY_LAB_VIXDISKLIB_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef uint64_t VixError;
typedef uint64_t VixDiskLibSectorType;
typedef char Bool;

#define VIX_OK 0
#define VIX_ASYNC 25000
#define VIX_ERROR_CODE(err) ((err) & 0xFFFF)
#define VIXDISKLIB_SECTOR_SIZE 512
#define VIXDISKLIB_MIN_CHUNK_SIZE 128
#define VIXDISKLIB_MAX_CHUNK_NUMBER (512 * 1024)

#define VIXDISKLIB_FLAG_OPEN_UNBUFFERED (1 << 0)
#define VIXDISKLIB_FLAG_OPEN_SINGLE_LINK (1 << 1)
#define VIXDISKLIB_FLAG_OPEN_READ_ONLY (1 << 2)
#define VIXDISKLIB_FLAG_OPEN_COMPRESSION_ZLIB (1 << 4)
#define VIXDISKLIB_FLAG_OPEN_COMPRESSION_FASTLZ (1 << 5)
#define VIXDISKLIB_FLAG_OPEN_COMPRESSION_SKIPZ (1 << 6)

typedef enum {
  VIXDISKLIB_CRED_UID = 1,
  VIXDISKLIB_CRED_SESSIONID = 2,
  VIXDISKLIB_CRED_TICKETID = 3,
  VIXDISKLIB_CRED_SSPI = 4,
  VIXDISKLIB_CRED_UNKNOWN = 256
} VixDiskLibCredType;

typedef enum {
  VIXDISKLIB_SPEC_VMX = 0,
  VIXDISKLIB_SPEC_VSTORAGE_OBJECT = 1,
  VIXDISKLIB_SPEC_UNKNOWN = 2
} VixDiskLibSpecType;

typedef enum {
  VIXDISKLIB_ADAPTER_IDE = 1,
  VIXDISKLIB_ADAPTER_SCSI_BUSLOGIC = 2,
  VIXDISKLIB_ADAPTER_SCSI_LSILOGIC = 3,
  VIXDISKLIB_ADAPTER_UNKNOWN = 256
} VixDiskLibAdapterType;

typedef struct {
  char *userName;
  char *password;
} VixDiskLibUidPasswdCreds;

typedef struct {
  char *cookie;
  char *userName;
  char *key;
} VixDiskLibSessionIdCreds;

typedef struct {
  char *id;
  char *datastoreMoRef;
  char *ssId;
} VixDiskLibVStorageObjectSpec;

typedef struct VixDiskLibConnectParamsState VixDiskLibConnectParamsState;

typedef struct {
  char *vmxSpec;
  char *serverName;
  char *thumbPrint;
  long privateUse;
  VixDiskLibCredType credType;
  union {
    VixDiskLibUidPasswdCreds uid;
    VixDiskLibSessionIdCreds sessionId;
    void *ticketId;
  } creds;
  uint32_t port;
  uint32_t nfcHostPort;
  char *vimApiVer;
  char reserved[8];
  VixDiskLibConnectParamsState *state;
  union {
    VixDiskLibVStorageObjectSpec vStorageObjSpec;
  } spec;
  VixDiskLibSpecType specType;
} VixDiskLibConnectParams;

typedef struct {
  uint32_t cylinders;
  uint32_t heads;
  uint32_t sectors;
} VixDiskLibGeometry;

typedef struct {
  VixDiskLibGeometry biosGeo;
  VixDiskLibGeometry physGeo;
  VixDiskLibSectorType capacity;
  VixDiskLibAdapterType adapterType;
  int numLinks;
  char *parentFileNameHint;
  char *uuid;
  uint32_t logicalSectorSize;
  uint32_t physicalSectorSize;
} VixDiskLibInfo;

typedef struct {
  VixDiskLibSectorType offset;
  VixDiskLibSectorType length;
} VixDiskLibBlock;

typedef struct {
  uint32_t numBlocks;
  VixDiskLibBlock blocks[1];
} VixDiskLibBlockList;

typedef struct VixDiskLibConnectParam *VixDiskLibConnection;
typedef struct VixDiskLibHandleStruct *VixDiskLibHandle;

typedef void(VixDiskLibGenericLogFunc)(const char *fmt, va_list args);
typedef void (*VixDiskLibCompletionCB)(void *cbData, VixError result);

VixError VixDiskLib_InitEx(uint32_t majorVersion, uint32_t minorVersion, VixDiskLibGenericLogFunc *log,
                           VixDiskLibGenericLogFunc *warn, VixDiskLibGenericLogFunc *panic, const char *libDir,
                           const char *configFile);
void VixDiskLib_Exit(void);
const char *VixDiskLib_ListTransportModes(void);
VixError VixDiskLib_Cleanup(const VixDiskLibConnectParams *connectParams, uint32_t *numCleanedUp,
                            uint32_t *numRemaining);
VixDiskLibConnectParams *VixDiskLib_AllocateConnectParams(void);
void VixDiskLib_FreeConnectParams(VixDiskLibConnectParams *connectParams);
VixError VixDiskLib_PrepareForAccess(const VixDiskLibConnectParams *connectParams, const char *identity);
VixError VixDiskLib_EndAccess(const VixDiskLibConnectParams *connectParams, const char *identity);
VixError VixDiskLib_ConnectEx(const VixDiskLibConnectParams *connectParams, Bool readOnly, const char *snapshotRef,
                              const char *transportModes, VixDiskLibConnection *connection);
VixError VixDiskLib_Disconnect(VixDiskLibConnection connection);
VixError VixDiskLib_Open(const VixDiskLibConnection connection, const char *path, uint32_t flags,
                         VixDiskLibHandle *diskHandle);
VixError VixDiskLib_Close(VixDiskLibHandle diskHandle);
const char *VixDiskLib_GetTransportMode(VixDiskLibHandle diskHandle);
VixError VixDiskLib_GetInfo(VixDiskLibHandle diskHandle, VixDiskLibInfo **info);
void VixDiskLib_FreeInfo(VixDiskLibInfo *info);
VixError VixDiskLib_Read(VixDiskLibHandle diskHandle, VixDiskLibSectorType startSector,
                         VixDiskLibSectorType numSectors, uint8_t *readBuffer);
VixError VixDiskLib_Write(VixDiskLibHandle diskHandle, VixDiskLibSectorType startSector,
                          VixDiskLibSectorType numSectors, const uint8_t *writeBuffer);
VixError VixDiskLib_ReadAsync(VixDiskLibHandle diskHandle, VixDiskLibSectorType startSector,
                              VixDiskLibSectorType numSectors, uint8_t *readBuffer, VixDiskLibCompletionCB callback,
                              void *cbData);
VixError VixDiskLib_WriteAsync(VixDiskLibHandle diskHandle, VixDiskLibSectorType startSector,
                               VixDiskLibSectorType numSectors, const uint8_t *writeBuffer,
                               VixDiskLibCompletionCB callback, void *cbData);
VixError VixDiskLib_Wait(VixDiskLibHandle diskHandle);
VixError VixDiskLib_Flush(VixDiskLibHandle diskHandle);
VixError VixDiskLib_QueryAllocatedBlocks(VixDiskLibHandle diskHandle, VixDiskLibSectorType startSector,
                                         VixDiskLibSectorType numSectors, VixDiskLibSectorType chunkSize,
                                         VixDiskLibBlockList **blockList);
VixError VixDiskLib_FreeBlockList(VixDiskLibBlockList *blockList);
VixError VixDiskLib_GetMetadataKeys(VixDiskLibHandle diskHandle, char *keys, size_t maxLen, size_t *requiredLen);
VixError VixDiskLib_ReadMetadata(VixDiskLibHandle diskHandle, const char *key, char *buf, size_t bufLen,
                                 size_t *requiredLen);
char *VixDiskLib_GetErrorText(VixError err, const char *locale);
void VixDiskLib_FreeErrorText(char *errMsg);

/* Lab only: identifies the lab library (real VDDK has no such symbol). */
const char *VixDiskLibLab_Identify(void);

#ifdef __cplusplus
}
#endif
#endif
