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
 */
#include <stdlib.h>
#include <node_api.h>

typedef struct ZSTD_CCtx_s ZSTD_CCtx;
typedef struct ZSTD_DCtx_s ZSTD_DCtx;
ZSTD_DCtx *ZSTD_createDCtx(void);
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
  if (!cctx && !(cctx = ZSTD_createCCtx())) return fail(env, "ZSTD_createCCtx failed");
  size_t bound = ZSTD_compressBound(len);
  if (bound > scratch_size) {
    free(scratch);
    scratch = malloc(bound);
    scratch_size = scratch ? bound : 0;
    if (!scratch) return fail(env, "out of memory");
  }
  size_t n = ZSTD_compressCCtx(cctx, scratch, scratch_size, src, len, level);
  if (ZSTD_isError(n)) return fail(env, ZSTD_getErrorName(n));
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

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "compress", NAPI_AUTO_LENGTH, compress, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "compress", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "decompress", NAPI_AUTO_LENGTH, decompress, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "decompress", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "compressAsync", NAPI_AUTO_LENGTH, compress_async, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "compressAsync", fn) != napi_ok) return NULL;
  return exports;
}
