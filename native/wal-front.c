/*
 * holdfast-push: the native front of `holdfast pg archive-push --async` (docs/design.md §12).
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
#include <poll.h>
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
#define EVP_CTRL_AEAD_GET_TAG 0x10

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

/* The ticket key of this call (src/ops/pg-archive-ticket.ts ticketKey), as hex. */
static int ticket_key(int argc, char **argv, char out[65]) {
  char cwd[PATH_MAX], tmp[64];
  if (!getcwd(cwd, sizeof cwd)) return 0;
  struct buf b = {0};
  int ok = field(&b, TICKET_VERSION, strlen(TICKET_VERSION));
  snprintf(tmp, sizeof tmp, "%u", (unsigned)getuid());
  ok = ok && field(&b, tmp, strlen(tmp)) && field(&b, cwd, strlen(cwd));
  snprintf(tmp, sizeof tmp, "a%d", argc - 2);
  ok = ok && field(&b, tmp, strlen(tmp));
  for (int i = 1; ok && i < argc - 1; i++) ok = field(&b, argv[i], strlen(argv[i]));
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

static int parse_ticket(char *text, struct ticket *t) {
  char *l = next_line(&text);
  if (!l || strcmp(l, TICKET_VERSION) != 0) return 0;
  l = next_line(&text);
  if (!l || strncmp(l, "spool /", 7) != 0) return 0;
  t->spool = l + 6;
  l = next_line(&text);
  if (!l || strncmp(l, "repo-config /", 13) != 0) return 0;
  t->repo_config = l + 12;
  l = next_line(&text);
  if (!l || strncmp(l, "config ", 7) != 0) return 0;
  char *sp = strchr(l + 7, ' ');
  if (!sp || sp[1] != '/') return 0;
  *sp = 0;
  t->config_digest = l + 7;
  t->config_path = sp + 1;
  l = next_line(&text);
  if (!l || strncmp(l, "async-timeout ", 14) != 0) return 0;
  char *end = NULL;
  errno = 0;
  t->timeout_ms = strtoll(l + 14, &end, 10);
  if (errno || end == l + 14 || *end || t->timeout_ms < 0) return 0;
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
static const char *content_matches(const unsigned char key[32], const unsigned char nonce[12], const unsigned char tag[16], const char *file, const char *wal) {
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
  if (!why && memcmp(got, tag, 16) != 0) why = miss("%s has other content than the async worker archived", wal);
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

/* NULL when the spool records `argv[argc-1]` as archived; otherwise why Node has to decide. */
static const char *answer(int argc, char **argv, const char **filep) {
  if (argc < 4 || strcmp(argv[1], "pg") != 0 || strcmp(argv[2], "archive-push") != 0) return "not a pg archive-push call";
  const char *wal = argv[argc - 1];
  if (wal[0] == '-' || wal[0] == 0) return "the last argument is not the WAL file";
  const char *file = strrchr(wal, '/');
  file = file ? file + 1 : wal;
  *filep = file;
  if (!safe_name(file)) return "not a WAL file name";

  char *state = state_dir();
  if (!state) return "no state directory from the environment (HOLDFAST_STATE_DIR, XDG_CACHE_HOME or HOME)";
  char key[65], path[PATH_MAX];
  if (!ticket_key(argc, argv, key)) return "cannot compute the ticket key";
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
  const char *why = NULL;
  struct ticket t = {0};
  char instance[65] = {0};
  if (!S_ISREG(st.st_mode) || st.st_uid != getuid() || (st.st_mode & 022) != 0) why = miss("the ticket %s is not a private file of this user", path);
  else if (strlen(text) != n || !parse_ticket(text, &t)) why = miss("the ticket %s is malformed", path);
  else why = same_content(t.config_path, t.config_digest, "config file");
  if (!why) {
    char *cfg = read_file(t.repo_config, 4u << 20, &n, 0, NULL);
    if (!cfg) why = miss("cannot read the repository's config object %s: %s", t.repo_config, strerror(errno));
    else if (!sha256_hex(cfg, n, instance)) why = miss("SHA-256 failed");
    free(cfg);
  }
  if (!why && !private_dir(t.spool)) why = miss("the spool %s is not a private directory of this user", t.spool);
  char *rec = NULL, *bound = NULL, *spool_key = NULL;
  if (!why) {
    snprintf(path, sizeof path, "%s/repository", t.spool);
    bound = read_file(path, 4096, &n, 0, NULL);
    const char *b = bound;
    while (b && (*b == ' ' || *b == '\t' || *b == '\n' || *b == '\r')) b++;
    if (!b || strncmp(b, instance, 64) != 0 || (b[64] && b[64] != ' ' && b[64] != '\t' && b[64] != '\n' && b[64] != '\r')) why = miss("the spool is not bound to the repository instance at this location");
  }
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
    char *r = rec;
    while (r && n > 0 && (r[n - 1] == '\n' || r[n - 1] == '\r' || r[n - 1] == ' ' || r[n - 1] == '\t')) r[--n] = 0;
    while (r && (*r == ' ' || *r == '\t' || *r == '\n' || *r == '\r')) r++;
    if (!why && !r) why = miss("no success record for %s in the spool", file);
    else if (!why && (strlen(r) != 12 + 24 + 1 + 32 || strncmp(r, "gmac-aes256 ", 12) != 0 || r[36] != ' ' || !unhex(r + 12, 12, nonce) || !unhex(r + 37, 16, tag))) why = miss("the spool record of %s is malformed", file);
  }
  if (!why) why = content_matches((const unsigned char *)spool_key, nonce, tag, file, wal);
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
