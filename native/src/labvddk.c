/*
 * vbproxy lab VDDK: a libvixDiskLib.so.8 with VDDK 7/8's ABI that reads and writes the lab
 * datastore's files (docs/lab.md sections 1-5) and enforces VDDK's documented calling rules
 * (docs/lab.md section 7). Linux x86_64 only.
 */
#define _GNU_SOURCE
#include "vixDiskLib.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define API __attribute__((visibility("default")))
#define LAB_VERSION "8.0.0-lab"
#define DEFAULT_TRANSPORTS "file:san:hotadd:nbdssl:nbd"
#define MAX_IO_THREADS 16
#define MAX_KEYS 256

/* Error codes (VixError & 0xFFFF). */
enum {
  E_FAIL = 1,
  E_OUT_OF_MEMORY = 2,
  E_INVALID_ARG = 3,
  E_FILE_NOT_FOUND = 4,
  E_OBJECT_IS_BUSY = 5,
  E_NOT_SUPPORTED = 6,
  E_FILE_ERROR = 7,
  E_FILE_READ_ONLY = 11,
  E_FILE_ACCESS_ERROR = 13,
  E_BUFFER_TOOSMALL = 24,
  E_INVALID_HANDLE = 1000,
  E_HOST_TCP_CONN_LOST = 14011,
  E_DISK_NOINIT = 16001,
  E_DISK_NOIO = 16002,
  E_DISK_PARTIALCHAIN = 16003,
  E_DISK_OUTOFRANGE = 16007,
  E_DISK_CID_MISMATCH = 16008,
  E_DISK_KEY_NOTFOUND = 16052,
  E_DISK_INVALID_CONNECTION = 16054,
  E_CANNOT_CONNECT_TO_HOST = 18000,
  E_ASYNC_MIXEDMODE_UNSUPPORTED = 26000,
};

/* Real VDDK may set bits above the low 16 in an error; the lab always does, so that callers that
 * forget `& 0xFFFF` fail their tests. The value is above 2^53 on purpose (koffi returns a BigInt). */
#define HIGH_BITS ((uint64_t)0x0B5E << 48)
static VixError fail(int code) { return code == 0 ? VIX_OK : (HIGH_BITS | (uint64_t)code); }

/* ---------------------------------------------------------------------------------------------- */
/* Logging (through the caller's va_list callbacks) */

static VixDiskLibGenericLogFunc *g_log, *g_warn;

static void lab_log(VixDiskLibGenericLogFunc *fn, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void lab_log(VixDiskLibGenericLogFunc *fn, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (fn) {
    fn(fmt, ap);
  } else {
    vfprintf(stderr, fmt, ap);
  }
  va_end(ap);
}
#define LOG(...) lab_log(g_log, __VA_ARGS__)
#define WARN(...) lab_log(g_warn, __VA_ARGS__)

/* ---------------------------------------------------------------------------------------------- */
/* Small helpers */

static char *xstrdup(const char *s) { return s ? strdup(s) : NULL; }

static char *trim(char *s) {
  while (*s && isspace((unsigned char)*s)) s++;
  char *e = s + strlen(s);
  while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
  return s;
}

static char *unquote(char *s) {
  s = trim(s);
  size_t n = strlen(s);
  if (n >= 2 && s[0] == '"' && s[n - 1] == '"') {
    s[n - 1] = 0;
    s++;
  }
  return s;
}

static char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  size_t got;
  while (buf && (got = fread(buf + len, 1, cap - len - 1, f)) > 0) {
    len += got;
    if (cap - len <= 1) {
      char *nb = realloc(buf, cap * 2);
      if (!nb) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = nb;
      cap *= 2;
    }
  }
  fclose(f);
  if (buf) buf[len] = 0;
  return buf;
}

typedef struct {
  char *key[MAX_KEYS];
  char *value[MAX_KEYS];
  int n;
} KeyValues;

static void kv_free(KeyValues *kv) {
  for (int i = 0; i < kv->n; i++) {
    free(kv->key[i]);
    free(kv->value[i]);
  }
  kv->n = 0;
}

static const char *kv_get(const KeyValues *kv, const char *key) {
  for (int i = kv->n - 1; i >= 0; i--)
    if (strcasecmp(kv->key[i], key) == 0) return kv->value[i];
  return NULL;
}

/* VDDK's `key = "value"` syntax; `#` starts a comment line. Returns 0, or -1 when unreadable. */
static int kv_parse_file(const char *path, KeyValues *kv) {
  char *text = read_text(path);
  if (!text) return -1;
  char *save = NULL;
  for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    char *l = trim(line);
    if (*l == 0 || *l == '#') continue;
    char *eq = strchr(l, '=');
    if (!eq || kv->n >= MAX_KEYS) continue;
    *eq = 0;
    kv->key[kv->n] = strdup(trim(l));
    kv->value[kv->n] = strdup(unquote(eq + 1));
    kv->n++;
  }
  free(text);
  return 0;
}

static int list_contains(const char *list, const char *item, char sep) {
  if (!list || !item) return 0;
  size_t n = strlen(item);
  const char *p = list;
  while (*p) {
    while (*p == sep || *p == ' ') p++;
    const char *e = p;
    while (*e && *e != sep) e++;
    const char *te = e;
    while (te > p && te[-1] == ' ') te--;
    if ((size_t)(te - p) == n && strncmp(p, item, n) == 0) return 1;
    p = e;
  }
  return 0;
}

static int mkdirs(const char *path) {
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s", path);
  for (char *p = tmp + 1; *p; p++) {
    if (*p == '/') {
      *p = 0;
      if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return -1;
      *p = '/';
    }
  }
  if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return -1;
  return 0;
}

static pid_t gettid_(void) { return (pid_t)syscall(SYS_gettid); }

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* ---------------------------------------------------------------------------------------------- */
/* Global state */

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_state; /* 0 never initialised, 1 initialised, 2 exited */
static KeyValues g_config;
static pthread_t g_openThread;
static int g_openThreadSet;
static pid_t g_openThreadTid;

static const char *cfg(const char *key) { return kv_get(&g_config, key); }

/* ---------------------------------------------------------------------------------------------- */
/* Connections and disks */

#define CONN_MAGIC 0x434f4e4eU
#define HANDLE_MAGIC 0x4449534bU

typedef struct {
  long readFailNth; /* 0: none */
  int readFailCode;
  long readDelayNth; /* 0: none, -1: every read */
  long readDelayMs;
  long long dropAfterBytes; /* -1: never */
  int dropCode;
  int openFailCode; /* 0: none */
  long openFailCount; /* -1: every Open */
} Faults;

typedef struct Handle Handle;

typedef struct Conn {
  uint32_t magic;
  int local;
  int readOnly;
  char *server, *thumbprint, *vmxSpec, *sourceVm, *snapshot, *transports;
  char connectionId[17];
  Faults faults;
  atomic_long readCount;
  atomic_llong bytes;
  atomic_int dropped;
  long openCount;
  Handle *handles;
} Conn;

typedef struct {
  int fd;
  /* The extent opened with O_DIRECT for the reads of an unbuffered handle (-1: none). */
  int directFd;
  int isDelta;
  uint64_t grainSize;
  unsigned char *map;
  size_t mapLen;
  int mapFd;
  char *descPath;
} Layer;

struct Handle {
  uint32_t magic;
  Conn *conn;
  Handle *next;
  Layer *layers; /* layers[0] is the opened (topmost) file */
  int nLayers;
  uint64_t capacity; /* bytes */
  int readOnly;
  int unbuffered;
  const char *transport;
  char *ctkPath;
  char *attachPath;
  char *uuid;
  char *parentHint;
  int adapterType;
  VixDiskLibGeometry geometry;
  char *ddbKey[MAX_KEYS];
  char *ddbValue[MAX_KEYS];
  int nDdb;
  atomic_int busy;
  atomic_int pending;     /* asynchronous I/O queued or running (not yet completed) */
  atomic_int outstanding; /* asynchronous I/O whose callback has not yet returned */
  pthread_mutex_t writeLock;
  pthread_mutex_t pendLock;
  pthread_cond_t pendCond;
};

static Conn *g_conns[1024];
static Handle *g_handles[4096];

static int conn_valid(Conn *c) {
  if (!c) return 0;
  for (size_t i = 0; i < sizeof g_conns / sizeof g_conns[0]; i++)
    if (g_conns[i] == c) return c->magic == CONN_MAGIC;
  return 0;
}

static int handle_valid_locked(Handle *h) {
  if (!h) return 0;
  for (size_t i = 0; i < sizeof g_handles / sizeof g_handles[0]; i++)
    if (g_handles[i] == h) return h->magic == HANDLE_MAGIC;
  return 0;
}

static int handle_valid(Handle *h) {
  pthread_mutex_lock(&g_lock);
  int ok = handle_valid_locked(h);
  pthread_mutex_unlock(&g_lock);
  return ok;
}

/* ---------------------------------------------------------------------------------------------- */
/* Asynchronous I/O: a pool of library threads started by InitEx */

typedef struct Job {
  struct Job *next;
  Handle *h;
  int isWrite;
  uint64_t sector, count;
  uint8_t *buf;
  VixDiskLibCompletionCB cb;
  void *cbData;
  long readNo;
} Job;

static pthread_mutex_t g_qLock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_qCond = PTHREAD_COND_INITIALIZER;
static Job *g_qHead, *g_qTail;
static int g_qStop;
static pthread_t g_ioThreads[MAX_IO_THREADS];
static int g_nIoThreads;

static int do_read(Handle *h, uint64_t sector, uint64_t count, uint8_t *buf, long readNo);
static int do_write(Handle *h, uint64_t sector, uint64_t count, const uint8_t *buf);

static void *io_thread(void *arg) {
  (void)arg;
  for (;;) {
    pthread_mutex_lock(&g_qLock);
    while (!g_qHead && !g_qStop) pthread_cond_wait(&g_qCond, &g_qLock);
    if (!g_qHead && g_qStop) {
      pthread_mutex_unlock(&g_qLock);
      return NULL;
    }
    Job *j = g_qHead;
    g_qHead = j->next;
    if (!g_qHead) g_qTail = NULL;
    pthread_mutex_unlock(&g_qLock);

    int code = j->isWrite ? do_write(j->h, j->sector, j->count, j->buf) : do_read(j->h, j->sector, j->count, j->buf, j->readNo);
    Handle *h = j->h;
    /* The I/O is complete before its callback runs: the caller may issue other I/O from the callback. */
    atomic_fetch_sub(&h->pending, 1);
    if (j->cb) j->cb(j->cbData, fail(code));
    free(j);
    pthread_mutex_lock(&h->pendLock);
    if (atomic_fetch_sub(&h->outstanding, 1) == 1) pthread_cond_broadcast(&h->pendCond);
    pthread_mutex_unlock(&h->pendLock);
  }
}

/* ---------------------------------------------------------------------------------------------- */
/* InitEx / Exit */

API const char *VixDiskLibLab_Identify(void) { return "vbproxy lab VDDK " LAB_VERSION; }

API VixError VixDiskLib_InitEx(uint32_t majorVersion, uint32_t minorVersion, VixDiskLibGenericLogFunc *log,
                               VixDiskLibGenericLogFunc *warn, VixDiskLibGenericLogFunc *panic, const char *libDir,
                               const char *configFile) {
  (void)panic;
  (void)libDir;
  pthread_mutex_lock(&g_lock);
  if (g_state != 0) {
    int st = g_state;
    pthread_mutex_unlock(&g_lock);
    lab_log(warn, "VixDiskLib_InitEx: refused: the library was already %s in this process "
                  "(VDDK allows InitEx once per process)\n",
            st == 1 ? "initialised" : "initialised and exited");
    return fail(E_OBJECT_IS_BUSY);
  }
  g_log = log;
  g_warn = warn;
  if (configFile && *configFile) {
    if (kv_parse_file(configFile, &g_config) != 0) {
      int err = errno;
      pthread_mutex_unlock(&g_lock);
      WARN("VixDiskLib_InitEx: cannot read the configuration file %s: %s\n", configFile, strerror(err));
      g_log = g_warn = NULL;
      return fail(E_FILE_NOT_FOUND);
    }
  }
  const char *threads = cfg("vixDiskLib.lab.ioThreads");
  g_nIoThreads = threads ? atoi(threads) : 4;
  if (g_nIoThreads < 1) g_nIoThreads = 1;
  if (g_nIoThreads > MAX_IO_THREADS) g_nIoThreads = MAX_IO_THREADS;
  g_qStop = 0;
  srand((unsigned)getpid() ^ (unsigned)time(NULL));
  for (int i = 0; i < g_nIoThreads; i++) pthread_create(&g_ioThreads[i], NULL, io_thread, NULL);
  g_state = 1;
  pthread_mutex_unlock(&g_lock);
  LOG("VixDiskLib: %s initialised for API %u.%u with %d I/O threads, config %s, lab root %s\n",
      VixDiskLibLab_Identify(), majorVersion, minorVersion, g_nIoThreads, configFile ? configFile : "(none)",
      cfg("vixDiskLib.lab.root") ? cfg("vixDiskLib.lab.root") : "(none)");
  return VIX_OK;
}

API void VixDiskLib_Exit(void) {
  pthread_mutex_lock(&g_lock);
  if (g_state != 1) {
    pthread_mutex_unlock(&g_lock);
    return;
  }
  g_state = 2;
  pthread_mutex_unlock(&g_lock);
  pthread_mutex_lock(&g_qLock);
  g_qStop = 1;
  pthread_cond_broadcast(&g_qCond);
  pthread_mutex_unlock(&g_qLock);
  for (int i = 0; i < g_nIoThreads; i++) pthread_join(g_ioThreads[i], NULL);
  g_nIoThreads = 0;
  LOG("VixDiskLib: exited\n");
}

static int require_init(const char *fn) {
  if (g_state == 1) return 0;
  WARN("%s: the library is not initialised (call VixDiskLib_InitEx first)\n", fn);
  return E_DISK_NOINIT;
}

API const char *VixDiskLib_ListTransportModes(void) { return DEFAULT_TRANSPORTS; }

/* ---------------------------------------------------------------------------------------------- */
/* Connect parameters */

typedef struct VixDiskLibConnectParamsState {
  uint32_t magic;
} LabParamsState;
static LabParamsState g_paramsState = {0x50415241U};

API VixDiskLibConnectParams *VixDiskLib_AllocateConnectParams(void) {
  VixDiskLibConnectParams *p = calloc(1, sizeof *p);
  if (p) p->state = &g_paramsState;
  return p;
}

API void VixDiskLib_FreeConnectParams(VixDiskLibConnectParams *p) { free(p); }

/* "moref=vm-42" -> "vm-42"; other forms are kept whole. */
static char *vm_from_spec(const char *spec) {
  if (!spec) return NULL;
  if (strncmp(spec, "moref=", 6) == 0) return strdup(spec + 6);
  return strdup(spec);
}

static int check_remote_params(const char *fn, const VixDiskLibConnectParams *p) {
  if (!p->serverName || !*p->serverName) {
    WARN("%s: connect parameters have no serverName\n", fn);
    return E_INVALID_ARG;
  }
  if (p->credType == VIXDISKLIB_CRED_UID) {
    if (!p->creds.uid.userName || !p->creds.uid.password) {
      WARN("%s: user name/password credentials are incomplete\n", fn);
      return E_INVALID_ARG;
    }
  } else if (p->credType == VIXDISKLIB_CRED_SESSIONID) {
    if (!p->creds.sessionId.cookie || !*p->creds.sessionId.cookie) {
      WARN("%s: session credentials have no cookie\n", fn);
      return E_INVALID_ARG;
    }
  } else {
    WARN("%s: unsupported credential type %d\n", fn, (int)p->credType);
    return E_INVALID_ARG;
  }
  if (!cfg("vixDiskLib.lab.root")) {
    WARN("%s: vixDiskLib.lab.root is not set in the configuration file, the lab host cannot be reached\n", fn);
    return E_CANNOT_CONNECT_TO_HOST;
  }
  return 0;
}

static void load_faults(Faults *f) {
  memset(f, 0, sizeof *f);
  f->readFailCode = E_DISK_NOIO;
  f->dropAfterBytes = -1;
  f->dropCode = E_HOST_TCP_CONN_LOST;
  f->openFailCount = -1;
  char path[4096];
  const char *ff = cfg("vixDiskLib.lab.faultFile");
  if (ff) {
    snprintf(path, sizeof path, "%s", ff);
  } else if (cfg("vixDiskLib.lab.root")) {
    snprintf(path, sizeof path, "%s/faults/vddk.conf", cfg("vixDiskLib.lab.root"));
  } else {
    return;
  }
  KeyValues kv = {0};
  if (kv_parse_file(path, &kv) != 0) return;
  const char *v;
  if ((v = kv_get(&kv, "read.fail.nth"))) f->readFailNth = atol(v);
  if ((v = kv_get(&kv, "read.fail.code"))) f->readFailCode = atoi(v);
  if ((v = kv_get(&kv, "read.delay.nth"))) f->readDelayNth = strcmp(v, "*") == 0 ? -1 : atol(v);
  if ((v = kv_get(&kv, "read.delay.ms"))) f->readDelayMs = atol(v);
  if ((v = kv_get(&kv, "connection.dropAfterBytes"))) f->dropAfterBytes = atoll(v);
  if ((v = kv_get(&kv, "connection.dropCode"))) f->dropCode = atoi(v);
  if ((v = kv_get(&kv, "open.fail.code"))) f->openFailCode = atoi(v);
  if ((v = kv_get(&kv, "open.fail.count"))) f->openFailCount = atol(v);
  kv_free(&kv);
  LOG("VixDiskLib: fault injection from %s: read.fail.nth=%ld read.delay.nth=%ld dropAfterBytes=%lld "
      "open.fail.code=%d\n",
      path, f->readFailNth, f->readDelayNth, f->dropAfterBytes, f->openFailCode);
}

API VixError VixDiskLib_ConnectEx(const VixDiskLibConnectParams *p, Bool readOnly, const char *snapshotRef,
                                  const char *transportModes, VixDiskLibConnection *connection) {
  int code;
  if ((code = require_init("VixDiskLib_ConnectEx"))) return fail(code);
  if (!connection) return fail(E_INVALID_ARG);
  *connection = NULL;
  if (p && p->serverName && (code = check_remote_params("VixDiskLib_ConnectEx", p))) return fail(code);
  Conn *c = calloc(1, sizeof *c);
  if (!c) return fail(E_OUT_OF_MEMORY);
  c->magic = CONN_MAGIC;
  c->local = !(p && p->serverName);
  c->readOnly = readOnly ? 1 : 0;
  if (!c->local) {
    c->server = xstrdup(p->serverName);
    c->thumbprint = xstrdup(p->thumbPrint);
    c->vmxSpec = xstrdup(p->vmxSpec);
    c->sourceVm = vm_from_spec(p->vmxSpec);
    c->snapshot = p->vmxSpec ? xstrdup(snapshotRef) : NULL;
  }
  c->transports = xstrdup(transportModes && *transportModes ? transportModes : DEFAULT_TRANSPORTS);
  unsigned long long r = ((unsigned long long)rand() << 32) ^ (unsigned long long)rand() ^
                         ((unsigned long long)getpid() << 16) ^ (unsigned long long)time(NULL);
  snprintf(c->connectionId, sizeof c->connectionId, "%016llx", r);
  load_faults(&c->faults);
  pthread_mutex_lock(&g_lock);
  size_t i;
  for (i = 0; i < sizeof g_conns / sizeof g_conns[0]; i++)
    if (!g_conns[i]) {
      g_conns[i] = c;
      break;
    }
  pthread_mutex_unlock(&g_lock);
  if (i == sizeof g_conns / sizeof g_conns[0]) {
    free(c);
    return fail(E_OUT_OF_MEMORY);
  }
  LOG("VixDiskLib: connected to %s (%s, transports %s, connection %s)\n", c->local ? "local files" : c->server,
      c->readOnly ? "read-only" : "read-write", c->transports, c->connectionId);
  *connection = (VixDiskLibConnection)c;
  return VIX_OK;
}

static void conn_free(Conn *c) {
  free(c->server);
  free(c->thumbprint);
  free(c->vmxSpec);
  free(c->sourceVm);
  free(c->snapshot);
  free(c->transports);
  c->magic = 0;
  free(c);
}

static int close_handle(Handle *h);

API VixError VixDiskLib_Disconnect(VixDiskLibConnection connection) {
  int code;
  if ((code = require_init("VixDiskLib_Disconnect"))) return fail(code);
  Conn *c = (Conn *)connection;
  pthread_mutex_lock(&g_lock);
  if (!conn_valid(c)) {
    pthread_mutex_unlock(&g_lock);
    return fail(E_DISK_INVALID_CONNECTION);
  }
  pthread_mutex_unlock(&g_lock);
  /* Disconnect invalidates the disks still open on the connection. */
  while (c->handles) {
    Handle *h = c->handles;
    if (atomic_load(&h->pending) > 0) {
      WARN("VixDiskLib_Disconnect: a disk still has asynchronous I/O in flight\n");
      return fail(E_OBJECT_IS_BUSY);
    }
    close_handle(h);
  }
  pthread_mutex_lock(&g_lock);
  for (size_t i = 0; i < sizeof g_conns / sizeof g_conns[0]; i++)
    if (g_conns[i] == c) g_conns[i] = NULL;
  pthread_mutex_unlock(&g_lock);
  conn_free(c);
  return VIX_OK;
}

/* ---------------------------------------------------------------------------------------------- */
/* Paths */

static int datastore_dir(const char *ds, char *out, size_t n) {
  char key[512];
  snprintf(key, sizeof key, "vixDiskLib.lab.datastore.%s", ds);
  const char *dir = cfg(key);
  if (dir) {
    snprintf(out, n, "%s", dir);
    return 0;
  }
  const char *root = cfg("vixDiskLib.lab.root");
  if (!root) return -1;
  snprintf(out, n, "%s/datastores/%s", root, ds);
  return 0;
}

/* "[ds] a/b.vmdk" -> file path; datastore name to *dsOut when given. */
static int resolve_ds_path(const char *path, char *out, size_t n, char *dsOut, size_t dsN) {
  if (path[0] != '[') return -1;
  const char *close = strchr(path, ']');
  if (!close) return -1;
  char ds[256];
  size_t dl = (size_t)(close - path - 1);
  if (dl == 0 || dl >= sizeof ds) return -1;
  memcpy(ds, path + 1, dl);
  ds[dl] = 0;
  const char *rel = close + 1;
  while (*rel == ' ') rel++;
  if (*rel == 0 || *rel == '/' || strstr(rel, "..")) return -1;
  char dir[4096];
  if (datastore_dir(ds, dir, sizeof dir) != 0) return -1;
  snprintf(out, n, "%s/%s", dir, rel);
  if (dsOut) snprintf(dsOut, dsN, "%s", ds);
  return 0;
}

static void dir_of(const char *path, char *out, size_t n) {
  snprintf(out, n, "%s", path);
  char *s = strrchr(out, '/');
  if (s)
    *s = 0;
  else
    snprintf(out, n, ".");
}

static void sibling(const char *path, const char *name, char *out, size_t n) {
  if (name[0] == '/') {
    snprintf(out, n, "%s", name);
    return;
  }
  char d[4096];
  dir_of(path, d, sizeof d);
  snprintf(out, n, "%s/%s", d, name);
}

/* ---------------------------------------------------------------------------------------------- */
/* Descriptors */

typedef struct {
  char cid[64], parentCid[64], createType[64];
  char parentHint[4096], changeTrackPath[4096], extentFile[4096], extentType[64];
  uint64_t capacitySectors;
  uint64_t grainSize;
  char *ddbKey[MAX_KEYS];
  char *ddbValue[MAX_KEYS];
  int nDdb;
} Descriptor;

static void desc_free(Descriptor *d) {
  for (int i = 0; i < d->nDdb; i++) {
    free(d->ddbKey[i]);
    free(d->ddbValue[i]);
  }
  d->nDdb = 0;
}

static const char *desc_ddb(const Descriptor *d, const char *key) {
  for (int i = 0; i < d->nDdb; i++)
    if (strcmp(d->ddbKey[i], key) == 0) return d->ddbValue[i];
  return NULL;
}

static int parse_descriptor(const char *path, Descriptor *d) {
  memset(d, 0, sizeof *d);
  d->grainSize = 4096;
  char *text = read_text(path);
  if (!text) return errno == ENOENT ? E_FILE_NOT_FOUND : E_FILE_ERROR;
  char *save = NULL;
  int haveExtent = 0;
  for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    char *l = trim(line);
    if (*l == 0 || *l == '#') continue;
    if (strncmp(l, "RW ", 3) == 0 || strncmp(l, "RDONLY ", 7) == 0) {
      char *p = strchr(l, ' ') + 1;
      d->capacitySectors = strtoull(p, &p, 10);
      while (*p == ' ') p++;
      char *t = p;
      while (*p && *p != ' ') p++;
      size_t tl = (size_t)(p - t);
      if (tl >= sizeof d->extentType) tl = sizeof d->extentType - 1;
      memcpy(d->extentType, t, tl);
      d->extentType[tl] = 0;
      snprintf(d->extentFile, sizeof d->extentFile, "%s", unquote(p));
      haveExtent = 1;
      continue;
    }
    char *eq = strchr(l, '=');
    if (!eq) continue;
    *eq = 0;
    char *k = trim(l);
    char *v = unquote(eq + 1);
    if (strncmp(k, "ddb.", 4) == 0) {
      if (d->nDdb < MAX_KEYS) {
        d->ddbKey[d->nDdb] = strdup(k);
        d->ddbValue[d->nDdb] = strdup(v);
        d->nDdb++;
      }
      if (strcmp(k, "ddb.grainSize") == 0) d->grainSize = strtoull(v, NULL, 10);
    } else if (strcmp(k, "CID") == 0) {
      snprintf(d->cid, sizeof d->cid, "%s", v);
    } else if (strcmp(k, "parentCID") == 0) {
      snprintf(d->parentCid, sizeof d->parentCid, "%s", v);
    } else if (strcmp(k, "createType") == 0) {
      snprintf(d->createType, sizeof d->createType, "%s", v);
    } else if (strcmp(k, "parentFileNameHint") == 0) {
      snprintf(d->parentHint, sizeof d->parentHint, "%s", v);
    } else if (strcmp(k, "changeTrackPath") == 0) {
      snprintf(d->changeTrackPath, sizeof d->changeTrackPath, "%s", v);
    }
  }
  free(text);
  if (!haveExtent || d->capacitySectors == 0 || d->grainSize == 0 || d->grainSize % 512 != 0) {
    desc_free(d);
    return 16000; /* VIX_E_DISK_INVAL */
  }
  return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Opening a chain */

static void layer_close(Layer *l) {
  if (l->fd >= 0) close(l->fd);
  if (l->directFd >= 0) close(l->directFd);
  if (l->mapFd >= 0) close(l->mapFd);
  free(l->map);
  free(l->descPath);
}

static void handle_free(Handle *h) {
  for (int i = 0; i < h->nLayers; i++) layer_close(&h->layers[i]);
  free(h->layers);
  free(h->ctkPath);
  free(h->attachPath);
  free(h->uuid);
  free(h->parentHint);
  for (int i = 0; i < h->nDdb; i++) {
    free(h->ddbKey[i]);
    free(h->ddbValue[i]);
  }
  pthread_mutex_destroy(&h->writeLock);
  pthread_mutex_destroy(&h->pendLock);
  pthread_cond_destroy(&h->pendCond);
  h->magic = 0;
  free(h);
}

static int resolve_parent(const char *childDesc, const char *hint, char *out, size_t n) {
  if (hint[0] == '[') return resolve_ds_path(hint, out, n, NULL, 0) == 0 ? 0 : -1;
  sibling(childDesc, hint, out, n);
  return 0;
}

static int open_chain(Handle *h, const char *descPath, int writable) {
  char path[4096];
  snprintf(path, sizeof path, "%s", descPath);
  char expectCid[64] = "";
  for (int depth = 0; depth < 64; depth++) {
    Descriptor d;
    int code = parse_descriptor(path, &d);
    if (code) return depth == 0 ? code : E_DISK_PARTIALCHAIN;
    if (expectCid[0] && strcasecmp(expectCid, d.cid) != 0) {
      WARN("VixDiskLib_Open: content ID mismatch: %s has CID %s, its child expects %s\n", path, d.cid, expectCid);
      desc_free(&d);
      return E_DISK_CID_MISMATCH;
    }
    Layer *nl = realloc(h->layers, sizeof(Layer) * (size_t)(h->nLayers + 1));
    if (!nl) {
      desc_free(&d);
      return E_OUT_OF_MEMORY;
    }
    h->layers = nl;
    Layer *l = &h->layers[h->nLayers++];
    memset(l, 0, sizeof *l);
    l->fd = -1;
    l->directFd = -1;
    l->mapFd = -1;
    l->descPath = strdup(path);
    l->isDelta = strcasecmp(d.extentType, "VMFSSPARSE") == 0 || strcasecmp(d.createType, "vmfsSparse") == 0;
    l->grainSize = d.grainSize;
    int top = depth == 0;
    if (top) {
      h->capacity = d.capacitySectors * 512;
      const char *v;
      h->uuid = xstrdup(desc_ddb(&d, "ddb.uuid"));
      h->parentHint = d.parentHint[0] ? strdup(d.parentHint) : NULL;
      v = desc_ddb(&d, "ddb.adapterType");
      h->adapterType = !v                             ? VIXDISKLIB_ADAPTER_UNKNOWN
                       : strcmp(v, "ide") == 0        ? VIXDISKLIB_ADAPTER_IDE
                       : strcmp(v, "buslogic") == 0   ? VIXDISKLIB_ADAPTER_SCSI_BUSLOGIC
                       : strcmp(v, "lsilogic") == 0   ? VIXDISKLIB_ADAPTER_SCSI_LSILOGIC
                                                      : VIXDISKLIB_ADAPTER_UNKNOWN;
      if ((v = desc_ddb(&d, "ddb.geometry.cylinders"))) h->geometry.cylinders = (uint32_t)atol(v);
      if ((v = desc_ddb(&d, "ddb.geometry.heads"))) h->geometry.heads = (uint32_t)atol(v);
      if ((v = desc_ddb(&d, "ddb.geometry.sectors"))) h->geometry.sectors = (uint32_t)atol(v);
      if (d.changeTrackPath[0]) {
        char ctk[4096];
        sibling(path, d.changeTrackPath, ctk, sizeof ctk);
        h->ctkPath = strdup(ctk);
      }
      for (int i = 0; i < d.nDdb; i++) {
        h->ddbKey[i] = d.ddbKey[i];
        h->ddbValue[i] = d.ddbValue[i];
        d.ddbKey[i] = d.ddbValue[i] = NULL;
      }
      h->nDdb = d.nDdb;
      d.nDdb = 0;
    } else if (d.capacitySectors * 512 != h->capacity) {
      WARN("VixDiskLib_Open: %s has a different capacity from the disk opened\n", path);
      desc_free(&d);
      return 16000;
    }
    char extent[4096];
    sibling(path, d.extentFile, extent, sizeof extent);
    l->fd = open(extent, (top && writable) ? O_RDWR : O_RDONLY);
    if (l->fd < 0) {
      int err = errno;
      WARN("VixDiskLib_Open: cannot open extent %s: %s\n", extent, strerror(err));
      desc_free(&d);
      return depth == 0 ? (err == ENOENT ? E_FILE_NOT_FOUND : E_FILE_ACCESS_ERROR) : E_DISK_PARTIALCHAIN;
    }
    /* VIXDISKLIB_FLAG_OPEN_UNBUFFERED, "no host caching": aligned reads bypass the page cache.
     * A file system without O_DIRECT (tmpfs) keeps the cached reads. */
    if (h->unbuffered) l->directFd = open(extent, O_RDONLY | O_DIRECT | O_CLOEXEC);
    if (l->isDelta) {
      char mapPath[4096];
      snprintf(mapPath, sizeof mapPath, "%s", extent);
      size_t el = strlen(mapPath);
      if (el > 5 && strcmp(mapPath + el - 5, ".vmdk") == 0) mapPath[el - 5] = 0;
      strncat(mapPath, ".map", sizeof mapPath - strlen(mapPath) - 1);
      uint64_t grains = (h->capacity + l->grainSize - 1) / l->grainSize;
      l->mapLen = (size_t)((grains + 7) / 8);
      l->map = calloc(1, l->mapLen ? l->mapLen : 1);
      l->mapFd = open(mapPath, (top && writable) ? O_RDWR : O_RDONLY);
      if (l->mapFd < 0 || !l->map) {
        WARN("VixDiskLib_Open: cannot open grain map %s: %s\n", mapPath, strerror(errno));
        desc_free(&d);
        return E_DISK_PARTIALCHAIN;
      }
      ssize_t got = pread(l->mapFd, l->map, l->mapLen, 0);
      (void)got; /* a short map reads as "grain absent" */
      if (!(top && writable)) {
        close(l->mapFd);
        l->mapFd = -1;
      }
    }
    int hasParent = d.parentHint[0] && strcasecmp(d.parentCid, "ffffffff") != 0;
    if (hasParent) {
      snprintf(expectCid, sizeof expectCid, "%s", d.parentCid);
      char parent[4096];
      if (resolve_parent(path, d.parentHint, parent, sizeof parent) != 0) {
        desc_free(&d);
        return E_DISK_PARTIALCHAIN;
      }
      snprintf(path, sizeof path, "%s", parent);
    }
    desc_free(&d);
    if (!hasParent) return l->isDelta ? E_DISK_PARTIALCHAIN : 0;
  }
  return E_DISK_PARTIALCHAIN;
}

/* ---------------------------------------------------------------------------------------------- */
/* Hot-add records (docs/lab.md section 4) */

static int create_attach_record(Handle *h, const char *dsPath) {
  const char *root = cfg("vixDiskLib.lab.root");
  const char *proxyVm = cfg("vixDiskLib.lab.proxyVm");
  const char *ctlS = cfg("vixDiskLib.lab.hotaddController");
  int ctl = ctlS ? atoi(ctlS) : 1001;
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/attached/%s", root, proxyVm);
  if (mkdirs(dir) != 0) return -1;
  for (int unit = 0; unit < 16; unit++) {
    if (unit == 7) continue;
    char path[4200];
    snprintf(path, sizeof path, "%s/%d-%d.attach", dir, ctl, unit);
    int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) {
      if (errno == EEXIST) continue;
      return -1;
    }
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char when[64];
    snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (long)(tv.tv_usec / 1000));
    char body[8192];
    int n = snprintf(body, sizeof body,
                     "vm=%s\ncontrollerKey=%d\nunitNumber=%d\ndeviceKey=%d\nfileName=%s\ndiskUuid=%s\n"
                     "capacityBytes=%llu\ndiskMode=independent_nonpersistent\nattachedBy=vddk-hotadd\n"
                     "sourceVm=%s\nsnapshot=%s\npid=%d\nconnectionId=%s\n",
                     proxyVm, ctl, unit, 2000 + (ctl - 1000) * 16 + unit, dsPath, h->uuid ? h->uuid : "",
                     (unsigned long long)h->capacity, h->conn->sourceVm ? h->conn->sourceVm : "",
                     h->conn->snapshot ? h->conn->snapshot : "", (int)getpid(), h->conn->connectionId);
    int ok = write(fd, body, (size_t)n) == n;
    /* createdAt last: readers skip records without it. */
    char last[128];
    int m = snprintf(last, sizeof last, "createdAt=%s\n", when);
    ok = ok && write(fd, last, (size_t)m) == m;
    ok = ok && fsync(fd) == 0;
    close(fd);
    if (!ok) {
      unlink(path);
      return -1;
    }
    h->attachPath = strdup(path);
    LOG("VixDiskLib: hot-added %s to %s as %d:%d\n", dsPath, proxyVm, ctl, unit);
    return 0;
  }
  WARN("VixDiskLib: Failed to find free slots for HotAdd on controller %d of %s\n", ctl, proxyVm);
  return -1;
}

/* ---------------------------------------------------------------------------------------------- */
/* Open / Close */

static int check_open_thread(const char *fn) {
  pthread_mutex_lock(&g_lock);
  if (!g_openThreadSet) {
    g_openThread = pthread_self();
    g_openThreadTid = gettid_();
    g_openThreadSet = 1;
  }
  int same = pthread_equal(g_openThread, pthread_self());
  pid_t owner = g_openThreadTid;
  pthread_mutex_unlock(&g_lock);
  if (!same) {
    WARN("%s: refused: called on thread %d, but this process opens and closes disks on thread %d "
         "(VDDK requires one thread for every Open and Close)\n",
         fn, (int)gettid_(), (int)owner);
    return E_OBJECT_IS_BUSY;
  }
  return 0;
}

static int thumbprint_equal(const char *a, const char *b) {
  if (!a || !b) return 0;
  for (;;) {
    while (*a == ':' || *a == ' ') a++;
    while (*b == ':' || *b == ' ') b++;
    if (!*a || !*b) return !*a && !*b;
    if (toupper((unsigned char)*a) != toupper((unsigned char)*b)) return 0;
    a++;
    b++;
  }
}

API VixError VixDiskLib_Open(const VixDiskLibConnection connection, const char *path, uint32_t flags,
                             VixDiskLibHandle *diskHandle) {
  int code;
  if ((code = require_init("VixDiskLib_Open"))) return fail(code);
  if (!diskHandle || !path) return fail(E_INVALID_ARG);
  *diskHandle = NULL;
  Conn *c = (Conn *)connection;
  pthread_mutex_lock(&g_lock);
  int valid = conn_valid(c);
  pthread_mutex_unlock(&g_lock);
  if (!valid) return fail(E_DISK_INVALID_CONNECTION);
  if ((code = check_open_thread("VixDiskLib_Open"))) return fail(code);
  if (atomic_load(&c->dropped)) return fail(c->faults.dropCode);
  if (c->faults.openFailCode && (c->faults.openFailCount < 0 || c->openCount < c->faults.openFailCount)) {
    c->openCount++;
    WARN("VixDiskLib_Open: injected failure %d for %s\n", c->faults.openFailCode, path);
    return fail(c->faults.openFailCode);
  }
  c->openCount++;

  char file[4096], ds[256] = "";
  if (c->local) {
    if (path[0] != '/') {
      WARN("VixDiskLib_Open: a local connection needs an absolute path, got %s\n", path);
      return fail(E_INVALID_ARG);
    }
    snprintf(file, sizeof file, "%s", path);
  } else {
    const char *want = cfg("vixDiskLib.lab.serverThumbprint");
    if (want && !thumbprint_equal(want, c->thumbprint)) {
      WARN("VixDiskLib_Open: the server's SSL thumbprint %s does not match the one given (%s)\n", want,
           c->thumbprint ? c->thumbprint : "none");
      return fail(E_FAIL);
    }
    if (resolve_ds_path(path, file, sizeof file, ds, sizeof ds) != 0) {
      WARN("VixDiskLib_Open: %s is not a datastore path of the form [datastore] folder/disk.vmdk\n", path);
      return fail(E_FILE_NOT_FOUND);
    }
  }

  Handle *h = calloc(1, sizeof *h);
  if (!h) return fail(E_OUT_OF_MEMORY);
  h->magic = HANDLE_MAGIC;
  h->conn = c;
  h->readOnly = c->readOnly || (flags & VIXDISKLIB_FLAG_OPEN_READ_ONLY);
  h->unbuffered = (flags & VIXDISKLIB_FLAG_OPEN_UNBUFFERED) != 0;
  pthread_mutex_init(&h->writeLock, NULL);
  pthread_mutex_init(&h->pendLock, NULL);
  pthread_cond_init(&h->pendCond, NULL);
  if ((code = open_chain(h, file, !h->readOnly))) {
    WARN("VixDiskLib_Open: cannot open %s (%s)\n", path, file);
    handle_free(h);
    return fail(code);
  }

  /* Transport: the first usable mode of the connection's list. */
  if (c->local) {
    h->transport = "file";
  } else {
    char modes[1024];
    snprintf(modes, sizeof modes, "%s", c->transports);
    char *save = NULL;
    for (char *m = strtok_r(modes, ":", &save); m && !h->transport; m = strtok_r(NULL, ":", &save)) {
      if (strcmp(m, "nbd") == 0) {
        h->transport = "nbd";
      } else if (strcmp(m, "nbdssl") == 0) {
        h->transport = "nbdssl";
      } else if (strcmp(m, "san") == 0) {
        if (list_contains(cfg("vixDiskLib.lab.sanDatastores"), ds, ',')) h->transport = "san";
      } else if (strcmp(m, "hotadd") == 0) {
        const char *proxyVm = cfg("vixDiskLib.lab.proxyVm");
        const char *allowed = cfg("vixDiskLib.lab.hotaddDatastores");
        if (!proxyVm) {
          LOG("VixDiskLib: hotadd is not available: vixDiskLib.lab.proxyVm is not set (not running in a VM)\n");
        } else if (!c->vmxSpec || !c->snapshot) {
          LOG("VixDiskLib: hotadd is not available: the connection has no vmxSpec and snapshot\n");
        } else if (allowed && !list_contains(allowed, ds, ',')) {
          LOG("VixDiskLib: hotadd is not available: proxy %s cannot see datastore %s\n", proxyVm, ds);
        } else if (create_attach_record(h, path) == 0) {
          h->transport = "hotadd";
        }
      }
    }
    if (!h->transport) {
      WARN("VixDiskLib_Open: none of the transport modes %s can open %s\n", c->transports, path);
      handle_free(h);
      return fail(E_NOT_SUPPORTED);
    }
  }

  pthread_mutex_lock(&g_lock);
  size_t i;
  for (i = 0; i < sizeof g_handles / sizeof g_handles[0]; i++)
    if (!g_handles[i]) {
      g_handles[i] = h;
      break;
    }
  if (i < sizeof g_handles / sizeof g_handles[0]) {
    h->next = c->handles;
    c->handles = h;
  }
  pthread_mutex_unlock(&g_lock);
  if (i == sizeof g_handles / sizeof g_handles[0]) {
    if (h->attachPath) unlink(h->attachPath);
    handle_free(h);
    return fail(16027);
  }
  LOG("VixDiskLib: opened %s (%d link%s, transport %s%s)\n", path, h->nLayers, h->nLayers == 1 ? "" : "s",
      h->transport, h->readOnly ? ", read-only" : "");
  *diskHandle = (VixDiskLibHandle)h;
  return VIX_OK;
}

static int close_handle(Handle *h) {
  /* Callbacks of completed I/O may still be returning on library threads: let them finish. */
  pthread_mutex_lock(&h->pendLock);
  while (atomic_load(&h->outstanding) > 0) pthread_cond_wait(&h->pendCond, &h->pendLock);
  pthread_mutex_unlock(&h->pendLock);
  pthread_mutex_lock(&g_lock);
  for (size_t i = 0; i < sizeof g_handles / sizeof g_handles[0]; i++)
    if (g_handles[i] == h) g_handles[i] = NULL;
  Handle **pp = &h->conn->handles;
  while (*pp && *pp != h) pp = &(*pp)->next;
  if (*pp) *pp = h->next;
  pthread_mutex_unlock(&g_lock);
  if (h->attachPath) {
    unlink(h->attachPath);
    LOG("VixDiskLib: detached %s\n", h->attachPath);
  }
  handle_free(h);
  return 0;
}

API VixError VixDiskLib_Close(VixDiskLibHandle diskHandle) {
  int code;
  if ((code = require_init("VixDiskLib_Close"))) return fail(code);
  Handle *h = (Handle *)diskHandle;
  if (!handle_valid(h)) return fail(E_INVALID_HANDLE);
  if ((code = check_open_thread("VixDiskLib_Close"))) return fail(code);
  if (atomic_load(&h->pending) > 0) {
    WARN("VixDiskLib_Close: refused: asynchronous I/O is still in flight on this disk (call VixDiskLib_Wait)\n");
    return fail(E_OBJECT_IS_BUSY);
  }
  if (atomic_load(&h->busy)) {
    WARN("VixDiskLib_Close: refused: another thread is doing I/O on this disk\n");
    return fail(E_OBJECT_IS_BUSY);
  }
  close_handle(h);
  return VIX_OK;
}

API const char *VixDiskLib_GetTransportMode(VixDiskLibHandle diskHandle) {
  Handle *h = (Handle *)diskHandle;
  if (!handle_valid(h)) return NULL;
  return h->transport;
}

API VixError VixDiskLib_GetInfo(VixDiskLibHandle diskHandle, VixDiskLibInfo **info) {
  int code;
  if ((code = require_init("VixDiskLib_GetInfo"))) return fail(code);
  Handle *h = (Handle *)diskHandle;
  if (!info) return fail(E_INVALID_ARG);
  *info = NULL;
  if (!handle_valid(h)) return fail(E_INVALID_HANDLE);
  VixDiskLibInfo *i = calloc(1, sizeof *i);
  if (!i) return fail(E_OUT_OF_MEMORY);
  i->biosGeo = h->geometry;
  i->physGeo = h->geometry;
  i->capacity = h->capacity / 512;
  i->adapterType = (VixDiskLibAdapterType)h->adapterType;
  i->numLinks = h->nLayers;
  i->parentFileNameHint = xstrdup(h->parentHint);
  i->uuid = xstrdup(h->uuid);
  i->logicalSectorSize = 512;
  i->physicalSectorSize = 512;
  *info = i;
  return VIX_OK;
}

API void VixDiskLib_FreeInfo(VixDiskLibInfo *info) {
  if (!info) return;
  free(info->parentFileNameHint);
  free(info->uuid);
  free(info);
}

/* ---------------------------------------------------------------------------------------------- */
/* Reading and writing through the chain */

static int grain_present(const Layer *l, uint64_t g) {
  size_t byte = (size_t)(g >> 3);
  return byte < l->mapLen && (l->map[byte] >> (g & 7)) & 1;
}

/* The layer (index >= from) that holds byte `pos`, and the end of the run it holds from there. */
static int resolve(const Handle *h, int from, uint64_t pos, uint64_t end, uint64_t *runEnd) {
  uint64_t limit = end;
  int found = h->nLayers - 1;
  for (int i = from; i < h->nLayers; i++) {
    const Layer *l = &h->layers[i];
    if (!l->isDelta) {
      found = i;
      break;
    }
    uint64_t g = pos / l->grainSize;
    uint64_t gEnd = (g + 1) * l->grainSize;
    if (grain_present(l, g)) {
      if (gEnd < limit) limit = gEnd;
      found = i;
      break;
    }
    if (gEnd < limit) limit = gEnd;
  }
  *runEnd = limit;
  return found;
}

/* Alignment of the O_DIRECT reads of unbuffered handles (4 KiB suits 512e and 4Kn devices). */
#define DIRECT_ALIGN 4096

static int read_range(const Handle *h, int from, uint64_t off, uint64_t len, uint8_t *buf) {
  uint64_t pos = off, end = off + len;
  while (pos < end) {
    uint64_t runEnd;
    int li = resolve(h, from, pos, end, &runEnd);
    /* Extend the run while the following grains come from the same layer. */
    while (runEnd < end) {
      uint64_t nextEnd;
      if (resolve(h, from, runEnd, end, &nextEnd) != li) break;
      runEnd = nextEnd;
    }
    const Layer *l = &h->layers[li];
    uint64_t done = 0, want = runEnd - pos;
    while (done < want) {
      uint8_t *to = buf + (pos - off) + done;
      uint64_t at = pos + done, n0 = want - done;
      /* Unbuffered: O_DIRECT when memory, offset and length are all DIRECT_ALIGN-aligned. */
      int direct = l->directFd >= 0 && (uintptr_t)to % DIRECT_ALIGN == 0 && at % DIRECT_ALIGN == 0 &&
                   n0 % DIRECT_ALIGN == 0;
      ssize_t n = pread(direct ? l->directFd : l->fd, to, (size_t)n0, (off_t)at);
      if (n < 0 && direct && errno == EINVAL) n = pread(l->fd, to, (size_t)n0, (off_t)at);
      if (n < 0) {
        if (errno == EINTR) continue;
        return E_DISK_NOIO;
      }
      if (n == 0) {
        memset(buf + (pos - off) + done, 0, (size_t)(want - done)); /* past the extent's end: zeros */
        break;
      }
      done += (uint64_t)n;
    }
    pos = runEnd;
  }
  return 0;
}

static int account_bytes(Conn *c, uint64_t n) {
  if (atomic_load(&c->dropped)) return c->faults.dropCode;
  if (c->faults.dropAfterBytes >= 0) {
    long long total = atomic_fetch_add(&c->bytes, (long long)n) + (long long)n;
    if (total > c->faults.dropAfterBytes) {
      atomic_store(&c->dropped, 1);
      return c->faults.dropCode;
    }
  }
  return 0;
}

static int do_read(Handle *h, uint64_t sector, uint64_t count, uint8_t *buf, long readNo) {
  Conn *c = h->conn;
  if (c->faults.readDelayNth && (c->faults.readDelayNth < 0 || c->faults.readDelayNth == readNo))
    sleep_ms(c->faults.readDelayMs);
  if (c->faults.readFailNth && c->faults.readFailNth == readNo) return c->faults.readFailCode;
  int code = account_bytes(c, count * 512);
  if (code) return code;
  return read_range(h, 0, sector * 512, count * 512, buf);
}

static int write_all(int fd, const uint8_t *buf, uint64_t len, uint64_t off) {
  uint64_t done = 0;
  while (done < len) {
    ssize_t n = pwrite(fd, buf + done, (size_t)(len - done), (off_t)(off + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return E_DISK_NOIO;
    }
    done += (uint64_t)n;
  }
  return 0;
}

static int do_write(Handle *h, uint64_t sector, uint64_t count, const uint8_t *buf) {
  int code = account_bytes(h->conn, count * 512);
  if (code) return code;
  uint64_t off = sector * 512, len = count * 512;
  Layer *top = &h->layers[0];
  pthread_mutex_lock(&h->writeLock);
  if (top->isDelta) {
    /* Copy-on-write: whole grains not yet in this delta come from the chain below first. */
    uint64_t gs = top->grainSize;
    uint64_t g0 = off / gs, g1 = (off + len - 1) / gs;
    uint8_t *grain = NULL;
    for (uint64_t g = g0; g <= g1 && !code; g++) {
      if (grain_present(top, g)) continue;
      uint64_t gOff = g * gs, gLen = gOff + gs > h->capacity ? h->capacity - gOff : gs;
      if (off <= gOff && off + len >= gOff + gLen) continue; /* fully overwritten */
      if (!grain && !(grain = malloc(gs))) code = E_OUT_OF_MEMORY;
      if (!code) code = h->nLayers > 1 ? read_range(h, 1, gOff, gLen, grain) : (memset(grain, 0, gLen), 0);
      if (!code) code = write_all(top->fd, grain, gLen, gOff);
    }
    free(grain);
    if (!code) code = write_all(top->fd, buf, len, off);
    if (!code) {
      size_t b0 = (size_t)(g0 >> 3), b1 = (size_t)(g1 >> 3);
      for (uint64_t g = g0; g <= g1; g++) top->map[g >> 3] |= (unsigned char)(1u << (g & 7));
      if (top->mapFd < 0 || write_all(top->mapFd, top->map + b0, b1 - b0 + 1, b0)) code = E_DISK_NOIO;
    }
  } else {
    code = write_all(top->fd, buf, len, off);
  }
  if (!code && h->ctkPath) {
    int fd = open(h->ctkPath, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd >= 0) {
      char line[96];
      int n = snprintf(line, sizeof line, "w %llu %llu\n", (unsigned long long)off, (unsigned long long)len);
      if (write(fd, line, (size_t)n) != n) code = E_DISK_NOIO;
      close(fd);
    }
  }
  pthread_mutex_unlock(&h->writeLock);
  return code;
}

/* Common argument checks of every I/O call. */
static int check_io(Handle *h, const char *fn, uint64_t sector, uint64_t count, const void *buf, int isWrite) {
  int code;
  if ((code = require_init(fn))) return code;
  if (!handle_valid(h)) return E_INVALID_HANDLE;
  if (!buf) return E_INVALID_ARG;
  if (h->unbuffered && ((uintptr_t)buf % 512) != 0) {
    WARN("%s: refused: the disk was opened unbuffered, so the buffer address must be sector-aligned "
         "(512 bytes); %p is not\n",
         fn, buf);
    return E_INVALID_ARG;
  }
  if (sector > h->capacity / 512 || count > h->capacity / 512 - sector) {
    WARN("%s: sectors %llu+%llu are beyond the disk's capacity of %llu sectors\n", fn, (unsigned long long)sector,
         (unsigned long long)count, (unsigned long long)(h->capacity / 512));
    return E_DISK_OUTOFRANGE;
  }
  if (isWrite && h->readOnly) {
    WARN("%s: refused: the disk is open read-only\n", fn);
    return E_FILE_READ_ONLY;
  }
  if (atomic_load(&h->conn->dropped)) return h->conn->faults.dropCode;
  return 0;
}

static VixError sync_io(Handle *h, const char *fn, uint64_t sector, uint64_t count, uint8_t *buf, int isWrite) {
  int code = check_io(h, fn, sector, count, buf, isWrite);
  if (code) return fail(code);
  if (atomic_load(&h->pending) > 0) {
    WARN("%s: refused: asynchronous I/O is in flight on this disk; VDDK does not support mixing "
         "synchronous and asynchronous I/O on one handle\n",
         fn);
    return fail(E_ASYNC_MIXEDMODE_UNSUPPORTED);
  }
  if (atomic_exchange(&h->busy, 1)) {
    WARN("%s: refused: another thread is doing I/O on this disk handle at the same time "
         "(VDDK forbids concurrent I/O on one handle)\n",
         fn);
    return fail(E_OBJECT_IS_BUSY);
  }
  if (isWrite) {
    code = do_write(h, sector, count, buf);
  } else {
    long readNo = atomic_fetch_add(&h->conn->readCount, 1) + 1;
    code = do_read(h, sector, count, buf, readNo);
  }
  atomic_store(&h->busy, 0);
  return fail(code);
}

API VixError VixDiskLib_Read(VixDiskLibHandle diskHandle, VixDiskLibSectorType startSector,
                             VixDiskLibSectorType numSectors, uint8_t *readBuffer) {
  return sync_io((Handle *)diskHandle, "VixDiskLib_Read", startSector, numSectors, readBuffer, 0);
}

API VixError VixDiskLib_Write(VixDiskLibHandle diskHandle, VixDiskLibSectorType startSector,
                              VixDiskLibSectorType numSectors, const uint8_t *writeBuffer) {
  return sync_io((Handle *)diskHandle, "VixDiskLib_Write", startSector, numSectors, (uint8_t *)writeBuffer, 1);
}

static VixError async_io(Handle *h, const char *fn, uint64_t sector, uint64_t count, uint8_t *buf,
                         VixDiskLibCompletionCB cb, void *cbData, int isWrite) {
  int code = check_io(h, fn, sector, count, buf, isWrite);
  if (code) return fail(code);
  if (atomic_load(&h->busy)) {
    WARN("%s: refused: another thread is doing synchronous I/O on this disk handle "
         "(VDDK forbids concurrent I/O on one handle)\n",
         fn);
    return fail(E_OBJECT_IS_BUSY);
  }
  Job *j = calloc(1, sizeof *j);
  if (!j) return fail(E_OUT_OF_MEMORY);
  j->h = h;
  j->isWrite = isWrite;
  j->sector = sector;
  j->count = count;
  j->buf = buf;
  j->cb = cb;
  j->cbData = cbData;
  if (!isWrite) j->readNo = atomic_fetch_add(&h->conn->readCount, 1) + 1;
  atomic_fetch_add(&h->pending, 1);
  atomic_fetch_add(&h->outstanding, 1);
  pthread_mutex_lock(&g_qLock);
  if (g_qTail)
    g_qTail->next = j;
  else
    g_qHead = j;
  g_qTail = j;
  pthread_cond_signal(&g_qCond);
  pthread_mutex_unlock(&g_qLock);
  return VIX_ASYNC;
}

API VixError VixDiskLib_ReadAsync(VixDiskLibHandle diskHandle, VixDiskLibSectorType startSector,
                                  VixDiskLibSectorType numSectors, uint8_t *readBuffer,
                                  VixDiskLibCompletionCB callback, void *cbData) {
  return async_io((Handle *)diskHandle, "VixDiskLib_ReadAsync", startSector, numSectors, readBuffer, callback, cbData,
                  0);
}

API VixError VixDiskLib_WriteAsync(VixDiskLibHandle diskHandle, VixDiskLibSectorType startSector,
                                   VixDiskLibSectorType numSectors, const uint8_t *writeBuffer,
                                   VixDiskLibCompletionCB callback, void *cbData) {
  return async_io((Handle *)diskHandle, "VixDiskLib_WriteAsync", startSector, numSectors, (uint8_t *)writeBuffer,
                  callback, cbData, 1);
}

API VixError VixDiskLib_Wait(VixDiskLibHandle diskHandle) {
  int code;
  if ((code = require_init("VixDiskLib_Wait"))) return fail(code);
  Handle *h = (Handle *)diskHandle;
  if (!handle_valid(h)) return fail(E_INVALID_HANDLE);
  pthread_mutex_lock(&h->pendLock);
  while (atomic_load(&h->outstanding) > 0) pthread_cond_wait(&h->pendCond, &h->pendLock);
  pthread_mutex_unlock(&h->pendLock);
  return VIX_OK;
}

API VixError VixDiskLib_Flush(VixDiskLibHandle diskHandle) {
  int code;
  if ((code = require_init("VixDiskLib_Flush"))) return fail(code);
  Handle *h = (Handle *)diskHandle;
  if (!handle_valid(h)) return fail(E_INVALID_HANDLE);
  if (h->readOnly) return VIX_OK;
  pthread_mutex_lock(&h->writeLock);
  int bad = fsync(h->layers[0].fd) != 0 || (h->layers[0].mapFd >= 0 && fsync(h->layers[0].mapFd) != 0);
  pthread_mutex_unlock(&h->writeLock);
  return bad ? fail(E_DISK_NOIO) : VIX_OK;
}

/* ---------------------------------------------------------------------------------------------- */
/* Allocated blocks */

API VixError VixDiskLib_QueryAllocatedBlocks(VixDiskLibHandle diskHandle, VixDiskLibSectorType startSector,
                                             VixDiskLibSectorType numSectors, VixDiskLibSectorType chunkSize,
                                             VixDiskLibBlockList **blockList) {
  int code;
  if ((code = require_init("VixDiskLib_QueryAllocatedBlocks"))) return fail(code);
  Handle *h = (Handle *)diskHandle;
  if (!blockList) return fail(E_INVALID_ARG);
  *blockList = NULL;
  if (!handle_valid(h)) return fail(E_INVALID_HANDLE);
  if (chunkSize < VIXDISKLIB_MIN_CHUNK_SIZE || startSector % chunkSize || numSectors % chunkSize ||
      numSectors / chunkSize > VIXDISKLIB_MAX_CHUNK_NUMBER) {
    WARN("VixDiskLib_QueryAllocatedBlocks: chunkSize must be at least %d sectors, start and length multiples of "
         "it, and at most %d chunks per call\n",
         VIXDISKLIB_MIN_CHUNK_SIZE, VIXDISKLIB_MAX_CHUNK_NUMBER);
    return fail(E_INVALID_ARG);
  }
  uint64_t capS = h->capacity / 512;
  if (startSector > capS || numSectors > capS - startSector) return fail(E_DISK_OUTOFRANGE);
  uint64_t nChunks = numSectors / chunkSize;
  unsigned char *mark = calloc(1, nChunks ? nChunks : 1);
  if (!mark) return fail(E_OUT_OF_MEMORY);
  uint64_t startB = startSector * 512, endB = (startSector + numSectors) * 512, chunkB = chunkSize * 512;
#define MARK(a, b)                                                                 \
  do {                                                                             \
    uint64_t a_ = (a) < startB ? startB : (a), b_ = (b) > endB ? endB : (b);       \
    if (a_ < b_)                                                                   \
      for (uint64_t k = (a_ - startB) / chunkB; k <= (b_ - 1 - startB) / chunkB; k++) mark[k] = 1; \
  } while (0)
  for (int i = 0; i < h->nLayers; i++) {
    Layer *l = &h->layers[i];
    if (l->isDelta) {
      uint64_t g0 = startB / l->grainSize, g1 = (endB + l->grainSize - 1) / l->grainSize;
      for (uint64_t g = g0; g < g1; g++)
        if (grain_present(l, g)) MARK(g * l->grainSize, (g + 1) * l->grainSize);
    } else {
      off_t pos = (off_t)startB;
      while ((uint64_t)pos < endB) {
        off_t data = lseek(l->fd, pos, SEEK_DATA);
        if (data < 0 || (uint64_t)data >= endB) break;
        off_t hole = lseek(l->fd, data, SEEK_HOLE);
        if (hole < 0) hole = (off_t)endB;
        MARK((uint64_t)data, (uint64_t)hole);
        pos = hole;
      }
    }
  }
#undef MARK
  uint32_t runs = 0;
  for (uint64_t k = 0; k < nChunks; k++)
    if (mark[k] && (k == 0 || !mark[k - 1])) runs++;
  VixDiskLibBlockList *bl = malloc(offsetof(VixDiskLibBlockList, blocks) + sizeof(VixDiskLibBlock) * (runs ? runs : 1));
  if (!bl) {
    free(mark);
    return fail(E_OUT_OF_MEMORY);
  }
  bl->numBlocks = runs;
  uint32_t r = 0;
  for (uint64_t k = 0; k < nChunks; k++) {
    if (!mark[k]) continue;
    if (k == 0 || !mark[k - 1]) {
      bl->blocks[r].offset = startSector + k * chunkSize;
      bl->blocks[r].length = 0;
      r++;
    }
    bl->blocks[r - 1].length += chunkSize;
  }
  free(mark);
  *blockList = bl;
  return VIX_OK;
}

API VixError VixDiskLib_FreeBlockList(VixDiskLibBlockList *blockList) {
  free(blockList);
  return VIX_OK;
}

/* ---------------------------------------------------------------------------------------------- */
/* Metadata */

API VixError VixDiskLib_GetMetadataKeys(VixDiskLibHandle diskHandle, char *keys, size_t maxLen, size_t *requiredLen) {
  int code;
  if ((code = require_init("VixDiskLib_GetMetadataKeys"))) return fail(code);
  Handle *h = (Handle *)diskHandle;
  if (!handle_valid(h)) return fail(E_INVALID_HANDLE);
  size_t need = 1;
  for (int i = 0; i < h->nDdb; i++) need += strlen(h->ddbKey[i]) + 1;
  if (requiredLen) *requiredLen = need;
  if (!keys || maxLen < need) return fail(E_BUFFER_TOOSMALL);
  char *p = keys;
  for (int i = 0; i < h->nDdb; i++) {
    size_t n = strlen(h->ddbKey[i]) + 1;
    memcpy(p, h->ddbKey[i], n);
    p += n;
  }
  *p = 0;
  return VIX_OK;
}

API VixError VixDiskLib_ReadMetadata(VixDiskLibHandle diskHandle, const char *key, char *buf, size_t bufLen,
                                     size_t *requiredLen) {
  int code;
  if ((code = require_init("VixDiskLib_ReadMetadata"))) return fail(code);
  Handle *h = (Handle *)diskHandle;
  if (!handle_valid(h)) return fail(E_INVALID_HANDLE);
  if (!key) return fail(E_INVALID_ARG);
  for (int i = 0; i < h->nDdb; i++) {
    if (strcmp(h->ddbKey[i], key) != 0) continue;
    size_t need = strlen(h->ddbValue[i]) + 1;
    if (requiredLen) *requiredLen = need;
    if (!buf || bufLen < need) return fail(E_BUFFER_TOOSMALL);
    memcpy(buf, h->ddbValue[i], need);
    return VIX_OK;
  }
  return fail(E_DISK_KEY_NOTFOUND);
}

/* ---------------------------------------------------------------------------------------------- */
/* PrepareForAccess / EndAccess / Cleanup */

static int check_access_params(const char *fn, const VixDiskLibConnectParams *p, const char *identity) {
  int code;
  if ((code = require_init(fn))) return code;
  if (!p || !identity || strlen(identity) > 50) {
    WARN("%s: connect parameters and an identity of at most 50 characters are required\n", fn);
    return E_INVALID_ARG;
  }
  if ((code = check_remote_params(fn, p))) return code;
  if (!p->vmxSpec) {
    WARN("%s: the connect parameters must name the VM (vmxSpec)\n", fn);
    return E_INVALID_ARG;
  }
  return 0;
}

API VixError VixDiskLib_PrepareForAccess(const VixDiskLibConnectParams *p, const char *identity) {
  int code = check_access_params("VixDiskLib_PrepareForAccess", p, identity);
  if (code) return fail(code);
  LOG("VixDiskLib: %s prepares %s for access (Storage vMotion off)\n", identity, p->vmxSpec);
  return VIX_OK;
}

API VixError VixDiskLib_EndAccess(const VixDiskLibConnectParams *p, const char *identity) {
  int code = check_access_params("VixDiskLib_EndAccess", p, identity);
  if (code) return fail(code);
  LOG("VixDiskLib: %s ends access to %s\n", identity, p->vmxSpec);
  return VIX_OK;
}

static int pid_alive(long pid) {
  if (pid <= 0) return 0;
  if (kill((pid_t)pid, 0) == 0) return 1;
  return errno == EPERM;
}

API VixError VixDiskLib_Cleanup(const VixDiskLibConnectParams *p, uint32_t *numCleanedUp, uint32_t *numRemaining) {
  int code;
  if ((code = require_init("VixDiskLib_Cleanup"))) return fail(code);
  if (numCleanedUp) *numCleanedUp = 0;
  if (numRemaining) *numRemaining = 0;
  if (!p || !p->serverName) return VIX_OK; /* local connections leave nothing behind */
  if ((code = check_remote_params("VixDiskLib_Cleanup", p))) return fail(code);
  const char *proxyVm = cfg("vixDiskLib.lab.proxyVm");
  if (!proxyVm) return VIX_OK;
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/attached/%s", cfg("vixDiskLib.lab.root"), proxyVm);
  DIR *d = opendir(dir);
  if (!d) return VIX_OK;
  uint32_t cleaned = 0, remaining = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    size_t n = strlen(e->d_name);
    if (n < 8 || strcmp(e->d_name + n - 7, ".attach") != 0) continue;
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    KeyValues kv = {0};
    if (kv_parse_file(path, &kv) != 0) continue;
    const char *by = kv_get(&kv, "attachedBy"), *pid = kv_get(&kv, "pid"), *created = kv_get(&kv, "createdAt");
    if (created && by && strcmp(by, "vddk-hotadd") == 0 && !pid_alive(pid ? atol(pid) : 0)) {
      if (unlink(path) == 0 || errno == ENOENT) {
        cleaned++;
        LOG("VixDiskLib_Cleanup: detached %s left by dead process %s (%s)\n", e->d_name, pid ? pid : "?",
            kv_get(&kv, "fileName") ? kv_get(&kv, "fileName") : "");
      } else {
        remaining++;
        WARN("VixDiskLib_Cleanup: cannot remove %s: %s\n", path, strerror(errno));
      }
    }
    kv_free(&kv);
  }
  closedir(d);
  if (numCleanedUp) *numCleanedUp = cleaned;
  if (numRemaining) *numRemaining = remaining;
  return remaining ? fail(E_FILE_ACCESS_ERROR) : VIX_OK;
}

/* ---------------------------------------------------------------------------------------------- */
/* Error text */

static const struct {
  int code;
  const char *text;
} g_errors[] = {
    {0, "The operation was successful"},
    {1, "Unknown error"},
    {2, "Memory allocation failed. Out of memory"},
    {3, "One of the parameters was invalid"},
    {4, "The file was not found"},
    {5, "This object is in use"},
    {6, "The operation is not supported"},
    {7, "A file access error occurred on the host or guest operating system"},
    {8, "An error occurred while writing a file; the disk is full"},
    {11, "The file is write-protected"},
    {13, "You do not have access rights to this file"},
    {15, "The file is already in use"},
    {24, "The buffer is too small"},
    {25, "The object was not found"},
    {26, "Cannot connect to host"},
    {35, "Authentication failed"},
    {36, "The connection to the host was lost"},
    {1000, "The handle is not a valid VIX object"},
    {3014, "Insufficient permissions in the host operating system"},
    {4000, "The virtual machine cannot be found"},
    {13003, "The snapshot was not found"},
    {13010, "The snapshot is locked"},
    {14006, "NBD_ERR_NETWORK_CONNECT: the network block device handshake failed"},
    {14007, "A socket could not be created"},
    {14008, "The host server could not be found"},
    {14009, "The host refused the connection"},
    {14010, "A TCP socket error occurred"},
    {14011, "The TCP connection to the host was lost"},
    {14014, "The host is entering maintenance mode"},
    {14015, "The host is in maintenance mode"},
    {16000, "The disk is invalid"},
    {16001, "The disk library has not been initialized"},
    {16002, "A disk I/O error occurred"},
    {16003, "The disk chain is incomplete: a parent disk is missing"},
    {16006, "The disk needs repair"},
    {16007, "The requested sectors are beyond the end of the disk"},
    {16008, "The parent's content ID does not match the child's"},
    {16013, "The operation is not supported for this type of disk"},
    {16027, "Too many open files"},
    {16052, "The metadata key was not found"},
    {16053, "The disk subsystem could not be initialized"},
    {16054, "The connection is not valid"},
    {18000, "Cannot connect to the host"},
    {26000, "Mixing synchronous and asynchronous I/O on one disk handle is not supported"},
    {30201, "The server's SSL certificate was rejected"},
};

API char *VixDiskLib_GetErrorText(VixError err, const char *locale) {
  (void)locale;
  int code = (int)(err & 0xFFFF);
  for (size_t i = 0; i < sizeof g_errors / sizeof g_errors[0]; i++)
    if (g_errors[i].code == code) return strdup(g_errors[i].text);
  char buf[64];
  snprintf(buf, sizeof buf, "Unknown error code %d", code);
  return strdup(buf);
}

API void VixDiskLib_FreeErrorText(char *errMsg) { free(errMsg); }
