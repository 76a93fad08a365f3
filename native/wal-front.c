/*
 * holdfast-push: the native front of `holdfast pg archive-push` (docs/design.md §12).
 *
 * Without --async, once the Node CLI left a sync ticket for the call's inputs, it stores the
 * segment itself (sync_push below: the CLI's checks, lock, object format and fsyncs, in C), and
 * hands every case that is not the plain one to Node before storing anything. `pg archive-get
 * --prefetch N` calls it answers from the prefetch queue (answer_get). With --async:
 *
 * Under a burst of WAL, PostgreSQL calls archive_command once per segment and waits for each call,
 * while holdfast's async worker has usually stored the segment already: the call only has to find
 * the worker's record in the spool and check it against the file's content. Starting Node for that
 * costs ~30 ms of CPU before any work; this program does it in a few milliseconds and hands every
 * other call, unchanged, to the Node CLI (execv of node bin/holdfast.cjs with the same arguments).
 *
 * It answers exit 0 only when all of this holds, and otherwise runs Node, which decides as always:
 *   - the call is `pg archive-push ... WALPATH` with the WAL path last;
 *   - a ticket left by the Node CLI for exactly these raw inputs exists (src/ops/pg-archive-ticket.ts
 *     defines the key and the format) in a directory of this user that nobody else can write, and
 *     the config file it was made from still has the same content;
 *   - the spool is a directory of this user that nobody else can write, bound to the repository
 *     instance (SHA-256 of the local repository's `config` object) found at the location now;
 *   - the spool has a success record for the file whose GMAC (AES-256-GCM, the spool key, the
 *     record's nonce) over "holdfast-spool-v1\0<file>\0" and the file's content equals the
 *     record's tag: the content offered now is the content the worker made durable.
 * These are the checks the Node CLI makes on its own fast path (src/ops/pg-archive-spool.ts), so the
 * answer is the same; only the time differs.
 *
 * When the record is not there yet but the file is ready and the spool's worker record names a
 * live process serving this pg_wal, it waits for the record as Node's call would (`<file>.want`,
 * inotify on the spool, the worker re-checked every 250 ms, at most --async-timeout from the
 * ticket), then checks it as above. An error record, a worker that stops, or the time running out
 * hands the call to Node, told how long was waited (HOLDFAST_FRONT_WAITED_MS, counted against
 * --async-timeout), which reports the error, starts a worker, or fails with ARCHIVE_TIMEOUT.
 *
 * HOLDFAST_FRONT=off hands every call to Node; HOLDFAST_FRONT=trace says on stderr what was decided.
 *
 * libcrypto 3 is linked (libcrypto.so.3) and the few functions used are declared here, so the build
 * needs no OpenSSL headers. HOLDFAST_NODE (the node binary) is set by scripts/build.mjs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <poll.h>
#include <pthread.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef HOLDFAST_NODE
#define HOLDFAST_NODE "/usr/bin/node"
#endif

extern char **environ;

typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;
typedef struct evp_cipher_st EVP_CIPHER;
typedef struct evp_md_st EVP_MD;
typedef struct engine_st ENGINE;
extern EVP_CIPHER_CTX *EVP_CIPHER_CTX_new(void);
extern void EVP_CIPHER_CTX_free(EVP_CIPHER_CTX *ctx);
extern const EVP_CIPHER *EVP_aes_256_gcm(void);
extern int EVP_EncryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *type, ENGINE *impl, const unsigned char *key, const unsigned char *iv);
extern int EVP_EncryptUpdate(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl, const unsigned char *in, int inl);
extern int EVP_EncryptFinal_ex(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl);
extern int EVP_CIPHER_CTX_ctrl(EVP_CIPHER_CTX *ctx, int type, int arg, void *ptr);
extern const EVP_MD *EVP_sha256(void);
extern int EVP_Digest(const void *data, size_t count, unsigned char *md, unsigned int *size, const EVP_MD *type, ENGINE *impl);
extern int EVP_DecryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *type, ENGINE *impl, const unsigned char *key, const unsigned char *iv);
extern int EVP_DecryptUpdate(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl, const unsigned char *in, int inl);
extern int EVP_DecryptFinal_ex(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl);
extern unsigned char *HMAC(const EVP_MD *evp_md, const void *key, int key_len, const unsigned char *data, size_t data_len, unsigned char *md, unsigned int *md_len);
extern int RAND_bytes(unsigned char *buf, int num);
#define EVP_CTRL_AEAD_GET_TAG 0x10
#define EVP_CTRL_AEAD_SET_TAG 0x11

/* libzstd (libzstd.so.1), for the synchronous push (sync-push.inc) */
typedef struct ZSTD_CCtx_s ZSTD_CCtx;
extern ZSTD_CCtx *ZSTD_createCCtx(void);
extern size_t ZSTD_freeCCtx(ZSTD_CCtx *cctx);
extern size_t ZSTD_compressCCtx(ZSTD_CCtx *cctx, void *dst, size_t dstCapacity, const void *src, size_t srcSize, int compressionLevel);
extern size_t ZSTD_compressBound(size_t srcSize);
extern unsigned ZSTD_isError(size_t code);
extern size_t ZSTD_decompress(void *dst, size_t dstCapacity, const void *src, size_t compressedSize);
extern unsigned long long ZSTD_getFrameContentSize(const void *src, size_t srcSize);

#define TICKET_VERSION "holdfast-ticket-v1"
#define SPOOL_HEADER "holdfast-spool-v1"
#define PIECE (1 << 20)

static char reason[PATH_MAX + 256];

/* Why the call goes to Node (formatted into one static buffer). */
static const char *miss(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(reason, sizeof reason, fmt, ap);
  va_end(ap);
  return reason;
}

struct buf {
  unsigned char *p;
  size_t len, cap;
};

static int buf_add(struct buf *b, const void *data, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + n) cap *= 2;
    unsigned char *p = realloc(b->p, cap);
    if (!p) return 0;
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, data, n);
  b->len += n;
  return 1;
}

/* One key field: "<byte length>:<bytes>". */
static int field(struct buf *b, const char *s, size_t n) {
  char len[32];
  int k = snprintf(len, sizeof len, "%zu:", n);
  return buf_add(b, len, (size_t)k) && buf_add(b, s, n);
}

static void hex(const unsigned char *in, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[in[i] >> 4];
    out[2 * i + 1] = digits[in[i] & 15];
  }
  out[2 * n] = 0;
}

static int unhex(const char *in, size_t n, unsigned char *out) {
  for (size_t i = 0; i < n; i++) {
    int v = 0;
    for (int j = 0; j < 2; j++) {
      char c = in[2 * i + j];
      int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
      if (d < 0) return 0;
      v = v * 16 + d;
    }
    out[i] = (unsigned char)v;
  }
  return 1;
}

static int sha256_hex(const void *data, size_t n, char out[65]) {
  unsigned char md[32];
  unsigned int mdlen = 0;
  if (!EVP_Digest(data, n, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32) return 0;
  hex(md, 32, out);
  return 1;
}

/*
 * The whole content of a file of at most `max` bytes (NUL-terminated, length in *len), or NULL with
 * errno set (EFBIG when larger). `nofollow`: refuse a symbolic link. `st`: its fstat when wanted.
 */
static char *read_file(const char *path, size_t max, size_t *len, int nofollow, struct stat *st) {
  int fd = open(path, O_RDONLY | O_CLOEXEC | (nofollow ? O_NOFOLLOW : 0));
  if (fd < 0) return NULL;
  struct stat s;
  if (fstat(fd, &s) != 0) goto fail;
  if (st) *st = s;
  size_t cap = 4096, n = 0;
  char *p = malloc(cap + 1);
  if (!p) goto fail;
  for (;;) {
    if (n == cap) {
      if (cap >= max) {
        free(p);
        errno = EFBIG;
        goto fail;
      }
      cap = cap * 2 > max ? max : cap * 2;
      char *q = realloc(p, cap + 1);
      if (!q) {
        free(p);
        goto fail;
      }
      p = q;
    }
    ssize_t r = read(fd, p + n, cap - n);
    if (r < 0) {
      if (errno == EINTR) continue;
      free(p);
      goto fail;
    }
    if (r == 0) break;
    n += (size_t)r;
  }
  close(fd);
  p[n] = 0;
  *len = n;
  return p;
fail: {
  int e = errno;
  close(fd);
  errno = e;
  return NULL;
}
}

/* A directory of this user that nobody else can write (not followed if a symbolic link). */
static int private_dir(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == getuid() && (st.st_mode & 022) == 0;
}

/* holdfast's state directory from the environment, as defaultStateDir (src/state/key-cache.ts). */
static char *state_dir(void) {
  const char *s = getenv("HOLDFAST_STATE_DIR");
  char *out = NULL;
  if (s && *s) return strdup(s);
  s = getenv("XDG_CACHE_HOME");
  if (s && *s) return asprintf(&out, "%s/holdfast", s) < 0 ? NULL : out;
  s = getenv("HOME");
  if (s && *s && strcmp(s, "/") != 0 && strcmp(s, "/nonexistent") != 0) return asprintf(&out, "%s/.cache/holdfast", s) < 0 ? NULL : out;
  return NULL; /* Node falls back to os.tmpdir(): not worth repeating here */
}

static int env_selected(const char *e) {
  if (strncmp(e, "HOME=", 5) == 0 || strncmp(e, "XDG_CACHE_HOME=", 15) == 0) return 1;
  if (strncmp(e, "HOLDFAST_", 9) != 0) return 0;
  return strncmp(e, "HOLDFAST_PASSWORD=", 18) != 0 && strncmp(e, "HOLDFAST_FRONT=", 15) != 0 && strncmp(e, "HOLDFAST_FRONT_WAITED_MS=", 25) != 0 && strchr(e, '=') != NULL;
}

static int by_bytes(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The ticket key of this call (src/ops/pg-archive-ticket.ts ticketKey), as hex: every argument but the last `trailing` (the paths). */
static int ticket_key(int argc, char **argv, int trailing, char out[65]) {
  char cwd[PATH_MAX], tmp[64];
  if (!getcwd(cwd, sizeof cwd)) return 0;
  struct buf b = {0};
  int ok = field(&b, TICKET_VERSION, strlen(TICKET_VERSION));
  snprintf(tmp, sizeof tmp, "%u", (unsigned)getuid());
  ok = ok && field(&b, tmp, strlen(tmp)) && field(&b, cwd, strlen(cwd));
  snprintf(tmp, sizeof tmp, "a%d", argc - 1 - trailing);
  ok = ok && field(&b, tmp, strlen(tmp));
  for (int i = 1; ok && i < argc - trailing; i++) ok = field(&b, argv[i], strlen(argv[i]));
  size_t n = 0, k = 0;
  for (char **e = environ; *e; e++) n++;
  const char **env = calloc(n + 1, sizeof *env);
  if (!env) ok = 0;
  for (char **e = environ; ok && *e; e++)
    if (env_selected(*e)) env[k++] = *e;
  if (ok) {
    qsort(env, k, sizeof *env, by_bytes);
    snprintf(tmp, sizeof tmp, "e%zu", k);
    ok = field(&b, tmp, strlen(tmp));
    for (size_t i = 0; ok && i < k; i++) ok = field(&b, env[i], strlen(env[i]));
  }
  ok = ok && sha256_hex(b.p, b.len, out);
  free(env);
  free(b.p);
  return ok;
}

/* A file name the spool can hold a record for: letters, digits, '.', '_', '-'. */
static int safe_name(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 200 || s[0] == '.') return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '.' || c == '_' || c == '-')) return 0;
  }
  return 1;
}

/* Next line of `*text` (the newline replaced by NUL); NULL at the end. */
static char *next_line(char **text) {
  char *s = *text;
  if (!s || !*s) return NULL;
  char *nl = strchr(s, '\n');
  if (nl) {
    *nl = 0;
    *text = nl + 1;
  } else {
    *text = NULL;
  }
  return s;
}

struct ticket {
  const char *spool, *repo_config, *config_digest, *config_path;
  long long timeout_ms;
};

/* "<prefix><rest>" on the next line; the rest in *out. */
static int ticket_line(char **text, const char *prefix, const char **out) {
  char *l = next_line(text);
  size_t n = strlen(prefix);
  if (!l || strncmp(l, prefix, n) != 0 || !l[n]) return 0;
  *out = l + n;
  return 1;
}

/* "<prefix>/<path>" on the next line: the absolute path in *out. */
static int ticket_path(char **text, const char *prefix, const char **out) {
  char pre[32];
  snprintf(pre, sizeof pre, "%s/", prefix);
  if (!ticket_line(text, pre, out)) return 0;
  (*out)--; /* the leading '/' */
  return 1;
}

/* "config <SHA-256 hex or absent> <absolute path>" on the next line. */
static int ticket_config(char **text, const char **digest, const char **path) {
  const char *v = NULL;
  if (!ticket_line(text, "config ", &v)) return 0;
  char *sp = strchr(v, ' ');
  if (!sp || sp[1] != '/') return 0;
  *sp = 0;
  *digest = v;
  *path = sp + 1;
  return 1;
}

static int parse_ticket(char *text, struct ticket *t) {
  const char *v = NULL;
  char *l = next_line(&text);
  if (!l || strcmp(l, TICKET_VERSION) != 0) return 0;
  if (!ticket_path(&text, "spool ", &t->spool) || !ticket_path(&text, "repo-config ", &t->repo_config) || !ticket_config(&text, &t->config_digest, &t->config_path)) return 0;
  if (!ticket_line(&text, "async-timeout ", &v)) return 0;
  char *end = NULL;
  errno = 0;
  t->timeout_ms = strtoll(v, &end, 10);
  if (errno || *end || t->timeout_ms < 0) return 0;
  return next_line(&text) == NULL;
}

/* The content of `path` has SHA-256 `digest` ("absent": there is no such file). */
static const char *same_content(const char *path, const char *digest, const char *what) {
  size_t n = 0;
  char *data = read_file(path, 16u << 20, &n, 0, NULL);
  if (!data) {
    if (errno == ENOENT && strcmp(digest, "absent") == 0) return NULL;
    return miss("cannot read the %s %s: %s", what, path, strerror(errno));
  }
  char h[65];
  int ok = sha256_hex(data, n, h);
  free(data);
  if (!ok) return miss("SHA-256 failed");
  return strcmp(h, digest) == 0 ? NULL : miss("the %s %s changed since the ticket was made", what, path);
}

/* The GMAC of "holdfast-spool-v1\0<file>\0" + the content of `wal` equals `tag`. */
static const char *content_matches(const unsigned char key[32], const unsigned char nonce[12], const unsigned char tag[16], const char *file, const char *wal, const char *recorded) {
  int fd = open(wal, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return miss("cannot open %s: %s", wal, strerror(errno));
  (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  unsigned char *piece = malloc(PIECE);
  const char *why = NULL;
  int outl = 0;
  char header[256];
  int hl = snprintf(header, sizeof header, "%s%c%s%c", SPOOL_HEADER, 0, file, 0);
  if (!ctx || !piece || hl <= 0 || (size_t)hl >= sizeof header || !EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce) || !EVP_EncryptUpdate(ctx, NULL, &outl, (const unsigned char *)header, hl)) {
    why = miss("GMAC set-up failed");
  }
  while (!why) {
    ssize_t r = read(fd, piece, PIECE);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) why = miss("cannot read %s: %s", wal, strerror(errno));
    else if (r == 0) break;
    else if (!EVP_EncryptUpdate(ctx, NULL, &outl, piece, (int)r)) why = miss("GMAC failed");
  }
  unsigned char got[16], out[16];
  if (!why && (!EVP_EncryptFinal_ex(ctx, out, &outl) || !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, got))) why = miss("GMAC failed");
  if (!why && memcmp(got, tag, 16) != 0) why = miss("%s has other content than %s", wal, recorded);
  free(piece);
  EVP_CIPHER_CTX_free(ctx);
  close(fd);
  return why;
}

/* Milliseconds this call waited for the worker (told to the Node call it hands over). */
static long long waited_ms;

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The absolute, lexically normalized directory of `wal` (as Node's path.dirname(path.resolve())). */
static int wal_dir(const char *wal, char out[PATH_MAX]) {
  char joined[2 * PATH_MAX + 2], cwd[PATH_MAX];
  if (wal[0] == '/') snprintf(joined, sizeof joined, "%s", wal);
  else if (!getcwd(cwd, sizeof cwd)) return 0;
  else snprintf(joined, sizeof joined, "%s/%s", cwd, wal);
  char *slash = strrchr(joined, '/');
  *slash = 0;
  size_t n = 0;
  out[0] = 0;
  for (char *save = NULL, *part = strtok_r(joined, "/", &save); part; part = strtok_r(NULL, "/", &save)) {
    if (strcmp(part, ".") == 0) continue;
    if (strcmp(part, "..") == 0) {
      char *up = strrchr(out, '/');
      n = up ? (size_t)(up - out) : 0;
      out[n] = 0;
      continue;
    }
    size_t k = strlen(part);
    if (n + k + 2 > PATH_MAX) return 0;
    out[n++] = '/';
    memcpy(out + n, part, k);
    n += k;
    out[n] = 0;
  }
  if (n == 0) strcpy(out, "/");
  return 1;
}

/* Field 22 of /proc/<pid>/stat (start time), or 0 when the process is gone or a zombie. */
static unsigned long long start_time(long pid) {
  char path[64];
  size_t n = 0;
  snprintf(path, sizeof path, "/proc/%ld/stat", pid);
  char *stat = read_file(path, 4096, &n, 0, NULL);
  if (!stat) return 0;
  char *p = strrchr(stat, ')');
  unsigned long long start = 0;
  if (p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X') {
    p += 2;
    for (int field = 3; p && field < 22; field++) {
      p = strchr(p, ' ');
      if (p) p++;
    }
    if (p) start = strtoull(p, NULL, 10);
  }
  free(stat);
  return start;
}

/* The spool's live worker serves `dir`: its record (pg-archive-spool.ts writeWorker) names a running process. */
static int worker_serves(const char *spool, const char *dir) {
  char path[PATH_MAX];
  size_t n = 0;
  snprintf(path, sizeof path, "%s/worker", spool);
  char *rec = read_file(path, PATH_MAX + 128, &n, 0, NULL);
  if (!rec) return 0;
  long pid = 0;
  unsigned long long start = 0;
  int at = 0, ok = 0;
  if (sscanf(rec, "holdfast-worker-v1 %ld %llu %n", &pid, &start, &at) == 2 && at > 0 && pid > 0) {
    char *w = rec + at;
    size_t len = strlen(w);
    if (len > 0 && w[len - 1] == '\n') w[len - 1] = 0;
    ok = strcmp(w, dir) == 0 && start != 0 && start_time(pid) == start;
  }
  free(rec);
  return ok;
}

/*
 * Wait, as Node's call would (pg-archive-async.ts), for the worker to record `file`: only while it
 * is ready (archive_status/<file>.ready), a live worker serves its pg_wal (checked every 250 ms),
 * and for at most `timeout_ms`. NULL once `<file>.ok` is there; otherwise why Node has to decide
 * (an error record, no worker, the time is up: Node reports or waits the rest of --async-timeout).
 */
static const char *wait_for_record(const char *spool, const char *file, const char *wal, long long timeout_ms) {
  char dir[PATH_MAX], path[PATH_MAX + 300];
  if (!wal_dir(wal, dir)) return miss("cannot resolve the directory of %s", wal);
  snprintf(path, sizeof path, "%s/archive_status/%s.ready", dir, file);
  if (access(path, F_OK) != 0) return miss("no success record for %s in the spool, and it is not ready (%s)", file, path);
  if (!worker_serves(spool, dir)) return miss("no success record for %s in the spool, and no live async worker serves %s", file, dir);
  snprintf(path, sizeof path, "%s/%s.want", spool, file);
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd >= 0) close(fd); /* only a priority hint, as in Node */
  int in = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  if (in >= 0 && inotify_add_watch(in, spool, IN_MOVED_TO | IN_CREATE | IN_CLOSE_WRITE) < 0) {
    close(in);
    in = -1;
  }
  long long start = now_ms(), next_check = start + 250;
  const char *why = NULL;
  char ok[PATH_MAX + 300], err[PATH_MAX + 300];
  snprintf(ok, sizeof ok, "%s/%s.ok", spool, file);
  snprintf(err, sizeof err, "%s/%s.error", spool, file);
  for (;;) {
    if (access(ok, F_OK) == 0) break;
    if (access(err, F_OK) == 0) {
      why = miss("the async worker recorded a failure for %s", file);
      break;
    }
    long long now = now_ms();
    if (now - start >= timeout_ms) {
      why = miss("the async worker has not recorded %s after %lld ms", file, now - start);
      break;
    }
    if (now >= next_check) {
      next_check = now + 250;
      if (!worker_serves(spool, dir)) {
        why = miss("the async worker serving %s stopped before recording %s", dir, file);
        break;
      }
    }
    long long left = timeout_ms - (now - start);
    int ms = in >= 0 ? 50 : 10;
    if (left < ms) ms = (int)left;
    struct pollfd p = {.fd = in, .events = POLLIN};
    if (in >= 0) {
      if (poll(&p, 1, ms) > 0) {
        char drain[4096];
        while (read(in, drain, sizeof drain) > 0) {
        }
      }
    } else {
      poll(NULL, 0, ms);
    }
  }
  waited_ms = now_ms() - start;
  if (in >= 0) close(in);
  return why;
}

/*
 * The synchronous push (`pg archive-push` without --async; docs/design.md §12, "native push"):
 * when the ticket says so, this program stores a WAL segment itself, exactly as the Node CLI's
 * archivePush would (src/ops/pg-archive.ts storeWal, src/repository/repository.ts putNamedPieces,
 * src/storage/local.ts put, src/locks/protocol.ts), and hands every case that is not the plain one
 * to Node before it has stored anything: not a segment name, a cluster not bound yet, a header
 * that does not check out, an object already there, an exclusive lock, any unreadable file.
 */

struct sync_ticket {
  const char *repo, *instance, *key_id, *key_cache, *password_file, *cluster, *config_digest, *config_path;
  int level;
  long long lock_ttl_ms;
};

static int hex64(const char *s) {
  if (strlen(s) != 64) return 0;
  for (int i = 0; i < 64; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
  return 1;
}

static int parse_sync_ticket(char *text, struct sync_ticket *t) {
  const char *v = NULL;
  char *end = NULL;
  char *l = next_line(&text);
  if (!l || strcmp(l, TICKET_VERSION) != 0) return 0;
  l = next_line(&text);
  if (!l || strcmp(l, "sync") != 0) return 0;
  if (!ticket_path(&text, "repo ", &t->repo) || !ticket_line(&text, "instance ", &t->instance) || !hex64(t->instance)) return 0;
  if (!ticket_line(&text, "key ", &t->key_id) || !hex64(t->key_id)) return 0;
  if (!ticket_path(&text, "key-cache ", &t->key_cache) || !ticket_path(&text, "password-file ", &t->password_file)) return 0;
  if (!ticket_line(&text, "cluster ", &t->cluster)) return 0;
  if (!ticket_line(&text, "compression zstd:", &v)) return 0;
  errno = 0;
  long level = strtol(v, &end, 10);
  if (errno || *end || level < -7 || level > 22) return 0;
  t->level = (int)level;
  if (!ticket_line(&text, "lock-ttl ", &v)) return 0;
  t->lock_ttl_ms = strtoll(v, &end, 10);
  if (errno || *end || t->lock_ttl_ms <= 0) return 0;
  return ticket_config(&text, &t->config_digest, &t->config_path) && next_line(&text) == NULL;
}

/* A cluster name as checkClusterName allows: a letter or digit, then up to 63 of [A-Za-z0-9_.-]. */
static int cluster_name(const char *s) {
  char c = s[0];
  return strlen(s) <= 64 && ((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')) && safe_name(s);
}

static size_t unbase64(const char *in, size_t n, unsigned char *out, size_t cap) {
  size_t o = 0;
  unsigned acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; i++) {
    char c = in[i];
    int d = c >= 'A' && c <= 'Z' ? c - 'A' : c >= 'a' && c <= 'z' ? c - 'a' + 26 : c >= '0' && c <= '9' ? c - '0' + 52 : c == '+' ? 62 : c == '/' ? 63 : c == '=' ? -2 : -1;
    if (d == -2) break;
    if (d < 0) return (size_t)-1;
    acc = (acc << 6) | (unsigned)d;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      if (o == cap) return (size_t)-1;
      out[o++] = (unsigned char)(acc >> bits);
    }
  }
  return o;
}

/* Open a sealed object (nonce 12 | ciphertext | tag 16) into `out` (ciphertext length bytes); 0 when it does not authenticate. */
static int gcm_open(const unsigned char key[32], const unsigned char *sealed, size_t n, const void *aad, size_t aad_len, unsigned char *out) {
  if (n < 28 || n - 28 > INT_MAX) return 0;
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  int outl = 0, ok = ctx && EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, sealed) && EVP_DecryptUpdate(ctx, NULL, &outl, aad, (int)aad_len) &&
                     EVP_DecryptUpdate(ctx, out, &outl, sealed + 12, (int)(n - 28)) && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, 16, (void *)(sealed + n - 16)) &&
                     EVP_DecryptFinal_ex(ctx, out + outl, &outl);
  EVP_CIPHER_CTX_free(ctx);
  return ok;
}

/* Just after `"name":` (spaces allowed around the colon) in JSON that JSON.stringify wrote, or NULL. */
static const char *json_member(const char *json, const char *name) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\"", name);
  for (const char *p = strstr(json, pat); p; p = strstr(p + 1, pat)) {
    const char *q = p + strlen(pat);
    while (*q == ' ' || *q == '\n' || *q == '\t' || *q == '\r') q++;
    if (*q != ':') continue;
    q++;
    while (*q == ' ' || *q == '\n' || *q == '\t' || *q == '\r') q++;
    return q;
  }
  return NULL;
}

/* The value of a JSON string member `"name": "…"` without escapes. */
static const char *json_str(const char *json, const char *name, char *out, size_t cap) {
  const char *p = json_member(json, name);
  if (!p || *p != '"') return NULL;
  p++;
  const char *q = strchr(p, '"');
  if (!q || (size_t)(q - p) >= cap || memchr(p, '\\', (size_t)(q - p))) return NULL;
  memcpy(out, p, (size_t)(q - p));
  out[q - p] = 0;
  return out;
}

/* The value of a JSON integer member `"name": 123`. */
static int json_int(const char *json, const char *name, long long *v) {
  const char *p = json_member(json, name);
  if (!p || !((*p >= '0' && *p <= '9') || *p == '-')) return 0;
  char *end = NULL;
  errno = 0;
  *v = strtoll(p, &end, 10);
  while (*end == ' ' || *end == '\n' || *end == '\t' || *end == '\r') end++;
  return !errno && (*end == ',' || *end == '}');
}

/* The master key: the derived key from the key cache (src/state/key-cache.ts) unwraps the key file. */
static const char *master_key(const struct sync_ticket *t, unsigned char master[32]) {
  size_t n = 0;
  char path[PATH_MAX];
  const char *direct = getenv("HOLDFAST_PASSWORD");
  if (direct) return "HOLDFAST_PASSWORD is set (the password does not come from the file the ticket names)";
  char *pw = read_file(t->password_file, 64 << 10, &n, 0, NULL);
  if (!pw) return miss("cannot read the password file %s: %s", t->password_file, strerror(errno));
  size_t len = 0;
  while (len < n && pw[len] != '\n') len++;
  if (len > 0 && pw[len - 1] == '\r' && len < n) len--; /* the first line, as split(/\r?\n/) */
  const char *why = NULL;
  for (size_t i = 0; i < len && !why; i++)
    if ((unsigned char)pw[i] >= 0x80 || pw[i] == 0) why = "the password has non-ASCII bytes (Node decodes it)";
  if (!why && len == 0) why = "the password file is empty";
  if (!why && !private_dir(t->key_cache)) why = miss("the key cache %s is not a private directory of this user", t->key_cache);
  struct stat st;
  if (!why && (stat(t->key_cache, &st) != 0 || (st.st_mode & 077) != 0)) why = miss("the key cache %s is readable by others", t->key_cache);
  char *secret = NULL, *kek = NULL, *keyfile = NULL;
  if (!why) {
    snprintf(path, sizeof path, "%s/secret", t->key_cache);
    secret = read_file(path, 64, &n, 0, NULL);
    if (!secret || n != 32) why = "no key cache secret";
  }
  if (!why) {
    struct buf b = {0};
    unsigned char md[32];
    unsigned int mdlen = 0;
    char name[65];
    if (!buf_add(&b, pw, len) || !buf_add(&b, "", 1) || !buf_add(&b, t->key_id, 64) || !HMAC(EVP_sha256(), secret, 32, b.p, b.len, md, &mdlen) || mdlen != 32) why = "HMAC failed";
    free(b.p);
    if (!why) {
      hex(md, 32, name);
      snprintf(path, sizeof path, "%s/%s", t->key_cache, name);
      kek = read_file(path, 64, &n, 1, NULL);
      if (!kek || n != 32) why = "no cached key for this password and key";
    }
  }
  if (!why) {
    snprintf(path, sizeof path, "%s/keys/%s", t->repo, t->key_id);
    keyfile = read_file(path, 64 << 10, &n, 0, NULL);
    char h[65], data[256];
    unsigned char sealed[192];
    size_t m = 0;
    if (!keyfile) why = miss("cannot read the key file %s: %s", path, strerror(errno));
    else if (!sha256_hex(keyfile, n, h) || strcmp(h, t->key_id) != 0) why = "the key file's SHA-256 is not its name";
    else if (!json_str(keyfile, "data", data, sizeof data) || (m = unbase64(data, strlen(data), sealed, sizeof sealed)) != 12 + 32 + 16) why = "the key file has no wrapped key";
    else if (!gcm_open((const unsigned char *)kek, sealed, m, "holdfast:key", 12, master)) why = "the cached key does not unwrap the key file";
  }
  if (kek) memset(kek, 0, 32);
  if (pw) memset(pw, 0, n);
  free(keyfile);
  free(kek);
  free(secret);
  free(pw);
  return why;
}

/* A sealed object of the repository opened into a fresh buffer (plaintext length in *len). */
static unsigned char *open_object(const char *repo, const char *name, const char *aad, const unsigned char master[32], size_t max, size_t *len) {
  char path[PATH_MAX];
  size_t n = 0;
  snprintf(path, sizeof path, "%s/%s", repo, name);
  char *sealed = read_file(path, max, &n, 0, NULL);
  if (!sealed) return NULL;
  unsigned char *plain = n >= 28 ? malloc(n - 28 + 1) : NULL;
  if (!plain || !gcm_open(master, (unsigned char *)sealed, n, aad, strlen(aad), plain)) {
    free(plain);
    plain = NULL;
  } else {
    *len = n - 28;
  }
  free(sealed);
  return plain;
}

struct cluster_rec {
  unsigned long long system_id;
  long long pg_version, seg_size;
};

/* The cluster record (src/ops/pg-archive.ts readClusterRecord): mode byte, then JSON. */
static const char *read_cluster(const struct sync_ticket *t, const unsigned char master[32], struct cluster_rec *c) {
  char name[128], aad[160];
  snprintf(name, sizeof name, "clusters/%s", t->cluster);
  snprintf(aad, sizeof aad, "holdfast:named:%s", name);
  size_t n = 0;
  unsigned char *plain = open_object(t->repo, name, aad, master, 64 << 10, &n);
  if (!plain) return miss("cannot open %s (not bound yet, or damaged)", name);
  char *json = NULL;
  if (n >= 1 && plain[0] == 0) {
    json = malloc(n);
    if (json) memcpy(json, plain + 1, n - 1), json[n - 1] = 0;
  } else if (n >= 1 && plain[0] == 1) {
    unsigned long long size = ZSTD_getFrameContentSize(plain + 1, n - 1);
    if (size < 64 << 10) {
      json = malloc(size + 1);
      size_t r = json ? ZSTD_decompress(json, size, plain + 1, n - 1) : 0;
      if (json && (ZSTD_isError(r) || r != size)) {
        free(json);
        json = NULL;
      } else if (json) {
        json[size] = 0;
      }
    }
  }
  free(plain);
  const char *why = NULL;
  char sys[32];
  char *end = NULL;
  if (!json || strlen(json) == 0) why = miss("%s does not decode", name);
  else if (!json_str(json, "systemId", sys, sizeof sys) || !json_int(json, "pgVersion", &c->pg_version) || !json_int(json, "segSize", &c->seg_size)) why = miss("%s lacks systemId, pgVersion or segSize", name);
  else {
    errno = 0;
    c->system_id = strtoull(sys, &end, 10);
    if (errno || *end || !sys[0] || sys[0] == '-') why = miss("%s has a malformed systemId", name);
  }
  free(json);
  return why;
}

/* XLOG_PAGE_MAGIC -> PostgreSQL major version (src/wal/header.ts WAL_PAGE_MAGIC). */
static int pg_version_of_magic(unsigned magic) {
  static const unsigned magics[][2] = {{0xd101, 12}, {0xd106, 13}, {0xd10d, 14}, {0xd110, 15}, {0xd113, 16}, {0xd116, 17}, {0xd118, 18}};
  for (size_t i = 0; i < sizeof magics / sizeof magics[0]; i++)
    if (magics[i][0] == magic) return (int)magics[i][1];
  return 0;
}

static int pow2_between(unsigned long long v, unsigned long long lo, unsigned long long hi) {
  return v >= lo && v <= hi && (v & (v - 1)) == 0;
}

static unsigned long long le(const unsigned char *p, int n) {
  unsigned long long v = 0;
  for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

static int hexval(const char *s, int n, unsigned long long *v) {
  *v = 0;
  for (int i = 0; i < n; i++) {
    char c = s[i];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    if (d < 0) return 0;
    *v = *v * 16 + (unsigned)d;
  }
  return 1;
}

/*
 * A segment that passes checkSegment (src/wal/header.ts) against its name and the cluster record:
 * every check Node makes, and nothing else passes (Node reports whatever fails).
 */
static const char *check_segment(const char *file, const unsigned char *h, size_t hlen, unsigned long long size, const struct cluster_rec *c) {
  /* c NULL: only the header against itself, its name and the size (a queued copy, answer_get) */
  unsigned long long tli, log, seg;
  if (strlen(file) != 24 || !hexval(file, 8, &tli) || !hexval(file + 8, 8, &log) || !hexval(file + 16, 8, &seg) || tli == 0) return "not a WAL segment name (Node decides)";
  if (hlen < 40) return "shorter than a long page header";
  int version = pg_version_of_magic((unsigned)le(h, 2));
  unsigned info = (unsigned)le(h + 2, 2);
  unsigned long long htli = le(h + 4, 4), addr = le(h + 8, 8), sysid = le(h + 24, 8), segsize = le(h + 32, 4), blcksz = le(h + 36, 4);
  if (!version || !(info & 0x0002) || (info & ~0x0007u) || htli == 0) return "not a valid long page header";
  if (!pow2_between(segsize, 1ull << 20, 1ull << 30) || !pow2_between(blcksz, 1024, 65536) || addr % segsize != 0) return "implausible header";
  if (c && (sysid != c->system_id || (long long)segsize != c->seg_size || version != c->pg_version)) return "another cluster's WAL";
  if (size != segsize) return "its size is not the segment size its header declares";
  /* prepareWal parses the name with 16 MiB segments first, then checkSegment with the cluster's */
  unsigned long long per_log = 0x100000000ull / segsize;
  if (seg >= per_log || seg >= 0x100) return "segment field out of range";
  if (addr != (log * per_log + seg) * segsize) return "the header is for another segment";
  if (htli > tli) return "the header's timeline is later than the name's";
  return NULL;
}

static int fsync_path(const char *path) {
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return 0;
  int ok = fsync(fd) == 0;
  close(fd);
  return ok;
}

/*
 * mkdir -p `dir` under `repo`, then fsync every directory's entry in its parent up to the
 * repository's own (LocalBackend ensureDir: whoever created one may have died before its fsync).
 */
static int ensure_dir(const char *repo, const char *dir) {
  char p[PATH_MAX];
  size_t rl = strlen(repo);
  if (strlen(dir) < rl || strncmp(dir, repo, rl) != 0 || snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p) return 0;
  for (char *s = p + rl + 1; s < p + strlen(dir); s++) {
    if (*s != '/') continue;
    *s = 0;
    if (mkdir(p, 0777) != 0 && errno != EEXIST) return 0;
    *s = '/';
  }
  if (mkdir(p, 0777) != 0 && errno != EEXIST) return 0;
  for (int i = 0; i < 64; i++) { /* p: the directory whose entry is made durable in its parent */
    int last = strlen(p) == rl;
    char *slash = strrchr(p, '/');
    if (!slash) return 0;
    if (slash == p) {
      if (!fsync_path("/")) return 0;
      break;
    }
    *slash = 0;
    if (!fsync_path(p)) return 0;
    if (last) break;
  }
  return 1;
}

static int write_all(int fd, const void *p, size_t n) {
  const unsigned char *c = p;
  while (n > 0) {
    ssize_t w = write(fd, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return 0;
    c += w;
    n -= (size_t)w;
  }
  return 1;
}

static ssize_t read_full(int fd, unsigned char *p, size_t n, off_t off) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = pread(fd, p + got, n - got, off + (off_t)got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) break;
    got += (size_t)r;
  }
  return (ssize_t)got;
}

/* Seal as the repository does (src/repository/crypto.ts Sealer): nonce, AES-256-GCM, tag; streamed into fd. */
struct sealer {
  EVP_CIPHER_CTX *ctx;
  int fd;
  unsigned char *out;
  size_t cap;
};

static int seal_begin(struct sealer *s, const unsigned char key[32], const char *aad, int fd, size_t cap) {
  unsigned char nonce[12];
  int outl = 0;
  s->fd = fd;
  s->cap = cap;
  s->out = malloc(cap);
  s->ctx = EVP_CIPHER_CTX_new();
  return s->out && s->ctx && RAND_bytes(nonce, 12) == 1 && EVP_EncryptInit_ex(s->ctx, EVP_aes_256_gcm(), NULL, key, nonce) && EVP_EncryptUpdate(s->ctx, NULL, &outl, (const unsigned char *)aad, (int)strlen(aad)) && write_all(fd, nonce, 12);
}

static int seal_update(struct sealer *s, const unsigned char *p, size_t n) {
  while (n > 0) {
    size_t k = n < s->cap ? n : s->cap;
    int outl = 0;
    if (!EVP_EncryptUpdate(s->ctx, s->out, &outl, p, (int)k) || !write_all(s->fd, s->out, (size_t)outl)) return 0;
    p += k;
    n -= k;
  }
  return 1;
}

static int seal_finish(struct sealer *s) {
  unsigned char tag[16];
  int outl = 0;
  return EVP_EncryptFinal_ex(s->ctx, s->out, &outl) && write_all(s->fd, s->out, (size_t)outl) && EVP_CIPHER_CTX_ctrl(s->ctx, EVP_CTRL_AEAD_GET_TAG, 16, tag) && write_all(s->fd, tag, 16);
}

static void seal_free(struct sealer *s) {
  EVP_CIPHER_CTX_free(s->ctx);
  free(s->out);
  s->ctx = NULL;
  s->out = NULL;
}

static void json_escape(struct buf *b, const char *s) {
  buf_add(b, "\"", 1);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    char e[8];
    if (c == '"' || c == '\\') {
      e[0] = '\\', e[1] = (char)c;
      buf_add(b, e, 2);
    } else if (c < 0x20) {
      snprintf(e, sizeof e, "\\u%04x", c);
      buf_add(b, e, 6);
    } else {
      buf_add(b, s, 1);
    }
  }
  buf_add(b, "\"", 1);
}

static char *trimmed_file(const char *path) {
  size_t n = 0;
  char *s = read_file(path, 4096, &n, 0, NULL);
  if (!s) return strdup("");
  while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r')) s[--n] = 0;
  char *p = s;
  while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
  memmove(s, p, strlen(p) + 1);
  return s;
}

#define LIT(b, s) buf_add((b), (s), strlen(s))

/* The lock record (src/locks/protocol.ts encodeRecord, owner.ts currentOwner), sealed with mode 0. */
static int lock_record(struct buf *b, const char *id, const char *repo, long long ttl_ms) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  long long now = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  char host[256] = "", ns[128] = "", num[192], scope[PATH_MAX + 16];
  gethostname(host, sizeof host - 1);
  ssize_t k = readlink("/proc/self/ns/pid", ns, sizeof ns - 1);
  ns[k > 0 ? k : 0] = 0;
  char *machine = trimmed_file("/etc/machine-id"), *boot = trimmed_file("/proc/sys/kernel/random/boot_id");
  unsigned long long start = start_time((long)getpid());
  buf_add(b, "", 1); /* mode byte 0: stored as is */
  LIT(b, "{\"v\":1,\"id\":");
  json_escape(b, id);
  LIT(b, ",\"kind\":\"shared\",\"operation\":\"pg archive-push\",\"scope\":");
  snprintf(scope, sizeof scope, "repository %s", repo);
  json_escape(b, scope);
  LIT(b, ",\"owner\":{\"host\":");
  json_escape(b, host);
  LIT(b, ",\"machineId\":");
  json_escape(b, machine ? machine : "");
  LIT(b, ",\"bootId\":");
  json_escape(b, boot ? boot : "");
  LIT(b, ",\"pidNs\":");
  json_escape(b, ns);
  snprintf(num, sizeof num, ",\"pid\":%ld,\"startTime\":", (long)getpid());
  buf_add(b, num, strlen(num));
  if (start) snprintf(num, sizeof num, "%llu", start);
  else num[0] = 0;
  json_escape(b, num);
  int k2 = snprintf(num, sizeof num, "},\"created\":%lld,\"refreshed\":%lld,\"ttlMs\":%lld}", now, now, ttl_ms);
  int ok = k2 > 0 && (size_t)k2 < sizeof num && buf_add(b, num, strlen(num));
  free(machine);
  free(boot);
  return ok;
}

/* Write `data` as the object `name` (LocalBackend put, createOnly): temporary file, link, unlink. */
static int put_small(const char *repo, const char *name, const unsigned char master[32], const unsigned char *plain, size_t n) {
  char dest[PATH_MAX], tmp[PATH_MAX + 64], aad[PATH_MAX], rnd[13];
  unsigned char r[6];
  snprintf(dest, sizeof dest, "%s/%s", repo, name);
  snprintf(aad, sizeof aad, "holdfast:named:%s", name);
  if (RAND_bytes(r, 6) != 1) return 0;
  hex(r, 6, rnd);
  const char *base = strrchr(dest, '/') + 1;
  snprintf(tmp, sizeof tmp, "%.*s.tmp-%s-%s", (int)(base - dest), dest, base, rnd);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return 0;
  struct sealer s = {0};
  int ok = seal_begin(&s, master, aad, fd, 4096) && seal_update(&s, plain, n) && seal_finish(&s);
  seal_free(&s);
  ok = close(fd) == 0 && ok;
  ok = ok && link(tmp, dest) == 0;
  unlink(tmp);
  return ok;
}

/* An exclusive lock in the repository's locks/ (shared holders conflict only with those). */
static const char *exclusive_lock(const char *repo) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/locks", repo);
  DIR *d = opendir(path);
  if (!d) return miss("cannot list %s: %s", path, strerror(errno));
  const char *why = NULL;
  for (struct dirent *e; !why && (e = readdir(d));) {
    const char *n = e->d_name;
    if (n[0] != 'x' || n[1] != '-' || strlen(n) != 26) continue;
    int ok = 1;
    for (int i = 2; i < 26; i++)
      if (!((n[i] >= '0' && n[i] <= '9') || (n[i] >= 'a' && n[i] <= 'f'))) ok = 0;
    if (ok) why = miss("an exclusive lock is in the repository (%s)", n);
  }
  closedir(d);
  return why;
}

/* One piece compressed on its own thread (a reused context per slot). */
struct piece_job {
  unsigned char *src, *dst;
  size_t n, cap, z;
  ZSTD_CCtx *cctx;
  int level;
};

static void *compress_piece(void *arg) {
  struct piece_job *j = arg;
  j->z = ZSTD_compressCCtx(j->cctx, j->dst, j->cap, j->src, j->n, j->level);
  return NULL;
}

/* Pieces compressed at once: one per CPU, at most 4 (as the CLI's compressPieces). */
#define MAX_SLOTS 4

/*
 * Compress `fd` (`size` bytes, first page `head`) in 1 MiB pieces, each its own zstd frame, up to
 * one per CPU at once (the main thread takes the first of each round), and seal mode 1 and the
 * frames in order into `s` (putNamedPieces). Returns 1 when sealed, 0 on an error (why set), 2
 * when the frames are not smaller than the plaintext (the caller stores mode 0).
 */
static int store_pieces(int fd, unsigned long long size, const unsigned char *head, size_t hlen, int level, struct sealer *s, const char **why) {
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  int slots = cpus < 1 ? 1 : cpus > MAX_SLOTS ? MAX_SLOTS : (int)cpus;
  struct piece_job jobs[MAX_SLOTS] = {0};
  size_t bound = ZSTD_compressBound(PIECE);
  unsigned long long raw = 0, packed = 0;
  int rc = 1;
  static const unsigned char zstd_mode = 1;
  for (int i = 0; i < slots; i++) {
    jobs[i].src = malloc(PIECE);
    jobs[i].dst = malloc(bound);
    jobs[i].cctx = ZSTD_createCCtx();
    jobs[i].cap = bound;
    jobs[i].level = level;
    if (!jobs[i].src || !jobs[i].dst || !jobs[i].cctx) rc = 0;
  }
  if (rc == 0 || !seal_update(s, &zstd_mode, 1)) {
    *why = "out of memory";
    rc = 0;
  }
  for (int end = 0; rc == 1 && !end;) {
    int m = 0; /* pieces read this round */
    while (m < slots && !end) {
      ssize_t n = read_full(fd, jobs[m].src, PIECE, (off_t)raw);
      if (n < 0) {
        *why = miss("cannot read the segment: %s", strerror(errno));
        rc = 0;
        break;
      }
      if (raw == 0 && ((size_t)n < hlen || memcmp(jobs[m].src, head, hlen) != 0)) {
        *why = "the segment's first page changed";
        rc = 0;
        break;
      }
      raw += (unsigned long long)n;
      if (raw > size || ((size_t)n < PIECE && raw != size)) {
        *why = "the segment changed size";
        rc = 0;
        break;
      }
      end = (size_t)n < PIECE;
      if (n > 0) jobs[m++].n = (size_t)n;
    }
    if (rc != 1) break;
    pthread_t threads[MAX_SLOTS];
    int started[MAX_SLOTS] = {0};
    for (int i = 1; i < m; i++) started[i] = pthread_create(&threads[i], NULL, compress_piece, &jobs[i]) == 0;
    for (int i = 0; i < m; i++)
      if (!started[i]) compress_piece(&jobs[i]); /* the first, and any whose thread did not start */
    for (int i = 1; i < m; i++)
      if (started[i]) pthread_join(threads[i], NULL);
    for (int i = 0; i < m && rc == 1; i++) {
      if (ZSTD_isError(jobs[i].z)) {
        *why = "zstd failed";
        rc = 0;
      } else if (!seal_update(s, jobs[i].dst, jobs[i].z)) {
        *why = miss("cannot write: %s", strerror(errno));
        rc = 0;
      }
      packed += jobs[i].z;
    }
  }
  if (rc == 1 && !(packed < raw && raw >= 64)) rc = 2;
  for (int i = 0; i < slots; i++) {
    ZSTD_freeCCtx(jobs[i].cctx);
    free(jobs[i].dst);
    free(jobs[i].src);
  }
  return rc;
}

static const char *store_plain(int fd, unsigned long long size, struct sealer *s) {
  unsigned char *piece = malloc(PIECE);
  static const unsigned char none = 0;
  const char *why = piece && seal_update(s, &none, 1) ? NULL : "out of memory";
  for (unsigned long long off = 0; !why && off < size;) {
    ssize_t n = read_full(fd, piece, PIECE, (off_t)off);
    if (n <= 0) why = "the segment changed size";
    else if (!seal_update(s, piece, (size_t)n)) why = miss("cannot write: %s", strerror(errno));
    else off += (unsigned long long)n;
  }
  free(piece);
  return why;
}

static int stored_without_node;

/* Store `wal` as Node's archivePush would, or say why Node has to. */
static const char *sync_push(char *ticket_text, const char *file, const char *wal) {
  struct sync_ticket t = {0};
  if (!parse_sync_ticket(ticket_text, &t) || !cluster_name(t.cluster)) return "the ticket is malformed";
  const char *why = same_content(t.config_path, t.config_digest, "config file");
  if (why) return why;
  char path[PATH_MAX], obj[PATH_MAX], lock_path[PATH_MAX], tmp[PATH_MAX + 64];
  snprintf(path, sizeof path, "%s/config", t.repo);
  why = same_content(path, t.instance, "repository's config object");
  if (why) return why;
  unsigned char master[32];
  why = master_key(&t, master);
  size_t n = 0;
  if (!why) {
    unsigned char *cfg = open_object(t.repo, "config", "holdfast:config", master, 4u << 20, &n);
    if (!cfg) why = "the master key does not open the repository's config";
    free(cfg);
  }
  struct cluster_rec c = {0};
  if (!why) why = read_cluster(&t, master, &c);
  int fd = -1;
  unsigned char head[8192];
  ssize_t hlen = 0;
  struct stat st;
  if (!why) {
    fd = open(wal, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) why = miss("cannot read %s", wal);
    else if ((hlen = read_full(fd, head, st.st_size < (off_t)sizeof head ? (size_t)st.st_size : sizeof head, 0)) < 0) why = miss("cannot read %s", wal);
    else why = check_segment(file, head, (size_t)hlen, (unsigned long long)st.st_size, &c);
  }
  snprintf(obj, sizeof obj, "%s/wal/%s/%s", t.repo, t.cluster, file);
  if (!why && lstat(obj, &(struct stat){0}) == 0) why = "the segment is already archived (Node compares)";
  else if (!why && errno != ENOENT) why = miss("cannot look for %s: %s", obj, strerror(errno));
  /* the shared repository lock, as acquireLock takes it */
  char id[25] = "", lock_name[48];
  unsigned char rid[12];
  int locked = 0;
  if (!why) {
    struct buf rec = {0};
    snprintf(path, sizeof path, "%s/locks", t.repo);
    if (RAND_bytes(rid, 12) != 1 || !ensure_dir(t.repo, path)) why = miss("cannot use %s", path);
    hex(rid, 12, id);
    snprintf(lock_name, sizeof lock_name, "locks/s-%s", id);
    snprintf(lock_path, sizeof lock_path, "%s/%s", t.repo, lock_name);
    if (!why && (!lock_record(&rec, id, t.repo, t.lock_ttl_ms) || !put_small(t.repo, lock_name, master, rec.p, rec.len))) why = miss("cannot create the lock %s", lock_name);
    else if (!why) locked = 1;
    free(rec.p);
    if (!why) why = exclusive_lock(t.repo);
  }
  /* tests only: hold the lock this long (the lock is checked, and the front killed, meanwhile) */
  const char *hold = getenv("HOLDFAST_TEST_FRONT_HOLD_MS");
  if (!why && hold) poll(NULL, 0, atoi(hold));
  int out = -1;
  tmp[0] = 0;
  if (!why) {
    char dir[PATH_MAX], rnd[13];
    unsigned char r[6];
    snprintf(dir, sizeof dir, "%s/wal/%s", t.repo, t.cluster);
    RAND_bytes(r, 6);
    hex(r, 6, rnd);
    snprintf(tmp, sizeof tmp, "%s/.tmp-%s-%s", dir, file, rnd);
    if (!ensure_dir(t.repo, dir) || (out = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0) why = miss("cannot write in %s: %s", dir, strerror(errno));
  }
  if (!why) {
    char aad[PATH_MAX];
    snprintf(aad, sizeof aad, "holdfast:named:wal/%s/%s", t.cluster, file);
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    struct sealer s = {0};
    int rc = seal_begin(&s, master, aad, out, PIECE) ? store_pieces(fd, (unsigned long long)st.st_size, head, (size_t)hlen, t.level, &s, &why) : 0;
    if (rc == 0 && !why) why = "cannot seal";
    if (rc == 2) { /* not smaller: stored as is, with a fresh nonce */
      seal_free(&s);
      if (ftruncate(out, 0) != 0 || lseek(out, 0, SEEK_SET) != 0 || !seal_begin(&s, master, aad, out, PIECE)) why = "cannot rewrite";
      else why = store_plain(fd, (unsigned long long)st.st_size, &s);
    }
    if (!why && !seal_finish(&s)) why = miss("cannot write: %s", strerror(errno));
    seal_free(&s);
  }
  memset(master, 0, sizeof master);
  if (!why && fsync(out) != 0) why = miss("fsync failed: %s", strerror(errno));
  if (out >= 0 && close(out) != 0 && !why) why = miss("close failed: %s", strerror(errno));
  /* the commit guard (held.verify): the lock must still be there */
  if (!why && access(lock_path, F_OK) != 0) why = "the repository lock was removed";
  if (!why && link(tmp, obj) != 0) why = miss("cannot link %s: %s", obj, strerror(errno));
  if (tmp[0]) unlink(tmp);
  if (!why) {
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/wal/%s", t.repo, t.cluster);
    if (!fsync_path(dir)) {
      why = miss("cannot fsync %s: %s", dir, strerror(errno));
      unlink(obj); /* not known durable: taken back, and Node stores it again (or reports the error) */
    } else {
      stored_without_node = 1;
    }
  }
  if (locked) unlink(lock_path);
  if (fd >= 0) close(fd);
  return why;
}

/*
 * The ticket for this call's inputs (all arguments but the last `trailing`), read into *textp (a
 * private regular file of this user, in the private ticket directory), or why there is none.
 */
static const char *find_ticket(int argc, char **argv, int trailing, char **textp) {
  char *state = state_dir();
  if (!state) return "no state directory from the environment (HOLDFAST_STATE_DIR, XDG_CACHE_HOME or HOME)";
  char key[65];
  static char path[PATH_MAX];
  if (!ticket_key(argc, argv, trailing, key)) {
    free(state);
    return "cannot compute the ticket key";
  }
  snprintf(path, sizeof path, "%s/spool/tickets", state);
  free(state);
  struct stat st;
  if (lstat(path, &st) != 0) return miss("no ticket for this call (%s: %s)", path, strerror(errno));
  if (!private_dir(path)) return miss("the ticket directory %s is not a private directory of this user", path);
  size_t off = strlen(path);
  snprintf(path + off, sizeof path - off, "/%s", key);
  size_t n = 0;
  char *text = read_file(path, 64 << 10, &n, 1, &st);
  if (!text) return miss("no ticket for this call (%s): %s", path, strerror(errno));
  const char *why = !S_ISREG(st.st_mode) || st.st_uid != getuid() || (st.st_mode & 022) != 0 ? miss("the ticket %s is not a private file of this user", path) : strlen(text) != n ? miss("the ticket %s is malformed", path) : NULL;
  if (why) {
    free(text);
    return why;
  }
  *textp = text;
  return NULL;
}

/* The SHA-256 (hex) of the stored config object at `repo_config` equals the first word of `<dir>/repository`. */
static const char *bound_to_instance(const char *repo_config, const char *dir, const char *what) {
  char path[PATH_MAX], instance[65];
  size_t n = 0;
  char *cfg = read_file(repo_config, 4u << 20, &n, 0, NULL);
  if (!cfg) return miss("cannot read the repository's config object %s: %s", repo_config, strerror(errno));
  int ok = sha256_hex(cfg, n, instance);
  free(cfg);
  if (!ok) return "SHA-256 failed";
  snprintf(path, sizeof path, "%s/repository", dir);
  char *bound = read_file(path, 4096, &n, 0, NULL);
  const char *b = bound;
  while (b && (*b == ' ' || *b == '\t' || *b == '\n' || *b == '\r')) b++;
  ok = b && strncmp(b, instance, 64) == 0 && (!b[64] || b[64] == ' ' || b[64] == '\t' || b[64] == '\n' || b[64] == '\r');
  free(bound);
  return ok ? NULL : miss("the %s is not bound to the repository instance at this location", what);
}

/* The nonce and tag of the fingerprint record text `rec` ("gmac-aes256 <nonce> <tag>", spaces around allowed). */
static int parse_record(char *rec, size_t n, unsigned char nonce[12], unsigned char tag[16]) {
  char *r = rec;
  while (r && n > 0 && (r[n - 1] == '\n' || r[n - 1] == '\r' || r[n - 1] == ' ' || r[n - 1] == '\t')) r[--n] = 0;
  while (r && (*r == ' ' || *r == '\t' || *r == '\n' || *r == '\r')) r++;
  return r && strlen(r) == 12 + 24 + 1 + 32 && strncmp(r, "gmac-aes256 ", 12) == 0 && r[36] == ' ' && unhex(r + 12, 12, nonce) && unhex(r + 37, 16, tag);
}

/*
 * archive-get from the prefetch queue (src/ops/pg-archive-prefetch.ts): `pg archive-get ... FILE
 * DEST` whose ticket names the queue; FILE is a segment there, whole (its size is the segment size
 * its header declares, and the header is for the segment its name says), from the repository
 * instance at the location now, with the content its fingerprint record (`<FILE>.ok`, GMAC under the
 * queue's key, as the async spool's) speaks of. It is renamed to DEST, as the CLI does, and its
 * record removed. Anything else, a DEST on another file system included: Node.
 */
static int taken_from_queue;

static const char *answer_get(int argc, char **argv, const char **filep) {
  const char *file = argv[argc - 2], *dest = argv[argc - 1];
  *filep = file;
  if (strlen(file) != 24 || strspn(file, "0123456789ABCDEF") != 24) return "not a WAL segment name (Node decides)";
  if (dest[0] == '-' || dest[0] == 0) return "the last argument is not the destination";
  char *text = NULL;
  const char *why = find_ticket(argc, argv, 2, &text);
  if (why) return why;
  const char *queue = NULL, *repo_config = NULL, *digest = NULL, *config = NULL;
  char *cursor = text, *l = next_line(&cursor);
  if (!l || strcmp(l, TICKET_VERSION) != 0 || !(l = next_line(&cursor)) || strcmp(l, "get") != 0 || !ticket_path(&cursor, "queue ", &queue) || !ticket_path(&cursor, "repo-config ", &repo_config) ||
      !ticket_config(&cursor, &digest, &config) || next_line(&cursor) != NULL) {
    free(text);
    return "the ticket is malformed (not a get ticket)";
  }
  why = same_content(config, digest, "config file");
  if (!why && !private_dir(queue)) why = miss("the prefetch queue %s is not a private directory of this user", queue);
  if (!why) why = bound_to_instance(repo_config, queue, "prefetch queue");
  char path[PATH_MAX];
  unsigned char head[40];
  struct stat st;
  int fd = -1;
  if (!why) {
    snprintf(path, sizeof path, "%s/%s", queue, file);
    fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) why = miss("%s is not in the prefetch queue", file);
  }
  if (!why) {
    ssize_t hlen = read_full(fd, head, sizeof head, 0);
    const char *bad = hlen < 0 ? "unreadable" : check_segment(file, head, (size_t)hlen, (unsigned long long)st.st_size, NULL);
    if (bad) why = miss("the queued copy: %s", bad);
  }
  if (fd >= 0) close(fd);
  /* the content the queue recorded (a copy torn by a power loss, or changed since, is not) */
  char rpath[PATH_MAX + 8];
  if (!why) {
    size_t n = 0, kn = 0;
    unsigned char nonce[12], tag[16];
    snprintf(rpath, sizeof rpath, "%s/key", queue);
    char *key = read_file(rpath, 64, &kn, 0, NULL);
    snprintf(rpath, sizeof rpath, "%s/%s.ok", queue, file);
    char *rec = read_file(rpath, 256, &n, 0, NULL);
    if (!key || kn != 32) why = "the prefetch queue has no key";
    else if (!rec || !parse_record(rec, n, nonce, tag)) why = miss("no fingerprint record for the queued %s", file);
    else why = content_matches((const unsigned char *)key, nonce, tag, file, path, "was queued");
    free(rec);
    free(key);
  }
  /* renamed into place; another file system is Node's (it copies) */
  if (!why && rename(path, dest) != 0) why = miss("cannot move the queued %s to %s: %s", file, dest, strerror(errno));
  if (!why) unlink(rpath);
  if (!why) taken_from_queue = 1;
  free(text);
  return why;
}

/* NULL when the spool records `argv[argc-1]` as archived; otherwise why Node has to decide. */
static const char *answer(int argc, char **argv, const char **filep) {
  if (argc >= 5 && strcmp(argv[1], "pg") == 0 && strcmp(argv[2], "archive-get") == 0) return answer_get(argc, argv, filep);
  if (argc < 4 || strcmp(argv[1], "pg") != 0 || strcmp(argv[2], "archive-push") != 0) return "not a pg archive-push call";
  const char *wal = argv[argc - 1];
  if (wal[0] == '-' || wal[0] == 0) return "the last argument is not the WAL file";
  const char *file = strrchr(wal, '/');
  file = file ? file + 1 : wal;
  *filep = file;
  if (!safe_name(file)) return "not a WAL file name";

  char *text = NULL, path[PATH_MAX];
  size_t n = 0;
  const char *found = find_ticket(argc, argv, 1, &text);
  if (found) return found;
  if (strncmp(text, TICKET_VERSION "\nsync\n", strlen(TICKET_VERSION) + 6) == 0) {
    const char *why = sync_push(text, file, wal);
    free(text);
    return why;
  }
  const char *why = NULL;
  struct ticket t = {0};
  if (!parse_ticket(text, &t)) why = "the ticket is malformed";
  else why = same_content(t.config_path, t.config_digest, "config file");
  if (!why && !private_dir(t.spool)) why = miss("the spool %s is not a private directory of this user", t.spool);
  char *rec = NULL, *bound = NULL, *spool_key = NULL;
  if (!why) why = bound_to_instance(t.repo_config, t.spool, "spool");
  if (!why) {
    snprintf(path, sizeof path, "%s/key", t.spool);
    spool_key = read_file(path, 64, &n, 0, NULL);
    if (!spool_key || n != 32) why = miss("no spool key");
  }
  unsigned char nonce[12], tag[16];
  if (!why) {
    snprintf(path, sizeof path, "%s/%s.ok", t.spool, file);
    rec = read_file(path, 256, &n, 0, NULL);
    if (!rec && errno == ENOENT) {
      why = wait_for_record(t.spool, file, wal, t.timeout_ms);
      if (!why) rec = read_file(path, 256, &n, 0, NULL);
    }
    if (!why && !rec) why = miss("no success record for %s in the spool", file);
    else if (!why && !parse_record(rec, n, nonce, tag)) why = miss("the spool record of %s is malformed", file);
  }
  if (!why) why = content_matches((const unsigned char *)spool_key, nonce, tag, file, wal, "the async worker archived");
  free(rec);
  free(bound);
  free(spool_key);
  free(text);
  return why;
}

/* Run the Node CLI with the same arguments; does not return. */
static void run_node(int argc, char **argv) {
  char exe[PATH_MAX], entry[PATH_MAX + 32], resolved[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  const char *script = "bin/holdfast.cjs";
  if (n > 0) {
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) *slash = 0;
    snprintf(entry, sizeof entry, "%s/../bin/holdfast.cjs", exe);
    script = realpath(entry, resolved) ? resolved : entry;
  }
  char **args = calloc((size_t)argc + 2, sizeof *args);
  if (args) {
    args[0] = (char *)HOLDFAST_NODE;
    args[1] = (char *)script;
    for (int i = 1; i < argc; i++) args[i + 1] = argv[i];
    execv(HOLDFAST_NODE, args);
    args[0] = (char *)"node";
    execvp("node", args);
  }
  fprintf(stderr, "error: holdfast-push cannot run Node (%s, nor node on PATH) with %s: %s\nhint: Reinstall holdfast (npm run build records the node it was built with), or call bin/holdfast.cjs with node directly.\n", HOLDFAST_NODE, script, strerror(errno));
  exit(70);
}

int main(int argc, char **argv) {
  const char *mode = getenv("HOLDFAST_FRONT");
  int trace = mode && strcmp(mode, "trace") == 0;
  const char *file = "";
  const char *why = mode && strcmp(mode, "off") == 0 ? "HOLDFAST_FRONT=off" : answer(argc, argv, &file);
  if (!why && taken_from_queue) {
    if (trace) fprintf(stderr, "holdfast-push: %s taken from the prefetch queue without Node\n", file);
    return 0;
  }
  if (!why && stored_without_node) {
    if (trace) fprintf(stderr, "holdfast-push: stored %s in the repository without Node\n", file);
    return 0;
  }
  if (!why) {
    if (trace) fprintf(stderr, "holdfast-push: %s was archived by the async worker (its spool record matches the content); answered without Node%s\n", file, waited_ms > 0 ? " after waiting for the worker" : "");
    return 0;
  }
  if (trace) fprintf(stderr, "holdfast-push: running Node: %s\n", why);
  if (waited_ms > 0) {
    char v[32];
    snprintf(v, sizeof v, "%lld", waited_ms);
    setenv("HOLDFAST_FRONT_WAITED_MS", v, 1);
  }
  run_node(argc, argv);
  return 70;
}
