/*
 * zstd-sync: synchronous zstd compression with one reused context per thread, for holdfast's
 * backup worker threads (which may block). The async binding (@mongodb-js/zstd) costs ~80 us of
 * CPU per call whatever the input size (a new context and a thread-pool round trip each time),
 * which dominated backups of many small files; this costs a few microseconds per small blob.
 *
 * Links against the system libzstd (libzstd.so.1, present wherever apt is). Only functions of
 * zstd's stable API are used, declared here because the -dev headers need not be installed.
 * Output is an ordinary zstd frame: anything can decompress it.
 * Exposes compress(buffer, level) -> Buffer (exactly sized) and decompress(buffer, size) -> Buffer:
 * restore knows each blob's raw size, and a synchronous decode of a chunk beats a thread-pool
 * round trip per blob.
 *
 * And compressAsync(buffer, level) -> Promise<Buffer>: the same compression on libuv's thread pool,
 * each pool thread with its own reused context. A WAL segment cut into 1 MiB pieces is compressed
 * as independent frames on every core at once (archive-push's latency; the async worker's several
 * files at a time), without the async binding's new context per call. The caller must not modify
 * the input until the promise settles.
 *
 * And openBlob(...): opens one sealed blob (AES-256-GCM, then zstd or stored, then SHA-256 of the
 * plaintext against its id) in one call, for the restore workers; see open_blob below. openBlobs(...)
 * does that for up to 64 consecutive pieces of a file at once and writes them, hashing them together
 * in 16 AVX-512 lanes where the CPU has them (sha256-lanes.h); sha256Many(...) exposes the hashing.
 * sealBlob(...)
 * is its converse for the backup workers: compress and seal a chunk into one buffer of its own.
 *
 * And pageChecksums(...): PostgreSQL's page checksums of a run of pages, for the backup workers'
 * verification of relation files (the rules stay in src/postgres/page-checksum.ts).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <unistd.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <sys/syscall.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <node_api.h>
#include "sha256-lanes.h"

typedef struct ZSTD_CCtx_s ZSTD_CCtx;
typedef struct ZSTD_DCtx_s ZSTD_DCtx;
ZSTD_DCtx *ZSTD_createDCtx(void);
size_t ZSTD_freeDCtx(ZSTD_DCtx *dctx);
size_t ZSTD_freeCCtx(ZSTD_CCtx *cctx);
size_t ZSTD_decompressDCtx(ZSTD_DCtx *dctx, void *dst, size_t dstCapacity, const void *src, size_t srcSize);
size_t ZSTD_compressBound(size_t srcSize);
ZSTD_CCtx *ZSTD_createCCtx(void);
size_t ZSTD_compressCCtx(ZSTD_CCtx *cctx, void *dst, size_t dstCapacity, const void *src, size_t srcSize, int compressionLevel);
unsigned ZSTD_isError(size_t code);
const char *ZSTD_getErrorName(size_t code);

static __thread ZSTD_CCtx *cctx;
static __thread ZSTD_DCtx *dctx;
static __thread char *scratch;
static __thread size_t scratch_size;

static napi_value fail(napi_env env, const char *msg) {
  napi_throw_error(env, "ZSTD_SYNC", msg);
  return NULL;
}

/* Compress src[0, len) at `level` into this thread's scratch buffer (grown to the bound as needed);
 * its length goes to *out. Returns an error message, or NULL. */
static const char *compress_to_scratch(const void *src, size_t len, int level, size_t *out) {
  if (!cctx && !(cctx = ZSTD_createCCtx())) return "ZSTD_createCCtx failed";
  size_t bound = ZSTD_compressBound(len);
  if (bound > scratch_size) {
    free(scratch);
    scratch = malloc(bound);
    scratch_size = scratch ? bound : 0;
    if (!scratch) return "out of memory";
  }
  size_t n = ZSTD_compressCCtx(cctx, scratch, scratch_size, src, len, level);
  if (ZSTD_isError(n)) return ZSTD_getErrorName(n);
  *out = n;
  return NULL;
}

static napi_value compress(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  void *src;
  size_t len;
  int32_t level = 3;
  napi_value out;
  void *copy;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) return fail(env, "compress(buffer, level) needs a buffer");
  if (napi_get_buffer_info(env, argv[0], &src, &len) != napi_ok) return fail(env, "compress: first argument must be a Buffer");
  if (argc >= 2) napi_get_value_int32(env, argv[1], &level);
  size_t n = 0;
  const char *error = compress_to_scratch(src, len, level, &n);
  if (error) return fail(env, error);
  if (napi_create_buffer_copy(env, n, scratch, &copy, &out) != napi_ok) return fail(env, "cannot allocate the output buffer");
  return out;
}

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref input; /* keeps the input buffer alive while a pool thread reads it */
  const void *src;
  size_t len;
  int level;
  char *out;
  size_t out_len;
  const char *error;
} compress_job;

/* On a pool thread: no napi calls here. */
static void compress_execute(napi_env env, void *data) {
  compress_job *job = data;
  (void)env;
  if (!cctx && !(cctx = ZSTD_createCCtx())) {
    job->error = "ZSTD_createCCtx failed";
    return;
  }
  size_t bound = ZSTD_compressBound(job->len);
  job->out = malloc(bound ? bound : 1); /* untouched pages cost nothing: only what is written */
  if (!job->out) {
    job->error = "out of memory";
    return;
  }
  size_t n = ZSTD_compressCCtx(cctx, job->out, bound, job->src, job->len, job->level);
  if (ZSTD_isError(n)) {
    job->error = ZSTD_getErrorName(n);
    return;
  }
  char *shrunk = realloc(job->out, n ? n : 1);
  if (shrunk) job->out = shrunk;
  job->out_len = n;
}

static void free_output(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

static void compress_complete(napi_env env, napi_status status, void *data) {
  compress_job *job = data;
  napi_value result;
  void *copy;
  if (status != napi_ok && !job->error) job->error = "compression was cancelled";
  if (job->error) {
    napi_value msg;
    napi_create_string_utf8(env, job->error, NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &result);
    napi_reject_deferred(env, job->deferred, result);
    free(job->out);
  } else if (napi_create_external_buffer(env, job->out_len, job->out, free_output, NULL, &result) == napi_ok) {
    napi_resolve_deferred(env, job->deferred, result); /* the buffer owns job->out now */
  } else if (napi_create_buffer_copy(env, job->out_len, job->out, &copy, &result) == napi_ok) {
    napi_resolve_deferred(env, job->deferred, result); /* external buffers not allowed here */
    free(job->out);
  } else {
    napi_value msg;
    napi_create_string_utf8(env, "cannot allocate the output buffer", NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &result);
    napi_reject_deferred(env, job->deferred, result);
    free(job->out);
  }
  napi_delete_reference(env, job->input);
  napi_delete_async_work(env, job->work);
  free(job);
}

static napi_value compress_async(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_value promise;
  napi_value name;
  void *src;
  size_t len;
  int32_t level = 3;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) return fail(env, "compressAsync(buffer, level) needs a buffer");
  if (napi_get_buffer_info(env, argv[0], &src, &len) != napi_ok) return fail(env, "compressAsync: first argument must be a Buffer");
  if (argc >= 2) napi_get_value_int32(env, argv[1], &level);
  compress_job *job = calloc(1, sizeof *job);
  if (!job) return fail(env, "out of memory");
  job->src = src;
  job->len = len;
  job->level = level;
  if (napi_create_reference(env, argv[0], 1, &job->input) != napi_ok || napi_create_promise(env, &job->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, "holdfast:zstd", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, compress_execute, compress_complete, job, &job->work) != napi_ok || napi_queue_async_work(env, job->work) != napi_ok) {
    free(job);
    return fail(env, "cannot queue the compression");
  }
  return promise;
}

/* decompress(buffer, size) -> Buffer of exactly `size` bytes (the caller knows the raw length);
 * a frame sequence that does not decode to exactly that many bytes is an error. */
static napi_value decompress(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  void *src;
  size_t len;
  int64_t size = -1;
  napi_value out;
  void *dst;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) return fail(env, "decompress(buffer, size) needs both");
  if (napi_get_buffer_info(env, argv[0], &src, &len) != napi_ok) return fail(env, "decompress: first argument must be a Buffer");
  if (napi_get_value_int64(env, argv[1], &size) != napi_ok || size < 0 || size > ((int64_t)1 << 31)) return fail(env, "decompress: bad size");
  if (!dctx && !(dctx = ZSTD_createDCtx())) return fail(env, "ZSTD_createDCtx failed");
  if (napi_create_buffer(env, (size_t)size, &dst, &out) != napi_ok) return fail(env, "cannot allocate the output buffer");
  size_t n = ZSTD_decompressDCtx(dctx, dst, (size_t)size, src, len);
  if (ZSTD_isError(n)) return fail(env, ZSTD_getErrorName(n));
  if (n != (size_t)size) return fail(env, "decompressed size differs from the expected size");
  return out;
}

/*
 * openBlob: the checks of a sealed blob (docs/design.md §4-§6) in one call, with no allocation
 * per blob on either side: a reused cipher context keyed once per key, a reused digest context, a
 * reused zstd context, and the caller's buffers.
 *
 * The OpenSSL functions are Node's own (it exports its OpenSSL symbols to addons); they are looked
 * up with dlsym when first needed instead of being linked, and declared here rather than taken
 * from headers: no OpenSSL headers are needed to build, and a Node that does not export them
 * (built against a shared libcrypto that is not loaded globally, say) gets openBlob == undefined
 * and the JS path, instead of a process killed by an unresolved symbol at the first call.
 */
typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;
typedef struct evp_cipher_st EVP_CIPHER;
typedef struct evp_md_ctx_st EVP_MD_CTX;
typedef struct evp_md_st EVP_MD;
typedef struct engine_st ENGINE;
#define EVP_CTRL_GCM_SET_TAG 0x11 /* <openssl/evp.h>: EVP_CTRL_AEAD_SET_TAG, stable ABI */
#define EVP_CTRL_GCM_GET_TAG 0x10 /* EVP_CTRL_AEAD_GET_TAG */

static struct {
  int tried, ok;
  EVP_CIPHER_CTX *(*cipher_ctx_new)(void);
  void (*cipher_ctx_free)(EVP_CIPHER_CTX *ctx);
  void (*cipher_free)(EVP_CIPHER *cipher); /* OpenSSL 3 only, with cipher_fetch */
  const EVP_CIPHER *(*aes_256_gcm)(void);
  EVP_CIPHER *(*cipher_fetch)(void *libctx, const char *algorithm, const char *properties); /* OpenSSL 3 only */
  int (*decrypt_init)(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *type, ENGINE *impl, const unsigned char *key, const unsigned char *iv);
  int (*decrypt_update)(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl, const unsigned char *in, int inl);
  int (*decrypt_final)(EVP_CIPHER_CTX *ctx, unsigned char *outm, int *outl);
  int (*cipher_ctrl)(EVP_CIPHER_CTX *ctx, int type, int arg, void *ptr);
  EVP_MD_CTX *(*md_ctx_new)(void);
  void (*md_ctx_free)(EVP_MD_CTX *ctx);
  void (*md_free)(EVP_MD *md); /* OpenSSL 3 only, with md_fetch */
  const EVP_MD *(*sha256)(void);
  EVP_MD *(*md_fetch)(void *libctx, const char *algorithm, const char *properties); /* OpenSSL 3 only */
  int (*digest_init)(EVP_MD_CTX *ctx, const EVP_MD *type, ENGINE *impl);
  int (*digest_update)(EVP_MD_CTX *ctx, const void *d, size_t cnt);
  int (*digest_final)(EVP_MD_CTX *ctx, unsigned char *md, unsigned int *s);
  /* sealBlob only (seal_ok) */
  int seal_ok;
  int (*encrypt_init)(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *type, ENGINE *impl, const unsigned char *key, const unsigned char *iv);
  int (*encrypt_update)(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl, const unsigned char *in, int inl);
  int (*encrypt_final)(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl);
  int (*rand_bytes)(unsigned char *buf, int num);
} ossl;

/* Called from NAPI_MODULE_INIT, which Node runs for one environment at a time per thread; a race
 * between two threads' first loads would only look the same symbols up twice. */
static int ossl_load(void) {
  if (ossl.tried) return ossl.ok;
#define SYM(field, name) ((*(void **)&ossl.field = dlsym(RTLD_DEFAULT, name)) != NULL)
  ossl.ok = SYM(cipher_ctx_new, "EVP_CIPHER_CTX_new") && SYM(cipher_ctx_free, "EVP_CIPHER_CTX_free") && SYM(md_ctx_free, "EVP_MD_CTX_free") && SYM(aes_256_gcm, "EVP_aes_256_gcm") && SYM(decrypt_init, "EVP_DecryptInit_ex") &&
            SYM(decrypt_update, "EVP_DecryptUpdate") && SYM(decrypt_final, "EVP_DecryptFinal_ex") && SYM(cipher_ctrl, "EVP_CIPHER_CTX_ctrl") &&
            SYM(md_ctx_new, "EVP_MD_CTX_new") && SYM(sha256, "EVP_sha256") && SYM(digest_init, "EVP_DigestInit_ex") &&
            SYM(digest_update, "EVP_DigestUpdate") && SYM(digest_final, "EVP_DigestFinal_ex");
  ossl.seal_ok = ossl.ok && SYM(encrypt_init, "EVP_EncryptInit_ex") && SYM(encrypt_update, "EVP_EncryptUpdate") && SYM(encrypt_final, "EVP_EncryptFinal_ex") &&
                 SYM(rand_bytes, "RAND_bytes");
  if (!SYM(cipher_free, "EVP_CIPHER_free")) ossl.cipher_fetch = NULL;
  else (void)SYM(cipher_fetch, "EVP_CIPHER_fetch");
  if (!SYM(md_free, "EVP_MD_free")) ossl.md_fetch = NULL;
  else (void)SYM(md_fetch, "EVP_MD_fetch");
#undef SYM
  ossl.tried = 1;
  return ossl.ok;
}

/* Per thread: the cipher context keeps its key schedule between blobs of the same key. */
static __thread EVP_CIPHER_CTX *gcm;
static __thread unsigned char gcm_key[32];
static __thread int gcm_keyed;
static __thread const EVP_CIPHER *gcm_cipher;
static __thread EVP_CIPHER *gcm_cipher_fetched; /* gcm_cipher, when fetched (to be freed) */
static __thread EVP_CIPHER_CTX *gcm_enc; /* sealBlob's, keyed separately */
static __thread unsigned char gcm_enc_key[32];
static __thread int gcm_enc_keyed;
static __thread EVP_MD_CTX *md;
static __thread const EVP_MD *md_sha256;
static __thread EVP_MD *md_sha256_fetched;

/* AES-256-GCM, fetched once per thread (no implicit fetch per key). */
static const EVP_CIPHER *aes_256_gcm(void) {
  if (!gcm_cipher) gcm_cipher = gcm_cipher_fetched = ossl.cipher_fetch ? ossl.cipher_fetch(NULL, "AES-256-GCM", NULL) : NULL;
  if (!gcm_cipher) gcm_cipher = ossl.aes_256_gcm();
  return gcm_cipher;
}

/* Per thread: decrypted zstd payloads, reused up to SCRATCH_KEEP bytes. */
static __thread unsigned char *plain_scratch;
static __thread size_t plain_scratch_size;
#define SCRATCH_KEEP ((size_t)16 << 20)

/* Results of openBlob (src/repository/open-blob.ts). */
#define OPEN_OK 0           /* the plaintext is out[0, rawLength) */
#define OPEN_ZERO 1         /* or-ed in: the plaintext is all zeros */
#define OPEN_TAG (-1)       /* authentication failed */
#define OPEN_UNDECODED (-2) /* authenticated, but not decoded here (see below) */
#define OPEN_MISMATCH (-3)  /* decoded, but not rawLength bytes or not the id's SHA-256 */
#define OPEN_BAD_ID (-4)    /* the id is not 64 lower-case hex digits; nothing was done */
#define OPEN_ERROR (-100)   /* open_one only: *error says what failed that is not the blob's fault */

static int unhex(const char *hex, unsigned char *out) {
  for (int i = 0; i < 32; i++) {
    int v = 0;
    for (int j = 0; j < 2; j++) {
      char c = hex[2 * i + j];
      int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
      if (d < 0) return 0;
      v = v << 4 | d;
    }
    out[i] = (unsigned char)v;
  }
  return 1;
}

static int all_zero(const unsigned char *p, size_t n) {
  return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* The SHA-256 of p[0, n) into digest (OpenSSL, one message). Returns 0 with *error set on failure. */
static int sha256_one(const unsigned char *p, size_t n, unsigned char digest[32], const char **error) {
  unsigned int len = 0;
  if (!md && !(md = ossl.md_ctx_new())) {
    *error = "EVP_MD_CTX_new failed";
    return 0;
  }
  if (!md_sha256) md_sha256 = md_sha256_fetched = ossl.md_fetch ? ossl.md_fetch(NULL, "SHA256", NULL) : NULL; /* no implicit fetch per blob */
  if (!md_sha256) md_sha256 = ossl.sha256();
  if (ossl.digest_init(md, md_sha256, NULL) != 1 || ossl.digest_update(md, p, n) != 1 || ossl.digest_final(md, digest, &len) != 1 || len != 32) {
    *error = "SHA-256 failed";
    return 0;
  }
  return 1;
}

/* SHA-256 of p[0, n) equals id. */
static int sha256_is(const unsigned char *p, size_t n, const unsigned char *id, const char **error) {
  unsigned char digest[32];
  return sha256_one(p, n, digest, error) && memcmp(digest, id, 32) == 0;
}

/* Whether sha256_lanes may run here (set at module load; HOLDFAST_TEST_NO_SHA_LANES=1 turns it
 * off, for tests of the one-at-a-time path). */
static int lanes_on;
/* A group of messages is hashed in lanes when sum(blocks) * LANES_GAIN_X2 >= 2 * lanes *
 * max(blocks): measured here, sixteen full lanes do ~2.5 blocks in the time OpenSSL's one message
 * does one (2.2-2.7 GB/s against ~1 GB/s), so with fewer than ~6.4 busy lanes they lose. */
#define LANES_GAIN_X2 5
/* The most messages hash_many and openBlobs take at once. */
#define MANY_MAX 64

/* The SHA-256 of msg[i][0, len[i]) into digest + 32 i, for i < n (n <= MANY_MAX): groups of up to
 * 16 messages of similar length through the lanes where they pay off, the rest one at a time.
 * Returns 0 with *error set when OpenSSL fails. */
static int hash_many(int n, const unsigned char *const msg[], const size_t len[], unsigned char *digest, const char **error) {
  int order[MANY_MAX];
  for (int i = 0; i < n; i++) { /* longest first (insertion sort: n <= 64) */
    int j = i;
    for (; j > 0 && len[order[j - 1]] < len[i]; j--) order[j] = order[j - 1];
    order[j] = i;
  }
  for (int g = 0; g < n; g += SHA256_LANES) {
    int m = n - g < SHA256_LANES ? n - g : SHA256_LANES;
    size_t most = len[order[g]] / 64 + 1, sum = 0;
    for (int j = 0; j < m; j++) sum += len[order[g + j]] / 64 + 1;
    if (lanes_on && m > 1 && sum * LANES_GAIN_X2 >= 2 * most * SHA256_LANES) {
      const unsigned char *p[SHA256_LANES];
      size_t l[SHA256_LANES];
      unsigned char d[32 * SHA256_LANES];
      for (int j = 0; j < m; j++) {
        p[j] = msg[order[g + j]];
        l[j] = len[order[g + j]];
      }
      sha256_lanes(m, p, l, d);
      for (int j = 0; j < m; j++) memcpy(digest + 32 * order[g + j], d + 32 * j, 32);
    } else {
      for (int j = 0; j < m; j++) {
        int i = order[g + j];
        if (!sha256_one(msg[i], len[i], digest + 32 * i, error)) return 0;
      }
    }
  }
  return 1;
}

/*
 * One sealed blob sealed[0, sealed_len) (nonce (12) || ciphertext || tag (16), AAD = type byte ||
 * id; sealed_len >= 28; not modified) decrypted and decoded into out[0, raw). Its plaintext is a
 * mode byte, then the payload: mode 0 (stored) is decrypted straight into out, mode 1 (zstd) into
 * a per-thread scratch buffer and, once the tag has been checked, decompressed into out. Nothing
 * is interpreted before the tag is checked. With `hash`, the plaintext must also be exactly raw
 * bytes with SHA-256 equal to the id; without, the caller checks that. Returns OPEN_OK (with
 * OPEN_ZERO when hashed and all zeros) or a failure; *error is set (and a negative returned) only
 * for what is not the blob's fault (no memory, a failing library call), which the caller throws.
 * OPEN_UNDECODED covers an empty plaintext, any other mode byte, and a zstd payload that does not
 * start with a frame or that libzstd does not decode to exactly raw bytes: the JS path decides
 * those (and words every failure; this only says which check failed).
 */
static int open_one(const unsigned char *key, int type, const unsigned char id[32], const unsigned char *sealed, size_t sealed_len, unsigned char *out, size_t raw, int hash, const char **error) {
  unsigned char aad[33], tag[16], fin[16], mode = 0;
  unsigned char *temp = NULL; /* a payload larger than SCRATCH_KEEP: freed at the end */
  const unsigned char *body = sealed + 12;
  int body_len = (int)sealed_len - 28, n = 0, status;
  size_t payload_len = body_len > 0 ? (size_t)body_len - 1 : 0;
  unsigned char *plain = NULL; /* where the payload is decrypted to */
  memcpy(tag, body + body_len, 16);
  aad[0] = (unsigned char)type;
  memcpy(aad + 1, id, 32);
  if (!gcm && !(gcm = ossl.cipher_ctx_new())) {
    *error = "EVP_CIPHER_CTX_new failed";
    return OPEN_ERROR;
  }
  if (!gcm_keyed || memcmp(gcm_key, key, 32) != 0) {
    gcm_keyed = 0;
    if (ossl.decrypt_init(gcm, aes_256_gcm(), NULL, key, NULL) != 1) {
      *error = "EVP_DecryptInit_ex failed";
      return OPEN_ERROR;
    }
    memcpy(gcm_key, key, 32);
    gcm_keyed = 1;
  }
  /* The default GCM nonce length is 12; a new nonce re-initialises everything but the key. */
  if (ossl.decrypt_init(gcm, NULL, NULL, NULL, sealed) != 1 || ossl.decrypt_update(gcm, NULL, &n, aad, 33) != 1 ||
      (body_len > 0 && ossl.decrypt_update(gcm, &mode, &n, body, 1) != 1))
    return OPEN_TAG;
  /* The mode byte is not authenticated yet: it only chooses where the payload is decrypted to. */
  if (mode == 0 && payload_len == raw) {
    plain = out;
  } else if (payload_len <= SCRATCH_KEEP) {
    if (payload_len > plain_scratch_size) {
      free(plain_scratch);
      plain_scratch = malloc(payload_len);
      plain_scratch_size = plain_scratch ? payload_len : 0;
      if (!plain_scratch) {
        *error = "out of memory";
        return OPEN_ERROR;
      }
    }
    plain = plain_scratch;
  } else {
    if (!(temp = malloc(payload_len))) {
      *error = "out of memory";
      return OPEN_ERROR;
    }
    plain = temp;
  }
  if ((payload_len > 0 && ossl.decrypt_update(gcm, plain, &n, body + 1, (int)payload_len) != 1) || ossl.cipher_ctrl(gcm, EVP_CTRL_GCM_SET_TAG, 16, tag) != 1 ||
      ossl.decrypt_final(gcm, fin, &n) != 1) {
    status = OPEN_TAG;
    goto done;
  }
  /* Authenticated: now the plaintext may be interpreted. */
  if (body_len == 0) {
    status = OPEN_UNDECODED;
    goto done;
  } else if (mode == 0) {
    if (payload_len != raw) {
      status = OPEN_MISMATCH;
      goto done;
    }
  } else if (mode == 1) {
    if (payload_len < 4 || plain[0] != 0x28 || plain[1] != 0xb5 || plain[2] != 0x2f || plain[3] != 0xfd) {
      status = OPEN_UNDECODED;
      goto done;
    }
    if (!dctx && !(dctx = ZSTD_createDCtx())) {
      *error = "ZSTD_createDCtx failed";
      status = OPEN_ERROR;
      goto done;
    }
    size_t got = ZSTD_decompressDCtx(dctx, out, raw, plain, payload_len);
    if (ZSTD_isError(got) || got != raw) {
      status = OPEN_UNDECODED;
      goto done;
    }
  } else {
    status = OPEN_UNDECODED;
    goto done;
  }
  status = OPEN_OK;
  if (hash) {
    if (!sha256_is(out, raw, id, error)) status = *error ? OPEN_ERROR : OPEN_MISMATCH;
    else if (all_zero(out, raw)) status = OPEN_OK | OPEN_ZERO;
  }
done:
  free(temp);
  return status;
}

/*
 * openBlob(key, type, idHex, src, srcOff, srcLen, out, rawLength) -> number (OPEN_*).
 *
 * src[srcOff, srcOff + srcLen) is a sealed blob; open_one opens and checks it (against its id as
 * well); on success the plaintext is out[0, rawLength) (out's content means nothing after a
 * failure). The caller provides out with at least rawLength bytes and srcLen >= 28 within src:
 * violations are a TypeError here.
 */
static napi_value open_blob(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  void *key, *src, *out;
  size_t key_len, src_size, out_size, id_len = 0;
  char hex[66];
  int32_t type;
  int64_t src_off, src_len, raw;
  unsigned char id[32];
  napi_value result;
  const char *error = NULL;
  int status;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 8 || napi_get_buffer_info(env, argv[0], &key, &key_len) != napi_ok ||
      key_len != 32 || napi_get_value_int32(env, argv[1], &type) != napi_ok || type < 0 || type > 255 ||
      napi_get_buffer_info(env, argv[3], &src, &src_size) != napi_ok || napi_get_value_int64(env, argv[4], &src_off) != napi_ok ||
      napi_get_value_int64(env, argv[5], &src_len) != napi_ok || napi_get_buffer_info(env, argv[6], &out, &out_size) != napi_ok ||
      napi_get_value_int64(env, argv[7], &raw) != napi_ok || src_off < 0 || src_len < 28 || (uint64_t)src_off + (uint64_t)src_len > src_size || raw < 0 ||
      (uint64_t)raw > out_size || src_len > 0x7fffffff) {
    napi_throw_type_error(env, "ZSTD_SYNC", "openBlob(key, type, idHex, src, srcOff, srcLen, out, rawLength): bad arguments");
    return NULL;
  }
  if (napi_get_value_string_latin1(env, argv[2], hex, sizeof hex, &id_len) != napi_ok || id_len != 64 || !unhex(hex, id)) {
    status = OPEN_BAD_ID;
  } else {
    status = open_one(key, type, id, (const unsigned char *)src + src_off, (size_t)src_len, out, (size_t)raw, 1, &error);
    if (error) return fail(env, error);
  }
  if (napi_create_int32(env, status, &result) != napi_ok) return NULL;
  return result;
}

/* Direct writes: position, length and memory aligned to this (a page; a logical block is at most that on common disks). */
#define DIO_ALIGN ((size_t)4096)
#define OPEN_DIRECT_OFF 2 /* or-ed into openBlobs' flags: a direct write failed and was done through fd */

/* Write p[0, n) at `at` of fd; 0 or an errno. */
static int pwrite_all(int fd, const unsigned char *p, size_t n, off_t at) {
  for (size_t done = 0; done < n;) {
    ssize_t w = pwrite(fd, p + done, n - done, at + (off_t)done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return w < 0 ? errno : EIO;
    done += (size_t)w;
  }
  return 0;
}

/*
 * Asynchronous direct writes: Linux AIO (io_submit) on the O_DIRECT descriptor, which on ext4 and
 * XFS really is asynchronous for writes within the file's size (a write that extends the file
 * waits; the restore sizes files first). A synchronous direct write blocks the thread until the
 * device has the data: measured in a restore of 1.5 GB with 2 workers, each was blocked ~0.9 s
 * of ~3 s. With these, openBlobs decodes the next blobs while the earlier ones are written.
 *
 * Each thread has AIO_SLOTS buffers of AIO_SLOT_BYTES, used in turn by the calls of openBlobs
 * (one per call); a buffer is used again only once every write from it has completed. A write
 * that completes with an error (or short) is done again through the call's buffered descriptor,
 * from the same buffer, and direct writes are reported off (OPEN_DIRECT_OFF); if that fails too,
 * the error is kept for the next call or for openBlobsDrain, which the caller runs before it
 * reports the file written and before it closes either descriptor.
 */
#define AIO_SLOTS 4
#define AIO_SLOT_BYTES ((size_t)2 << 20)
static __thread aio_context_t aio_ctx;
static __thread int aio_state; /* 0 not tried, 1 usable, -1 not here (or broken: the buffers are then never reused) */
static __thread unsigned char *aio_buf[AIO_SLOTS];
static __thread int aio_fd[AIO_SLOTS];             /* the buffered descriptor of the slot's file */
static __thread uint32_t aio_pending[AIO_SLOTS];   /* writes submitted from the slot, not yet completed */
static __thread struct iocb aio_cb[AIO_SLOTS][MANY_MAX];
static __thread uint32_t aio_inflight;
static __thread int aio_next;
static __thread int aio_error;         /* errno of a write that failed both ways, not yet reported */
static __thread int aio_direct_failed; /* a direct write failed and was done through fd, not yet reported */
static int aio_test_fail;              /* HOLDFAST_TEST_AIO_FAIL=1: every completion counts as failed */

static int aio_ready(void) {
  if (aio_state == 0) {
    aio_state = -1;
    aio_context_t ctx = 0;
    if (syscall(SYS_io_setup, AIO_SLOTS * MANY_MAX, &ctx) != 0) return 0;
    for (int i = 0; i < AIO_SLOTS; i++) {
      if (posix_memalign((void **)&aio_buf[i], DIO_ALIGN, AIO_SLOT_BYTES) != 0) {
        for (int j = 0; j < i; j++) free(aio_buf[j]);
        memset(aio_buf, 0, sizeof aio_buf);
        syscall(SYS_io_destroy, ctx);
        return 0;
      }
    }
    aio_ctx = ctx;
    aio_state = 1;
  }
  return aio_state == 1;
}

/* Wait for at least one write to complete (there must be one in flight) and settle what completed. */
static void aio_reap(void) {
  struct io_event ev[32];
  long got;
  do got = syscall(SYS_io_getevents, aio_ctx, 1, 32, ev, NULL);
  while (got < 0 && errno == EINTR);
  if (got <= 0) {
    /* Cannot happen with a valid context; if it does, nothing in flight can be accounted for:
       keep the buffers (a write may still read them), stop using AIO, fail what was written. */
    if (!aio_error) aio_error = got < 0 ? errno : EIO;
    aio_state = -1;
    aio_inflight = 0;
    memset(aio_pending, 0, sizeof aio_pending);
    return;
  }
  for (long i = 0; i < got; i++) {
    const struct iocb *cb = (const struct iocb *)(uintptr_t)ev[i].obj;
    int slot = (int)ev[i].data;
    if (ev[i].res != (int64_t)cb->aio_nbytes || aio_test_fail) {
      int code = pwrite_all(aio_fd[slot], (const unsigned char *)(uintptr_t)cb->aio_buf, cb->aio_nbytes, (off_t)cb->aio_offset);
      if (code != 0) {
        if (!aio_error) aio_error = code;
      } else {
        aio_direct_failed = 1;
      }
    }
    aio_pending[slot]--;
    aio_inflight--;
  }
}

/* Submit one write; 0 or an errno (then it was not submitted). */
static int aio_submit(struct iocb *cb) {
  struct iocb *list[1] = {cb};
  for (;;) {
    long r = syscall(SYS_io_submit, aio_ctx, 1, list);
    if (r == 1) return 0;
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EAGAIN && aio_inflight > 0) {
      aio_reap();
      if (aio_state == 1) continue;
    }
    return r < 0 ? errno : EIO;
  }
}

static void aio_drain(void) {
  while (aio_inflight > 0 && aio_state == 1) aio_reap();
}

/*
 * openBlobsDrain() -> number: waits until every asynchronous write of this thread has completed.
 * 0; 1 when one failed as a direct write and was done through the buffered descriptor (stop
 * passing dfd); -errno when one failed both ways (the file does not hold what was written).
 */
static napi_value open_blobs_drain(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result;
  aio_drain();
  int r = aio_error ? -aio_error : aio_direct_failed ? 1 : 0;
  aio_error = 0;
  aio_direct_failed = 0;
  if (napi_create_int32(env, r, &result) != napi_ok) return NULL;
  return result;
}

/*
 * openBlobs(key, src, ids, desc, out, flags, fd, pos[, dfd]) -> number: opens up to 64 sealed blobs
 * of src that are consecutive pieces of one file and writes them to it. ids: n ids as 64 lower-case
 * hex digits each; desc: a Float64Array of 4 n numbers, per blob type, srcOff, srcLen, rawLength;
 * out: room for the sum of the raw lengths; flags: a Uint8Array of at least n; the file fd gets
 * blob i at pos + the sum of the raw lengths before it.
 *
 * dfd, when given and >= 0, is the same file opened with O_DIRECT: a blob whose position and
 * length are multiples of DIO_ALIGN is written through it (from a DIO_ALIGN-aligned place in out,
 * when out has DIO_ALIGN bytes to spare), which skips the copy into the page cache; others go
 * through fd. A direct write that fails is done again through fd, and flags[i] gets OPEN_DIRECT_OFF
 * (the caller stops passing dfd); the rest of the call uses fd only.
 *
 * Each blob is decrypted and decoded into its place in out (open_one) and, unless it is all zeros
 * (flags[i] = OPEN_ZERO: a hole, not written), written at once, while its bytes are still in the
 * CPU's cache: on this project's VM, writing them from a buffer of a few MiB that had been read
 * again since cost more kernel time than the hashing saved. Then all are hashed together
 * (hash_many). So a blob is written before its id is checked, as pgBackRest writes a file before
 * comparing its checksum: the caller fails the restore when one does not match.
 *
 * Returns k >= 0, the number of leading blobs that passed every check (and are written). Blob k,
 * when k < n, failed a check or was not attempted: the caller opens it one by one (openBlob / the
 * JS path), which throws its error or, where the JS decoder accepts it, writes it; nothing after it
 * counts. A failed write returns -errno. Arguments that break these rules are a TypeError.
 */
static napi_value open_blobs(napi_env env, napi_callback_info info) {
  size_t argc = 9;
  napi_value argv[9], result;
  void *key, *src, *out, *desc_data, *flags_data;
  size_t key_len, src_size, out_size, desc_len = 0, flags_len = 0;
  uint32_t n = 0;
  int32_t fd = -1, dfd = -1;
  double pos = -1;
  napi_typedarray_type desc_type, flags_type;
  const char *error = NULL;
  int bad = napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 8 || napi_get_buffer_info(env, argv[0], &key, &key_len) != napi_ok ||
            key_len != 32 || napi_get_buffer_info(env, argv[1], &src, &src_size) != napi_ok || napi_get_array_length(env, argv[2], &n) != napi_ok ||
            n > MANY_MAX || napi_get_typedarray_info(env, argv[3], &desc_type, &desc_len, &desc_data, NULL, NULL) != napi_ok ||
            desc_type != napi_float64_array || desc_len < 4 * (size_t)n || napi_get_buffer_info(env, argv[4], &out, &out_size) != napi_ok ||
            napi_get_typedarray_info(env, argv[5], &flags_type, &flags_len, &flags_data, NULL, NULL) != napi_ok || flags_type != napi_uint8_array || flags_len < n ||
            napi_get_value_int32(env, argv[6], &fd) != napi_ok || fd < 0 || napi_get_value_double(env, argv[7], &pos) != napi_ok || !(pos >= 0 && pos <= 9007199254740991.0) ||
            pos != (double)(int64_t)pos || (argc > 8 && napi_get_value_int32(env, argv[8], &dfd) != napi_ok);
  const double *desc = desc_data;
  size_t offset[MANY_MAX], len[MANY_MAX], at = 0;
  for (uint32_t i = 0; !bad && i < n; i++) {
    double type = desc[4 * i], off = desc[4 * i + 1], slen = desc[4 * i + 2], raw = desc[4 * i + 3];
    bad = !(type >= 0 && type <= 255 && off >= 0 && slen >= 28 && slen <= 0x7fffffff && off + slen <= (double)src_size && raw >= 0 && raw <= (double)out_size - (double)at) ||
          type != (double)(int)type || off != (double)(size_t)off || slen != (double)(size_t)slen || raw != (double)(size_t)raw;
    if (!bad) {
      offset[i] = at;
      len[i] = (size_t)raw;
      at += len[i];
    }
  }
  if (bad) {
    napi_throw_type_error(env, "ZSTD_SYNC", "openBlobs(key, src, ids, desc, out, flags, fd, pos): bad arguments");
    return NULL;
  }
  unsigned char ids[32 * MANY_MAX], digest[32 * MANY_MAX];
  const unsigned char *msg[MANY_MAX];
  unsigned char *flags = flags_data;
  /* Where the plaintexts go: out, or its first DIO_ALIGN-aligned byte when there is room for that. */
  unsigned char *base = out;
  size_t skew = (DIO_ALIGN - (uintptr_t)out % DIO_ALIGN) % DIO_ALIGN;
  if (dfd >= 0 && skew <= out_size - at) base += skew;
  int direct = dfd >= 0 && (uintptr_t)base % DIO_ALIGN == 0;
  /* Direct writes from a slot's buffer, asynchronously, when AIO is usable and the blobs fit. */
  int slot = -1;
  if (dfd >= 0 && at <= AIO_SLOT_BYTES && aio_ready()) {
    slot = aio_next;
    aio_next = (aio_next + 1) % AIO_SLOTS;
    while (aio_pending[slot] > 0 && aio_state == 1) aio_reap();
    if (aio_state == 1) {
      base = aio_buf[slot];
      aio_fd[slot] = fd;
      direct = 1;
    } else {
      slot = -1;
    }
  }
  if (aio_error) { /* an earlier write of this file failed both ways */
    int code = aio_error;
    aio_error = 0;
    if (napi_create_int32(env, -code, &result) != napi_ok) return NULL;
    return result;
  }
  uint32_t opened = 0; /* decoded and written, not yet hashed */
  for (; opened < n; opened++) {
    napi_value v;
    char hex[66];
    size_t id_len = 0;
    if (napi_get_element(env, argv[2], opened, &v) != napi_ok || napi_get_value_string_latin1(env, v, hex, sizeof hex, &id_len) != napi_ok || id_len != 64 ||
        !unhex(hex, ids + 32 * opened)) {
      napi_get_and_clear_last_exception(env, &v); /* not an id: blob `opened` is the caller's to open */
      break;
    }
    const double *d = desc + 4 * opened;
    unsigned char *plain = base + offset[opened];
    int status = open_one(key, (int)d[0], ids + 32 * opened, (const unsigned char *)src + (size_t)d[1], (size_t)d[2], plain, len[opened], 0, &error);
    if (error) return fail(env, error);
    if (status != OPEN_OK) break;
    msg[opened] = plain;
    flags[opened] = all_zero(plain, len[opened]) ? OPEN_ZERO : 0;
    if (flags[opened]) continue;
    off_t at = (off_t)pos + (off_t)offset[opened];
    int code = -1;
    if (direct && (uint64_t)at % DIO_ALIGN == 0 && len[opened] % DIO_ALIGN == 0 && (uintptr_t)plain % DIO_ALIGN == 0) {
      if (slot >= 0 && aio_state == 1) {
        struct iocb *cb = &aio_cb[slot][opened];
        memset(cb, 0, sizeof *cb);
        cb->aio_data = (uint64_t)slot;
        cb->aio_lio_opcode = IOCB_CMD_PWRITE;
        cb->aio_fildes = (uint32_t)dfd;
        cb->aio_buf = (uint64_t)(uintptr_t)plain;
        cb->aio_nbytes = len[opened];
        cb->aio_offset = (int64_t)at;
        code = aio_submit(cb);
        if (code == 0) {
          aio_pending[slot]++;
          aio_inflight++;
          continue;
        }
      } else {
        code = pwrite_all(dfd, plain, len[opened], at);
      }
      if (code != 0) {
        flags[opened] |= OPEN_DIRECT_OFF;
        direct = 0;
      }
    }
    if (code != 0) code = pwrite_all(fd, plain, len[opened], at);
    if (code != 0) {
      if (napi_create_int32(env, -code, &result) != napi_ok) return NULL;
      return result;
    }
  }
  if (aio_direct_failed && n > 0) { /* reported with this call's flags */
    flags[0] |= OPEN_DIRECT_OFF;
    aio_direct_failed = 0;
  }
  if (opened > 0 && !hash_many((int)opened, msg, len, digest, &error)) return fail(env, error);
  uint32_t k = 0;
  while (k < opened && memcmp(digest + 32 * k, ids + 32 * k, 32) == 0) k++;
  if (napi_create_uint32(env, k, &result) != napi_ok) return NULL;
  return result;
}

/*
 * sha256Many(list) -> Buffer: the SHA-256 digests of up to 64 buffers, 32 bytes each in order,
 * through hash_many (the lanes where they pay off). shaLanes, a property of the module, is 16 when
 * the lanes are in use in this process and 0 when not.
 */
static napi_value sha256_many(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result;
  uint32_t n = 0;
  const unsigned char *msg[MANY_MAX];
  size_t len[MANY_MAX];
  void *digest;
  const char *error = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || napi_get_array_length(env, argv[0], &n) != napi_ok || n > MANY_MAX) {
    napi_throw_type_error(env, "ZSTD_SYNC", "sha256Many(list): an array of at most 64 buffers");
    return NULL;
  }
  for (uint32_t i = 0; i < n; i++) {
    napi_value v;
    void *data;
    if (napi_get_element(env, argv[0], i, &v) != napi_ok || napi_get_buffer_info(env, v, &data, &len[i]) != napi_ok) {
      napi_throw_type_error(env, "ZSTD_SYNC", "sha256Many(list): an array of at most 64 buffers");
      return NULL;
    }
    msg[i] = data;
  }
  if (napi_create_buffer(env, 32 * (size_t)n, &digest, &result) != napi_ok) return fail(env, "cannot allocate the output buffer");
  if (n > 0 && !hash_many((int)n, msg, len, digest, &error)) return fail(env, error);
  return result;
}

/*
 * sealBlob(key, type, id, data[, level]) -> ArrayBuffer: the stored form of a blob (docs/design.md
 * §4-§5), made in one call into one buffer of its own that can be transferred between threads:
 *
 *   nonce (12, random) || AES-256-GCM(mode byte || payload) || tag (16), AAD = type byte || id.
 *
 * With a level, data of 64 bytes or more is compressed as one zstd frame at that level and stored
 * compressed (mode 1) when that is smaller, else as is (mode 0); without a level it is stored as is:
 * the rules of compress() in src/repository/compress.ts, which seal-blob.ts keeps the JS path of.
 * The nonce comes from OpenSSL's RAND_bytes, Node's own CSPRNG (crypto.randomBytes). Nothing is
 * allocated per call but the result: the cipher context keeps its key schedule per thread, and the
 * zstd output goes to the thread's scratch buffer before it is encrypted into the result.
 */
static napi_value seal_blob(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5], result;
  void *key, *id, *data, *out;
  size_t key_len, id_len, len;
  int32_t type, level = 0;
  napi_valuetype level_type = napi_undefined;
  unsigned char aad[33], mode = 0;
  int n = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4 || napi_get_buffer_info(env, argv[0], &key, &key_len) != napi_ok ||
      key_len != 32 || napi_get_value_int32(env, argv[1], &type) != napi_ok || type < 0 || type > 255 ||
      napi_get_buffer_info(env, argv[2], &id, &id_len) != napi_ok || id_len != 32 || napi_get_buffer_info(env, argv[3], &data, &len) != napi_ok ||
      len > 0x7fffffe0 || (argc >= 5 && (napi_typeof(env, argv[4], &level_type) != napi_ok ||
                                         (level_type != napi_undefined && napi_get_value_int32(env, argv[4], &level) != napi_ok)))) {
    napi_throw_type_error(env, "ZSTD_SYNC", "sealBlob(key, type, id, data[, level]): bad arguments");
    return NULL;
  }
  const unsigned char *payload = data;
  size_t payload_len = len;
  if (level_type != napi_undefined && len >= 64) {
    size_t z = 0;
    const char *error = compress_to_scratch(data, len, level, &z);
    if (error) return fail(env, error);
    if (z < len) {
      mode = 1;
      payload = (const unsigned char *)scratch;
      payload_len = z;
    }
  }
  if (napi_create_arraybuffer(env, 12 + 1 + payload_len + 16, &out, &result) != napi_ok) return fail(env, "cannot allocate the sealed blob");
  unsigned char *nonce = out, *body = nonce + 12, *tag = body + 1 + payload_len;
  aad[0] = (unsigned char)type;
  memcpy(aad + 1, id, 32);
  if (ossl.rand_bytes(nonce, 12) != 1) return fail(env, "RAND_bytes failed");
  if (!gcm_enc && !(gcm_enc = ossl.cipher_ctx_new())) return fail(env, "EVP_CIPHER_CTX_new failed");
  if (!gcm_enc_keyed || memcmp(gcm_enc_key, key, 32) != 0) {
    gcm_enc_keyed = 0;
    if (ossl.encrypt_init(gcm_enc, aes_256_gcm(), NULL, key, NULL) != 1) return fail(env, "EVP_EncryptInit_ex failed");
    memcpy(gcm_enc_key, key, 32);
    gcm_enc_keyed = 1;
  }
  /* The default GCM nonce length is 12; a new nonce re-initialises everything but the key. */
  if (ossl.encrypt_init(gcm_enc, NULL, NULL, NULL, nonce) != 1 || ossl.encrypt_update(gcm_enc, NULL, &n, aad, 33) != 1 ||
      ossl.encrypt_update(gcm_enc, body, &n, &mode, 1) != 1 || (payload_len > 0 && ossl.encrypt_update(gcm_enc, body + 1, &n, payload, (int)payload_len) != 1) ||
      ossl.encrypt_final(gcm_enc, tag, &n) != 1 || n != 0 || ossl.cipher_ctrl(gcm_enc, EVP_CTRL_GCM_GET_TAG, 16, tag) != 1)
    return fail(env, "AES-256-GCM encryption failed");
  return result;
}

/*
 * PostgreSQL's page checksum (src/include/storage/checksum_impl.h; the algorithm is described in
 * src/postgres/page-checksum.ts, whose JS version this must equal): 32 FNV-1a-like sums over the
 * page read as rows of 32 native-order uint32 words, two extra rounds with zeroes, the sums XORed,
 * the block number XORed in, reduced to 1..65535. The 32 sums are four 8-lane vectors, so the
 * AVX2 clone (chosen at load time on CPUs that have it) does a row in four multiplies.
 */
typedef uint32_t u32x8 __attribute__((vector_size(32)));

static const uint32_t checksum_base[32] = {
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C, 0xF8D4474F, 0xE39EB970, 0x42C6AE16,
    0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB, 0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2,
    0x304A0979, 0x85AA43D4, 0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756};

/* One round for eight of the sums: s = (s ^ w) * prime ^ (s ^ w) >> 17, w read (unaligned) from p. */
#define CHECKSUM_ROUND(s, p, wmask)                                                                                                                       \
  do {                                                                                                                                                     \
    u32x8 w_;                                                                                                                                              \
    memcpy(&w_, (p), sizeof w_);                                                                                                                           \
    u32x8 t_ = (s) ^ (w_ & (wmask));                                                                                                                       \
    (s) = (t_ * prime) ^ (t_ >> 17);                                                                                                                       \
  } while (0)

/* The sum of one page of `size` bytes (a multiple of 128, at least 128), before the block number. */
__attribute__((target_clones("avx2", "default"))) static uint32_t checksum_block(const unsigned char *page, size_t size) {
  const u32x8 prime = {16777619u, 16777619u, 16777619u, 16777619u, 16777619u, 16777619u, 16777619u, 16777619u};
  /* Word 2 holds pd_checksum (bytes 8-9), which counts as zero, and pd_flags (bytes 10-11). */
  const union { uint16_t u16[2]; uint32_t u32; } keep = {{0, 0xffff}};
  const u32x8 mask = {~0u, ~0u, keep.u32, ~0u, ~0u, ~0u, ~0u, ~0u};
  const u32x8 all = {~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ~0u}, none = {0, 0, 0, 0, 0, 0, 0, 0};
  u32x8 s0, s1, s2, s3;
  memcpy(&s0, checksum_base, sizeof s0);
  memcpy(&s1, checksum_base + 8, sizeof s1);
  memcpy(&s2, checksum_base + 16, sizeof s2);
  memcpy(&s3, checksum_base + 24, sizeof s3);
  CHECKSUM_ROUND(s0, page, mask);
  CHECKSUM_ROUND(s1, page + 32, all);
  CHECKSUM_ROUND(s2, page + 64, all);
  CHECKSUM_ROUND(s3, page + 96, all);
  for (size_t off = 128; off < size; off += 128) {
    CHECKSUM_ROUND(s0, page + off, all);
    CHECKSUM_ROUND(s1, page + off + 32, all);
    CHECKSUM_ROUND(s2, page + off + 64, all);
    CHECKSUM_ROUND(s3, page + off + 96, all);
  }
  for (int r = 0; r < 2; r++) { /* two rounds with zeroes: the words are ANDed with none */
    CHECKSUM_ROUND(s0, page, none);
    CHECKSUM_ROUND(s1, page, none);
    CHECKSUM_ROUND(s2, page, none);
    CHECKSUM_ROUND(s3, page, none);
  }
  u32x8 x = s0 ^ s1 ^ s2 ^ s3;
  uint32_t sum = 0;
  for (int l = 0; l < 8; l++) sum ^= x[l];
  return sum;
}

/*
 * pageChecksums(buf, blockSize, firstBlock, out) -> number of pages: for every whole page i of buf
 * (blockSize bytes each: a multiple of 128, at most 32768), out[i] (a Uint16Array) = the checksum
 * of page i as block firstBlock + i, whatever the page holds: which pages are checked and what a
 * mismatch means is decided by the caller. buf is not modified and need not be aligned.
 */
static napi_value page_checksums(napi_env env, napi_callback_info info) {
  size_t argc = 4, len, out_len;
  napi_value argv[4], result;
  void *buf, *out;
  int32_t block_size;
  double first;
  napi_typedarray_type out_type;
  napi_value ab;
  size_t ab_off;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4 || napi_get_buffer_info(env, argv[0], &buf, &len) != napi_ok ||
      napi_get_value_int32(env, argv[1], &block_size) != napi_ok || block_size < 128 || block_size > 32768 || block_size % 128 != 0 ||
      napi_get_value_double(env, argv[2], &first) != napi_ok || !(first >= 0 && first <= 4294967295.0) || first != (double)(uint32_t)first ||
      napi_get_typedarray_info(env, argv[3], &out_type, &out_len, &out, &ab, &ab_off) != napi_ok || out_type != napi_uint16_array ||
      out_len < len / (size_t)block_size || (len / (size_t)block_size > 0 && (uint64_t)first + len / (size_t)block_size - 1 > 0xffffffffu)) {
    napi_throw_type_error(env, "ZSTD_SYNC", "pageChecksums(buf, blockSize, firstBlock, out): bad arguments");
    return NULL;
  }
  size_t pages = len / (size_t)block_size;
  uint16_t *sums = out;
  for (size_t i = 0; i < pages; i++) {
    uint32_t sum = checksum_block((const unsigned char *)buf + i * (size_t)block_size, (size_t)block_size) ^ (uint32_t)((uint32_t)first + i);
    sums[i] = (uint16_t)(sum % 65535 + 1);
  }
  napi_create_uint32(env, (uint32_t)pages, &result);
  return result;
}

/*
 * Frees this thread's contexts and buffers (and forgets the key). A cleanup hook of the
 * environment, which Node runs on the environment's thread as it ends: a worker thread (a restore
 * or backup worker) that exits leaves nothing behind, which matters for a long-running process.
 * libuv's pool threads (compressAsync) keep theirs for the life of the process.
 */
static void free_thread_state(void *arg) {
  (void)arg;
  aio_drain();
  if (aio_state == 1) {
    syscall(SYS_io_destroy, aio_ctx);
    for (int i = 0; i < AIO_SLOTS; i++) free(aio_buf[i]);
    memset(aio_buf, 0, sizeof aio_buf);
    aio_state = 0;
  }
  ZSTD_freeCCtx(cctx);
  cctx = NULL;
  ZSTD_freeDCtx(dctx);
  dctx = NULL;
  free(scratch);
  scratch = NULL;
  scratch_size = 0;
  free(plain_scratch);
  plain_scratch = NULL;
  plain_scratch_size = 0;
  if (gcm) ossl.cipher_ctx_free(gcm); /* cleanses the key schedule */
  gcm = NULL;
  if (gcm_enc) ossl.cipher_ctx_free(gcm_enc);
  gcm_enc = NULL;
  for (volatile unsigned char *k = gcm_enc_key; k < gcm_enc_key + sizeof gcm_enc_key; k++) *k = 0;
  gcm_enc_keyed = 0;
  for (volatile unsigned char *k = gcm_key; k < gcm_key + sizeof gcm_key; k++) *k = 0;
  gcm_keyed = 0;
  if (gcm_cipher_fetched) ossl.cipher_free(gcm_cipher_fetched);
  gcm_cipher = gcm_cipher_fetched = NULL;
  if (md) ossl.md_ctx_free(md);
  md = NULL;
  if (md_sha256_fetched) ossl.md_free(md_sha256_fetched);
  md_sha256 = md_sha256_fetched = NULL;
}

/*
 * startWriteback(fd, offset, length) -> boolean: sync_file_range(SYNC_FILE_RANGE_WRITE), i.e. start
 * writing those dirty pages to storage without waiting for it. Restore workers call it as they go
 * so that the final syncfs finds little left to write (docs/design.md §11). Only a hint: false
 * when the kernel refuses (not a regular file, an old kernel), never an exception.
 */
static napi_value start_writeback(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], result;
  int32_t fd = -1;
  int64_t off = 0, len = 0;
  int ok = napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc == 3 && napi_get_value_int32(env, argv[0], &fd) == napi_ok &&
           napi_get_value_int64(env, argv[1], &off) == napi_ok && napi_get_value_int64(env, argv[2], &len) == napi_ok && fd >= 0 && off >= 0 && len >= 0;
  if (ok) ok = sync_file_range(fd, off, len, SYNC_FILE_RANGE_WRITE) == 0;
  napi_get_boolean(env, ok, &result);
  return result;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "compress", NAPI_AUTO_LENGTH, compress, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "compress", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "decompress", NAPI_AUTO_LENGTH, decompress, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "decompress", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "compressAsync", NAPI_AUTO_LENGTH, compress_async, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "compressAsync", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "startWriteback", NAPI_AUTO_LENGTH, start_writeback, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "startWriteback", fn) != napi_ok) return NULL;
  if (napi_add_env_cleanup_hook(env, free_thread_state, NULL) != napi_ok) return NULL;
  if (ossl_load()) {
    if (napi_create_function(env, "openBlob", NAPI_AUTO_LENGTH, open_blob, NULL, &fn) != napi_ok) return NULL;
    if (napi_set_named_property(env, exports, "openBlob", fn) != napi_ok) return NULL;
    const char *no_lanes = getenv("HOLDFAST_TEST_NO_SHA_LANES");
    lanes_on = sha256_lanes_usable() && !(no_lanes && strcmp(no_lanes, "1") == 0);
    if (napi_create_function(env, "openBlobs", NAPI_AUTO_LENGTH, open_blobs, NULL, &fn) != napi_ok) return NULL;
    if (napi_set_named_property(env, exports, "openBlobs", fn) != napi_ok) return NULL;
    const char *aio_fail = getenv("HOLDFAST_TEST_AIO_FAIL");
    aio_test_fail = aio_fail && strcmp(aio_fail, "1") == 0;
    if (napi_create_function(env, "openBlobsDrain", NAPI_AUTO_LENGTH, open_blobs_drain, NULL, &fn) != napi_ok) return NULL;
    if (napi_set_named_property(env, exports, "openBlobsDrain", fn) != napi_ok) return NULL;
    if (napi_create_function(env, "sha256Many", NAPI_AUTO_LENGTH, sha256_many, NULL, &fn) != napi_ok) return NULL;
    if (napi_set_named_property(env, exports, "sha256Many", fn) != napi_ok) return NULL;
    napi_value lanes;
    if (napi_create_int32(env, lanes_on ? SHA256_LANES : 0, &lanes) != napi_ok || napi_set_named_property(env, exports, "shaLanes", lanes) != napi_ok) return NULL;
  }
  if (ossl.seal_ok) {
    if (napi_create_function(env, "sealBlob", NAPI_AUTO_LENGTH, seal_blob, NULL, &fn) != napi_ok) return NULL;
    if (napi_set_named_property(env, exports, "sealBlob", fn) != napi_ok) return NULL;
  }
  if (napi_create_function(env, "pageChecksums", NAPI_AUTO_LENGTH, page_checksums, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "pageChecksums", fn) != napi_ok) return NULL;
  return exports;
}
