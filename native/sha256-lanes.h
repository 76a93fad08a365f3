/*
 * SHA-256 of up to 16 messages at once, one message per 32-bit lane of AVX-512 registers
 * (included by zstd-sync.c). Restore verifies every blob against its id (docs/design.md §6), and
 * one message at a time that hash cost more CPU than decryption and decompression together: on
 * this project's Ice Lake VM OpenSSL's SHA-extension code does ~1 GB/s per core, sixteen lanes
 * together ~3 GB/s. The lanes pay off when most of them are busy, i.e. for many blobs of about the
 * same size, which is what a restore opens: relation files are cut into 128 KiB chunks.
 *
 * FIPS 180-4 §6.2 with the message schedule and the round function written once per lane group:
 * rotations are vprord, the three-input functions (Σ's XOR, Ch, Maj) one vpternlogd each. A
 * message's blocks are loaded as rows (one 64-byte block per lane), byte-swapped and transposed so
 * that vector t holds word t of every lane's block. Messages of different lengths run in lockstep;
 * a lane whose message has ended hashes a dummy block and its state is left as it was.
 *
 * sha256_lanes_usable() says whether this CPU and OS have AVX-512F/BW; without it (or on another
 * architecture) callers hash one message at a time.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define SHA256_LANES 16

static const uint32_t SHA256_H0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

/* The final 1 or 2 blocks of a message of `len` bytes (its last partial block, 0x80, zeros, the
 * length in bits big-endian) into buf; returns how many. */
static inline size_t sha256_final_blocks(unsigned char buf[128], const unsigned char *msg, size_t len) {
  size_t rest = len & 63, n = rest < 56 ? 64 : 128;
  memset(buf, 0, n);
  if (rest) memcpy(buf, msg + (len - rest), rest);
  buf[rest] = 0x80;
  uint64_t bits = (uint64_t)len << 3;
  for (int i = 0; i < 8; i++) buf[n - 1 - i] = (unsigned char)(bits >> (8 * i));
  return n / 64;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

static const uint32_t SHA256_K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be,
    0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa,
    0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85,
    0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3,
    0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f,
    0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define LANES_TARGET __attribute__((target("avx512f,avx512bw")))
#define ROR(x, n) _mm512_ror_epi32((x), (n))
#define XOR3(a, b, c) _mm512_ternarylogic_epi32((a), (b), (c), 0x96)
#define CH(e, f, g) _mm512_ternarylogic_epi32((e), (f), (g), 0xCA)  /* e ? f : g */
#define MAJ(a, b, c) _mm512_ternarylogic_epi32((a), (b), (c), 0xE8) /* at least two set */

static int sha256_lanes_usable(void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
}

/* r[i] holds 16 words of lane i; afterwards r[t] holds word t of every lane. In four steps, each
 * swapping the off-diagonal d x d blocks of every 2d x 2d block (d = 8, 4, 2, 1). */
static LANES_TARGET void transpose16(__m512i r[16]) {
  for (int d = 8; d >= 1; d >>= 1) {
    uint32_t lo[16], hi[16];
    for (int c = 0; c < 16; c++) {
      lo[c] = (c & d) ? (uint32_t)(16 + c - d) : (uint32_t)c;
      hi[c] = (c & d) ? (uint32_t)(16 + c) : (uint32_t)(c + d);
    }
    const __m512i il = _mm512_loadu_si512(lo), ih = _mm512_loadu_si512(hi);
    for (int i = 0; i < 16; i++) {
      if (i & d) continue;
      const __m512i a = r[i], b = r[i + d];
      r[i] = _mm512_permutex2var_epi32(a, il, b);
      r[i + d] = _mm512_permutex2var_epi32(a, ih, b);
    }
  }
}

/* The SHA-256 digests of msg[j][0, len[j]) into out + 32 j, for j < n (1 <= n <= 16). */
static LANES_TARGET void sha256_lanes(int n, const unsigned char *const msg[], const size_t len[], unsigned char *out) {
  static const unsigned char idle[64];
  unsigned char last[SHA256_LANES][128];
  size_t whole[SHA256_LANES], total[SHA256_LANES], most = 0;
  for (int j = 0; j < SHA256_LANES; j++) {
    whole[j] = total[j] = 0;
    if (j < n) {
      whole[j] = len[j] / 64;
      total[j] = whole[j] + sha256_final_blocks(last[j], msg[j], len[j]);
    }
    if (total[j] > most) most = total[j];
  }
  const __m512i bswap = _mm512_broadcast_i32x4(_mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL));
  __m512i s[8];
  for (int i = 0; i < 8; i++) s[i] = _mm512_set1_epi32((int)SHA256_H0[i]);
  for (size_t k = 0; k < most; k++) {
    __m512i w[16];
    __mmask16 busy = 0;
    for (int j = 0; j < SHA256_LANES; j++) {
      const unsigned char *p = idle;
      if (k < whole[j]) p = msg[j] + 64 * k;
      else if (k < total[j]) p = last[j] + 64 * (k - whole[j]);
      if (k < total[j]) busy |= (__mmask16)(1u << j);
      w[j] = _mm512_shuffle_epi8(_mm512_loadu_si512(p), bswap);
    }
    transpose16(w);
    __m512i a = s[0], b = s[1], c = s[2], d = s[3], e = s[4], f = s[5], g = s[6], h = s[7];
    _Pragma("GCC unroll 64") for (int t = 0; t < 64; t++) {
      if (t >= 16) { /* w[t mod 16] becomes W[t]: σ1(W[t-2]) + W[t-7] + σ0(W[t-15]) + W[t-16] */
        const __m512i w15 = w[(t - 15) & 15], w2 = w[(t - 2) & 15];
        const __m512i s0 = XOR3(ROR(w15, 7), ROR(w15, 18), _mm512_srli_epi32(w15, 3));
        const __m512i s1 = XOR3(ROR(w2, 17), ROR(w2, 19), _mm512_srli_epi32(w2, 10));
        w[t & 15] = _mm512_add_epi32(_mm512_add_epi32(w[t & 15], s0), _mm512_add_epi32(w[(t - 7) & 15], s1));
      }
      const __m512i kw = _mm512_add_epi32(w[t & 15], _mm512_set1_epi32((int)SHA256_K[t]));
      const __m512i t1 = _mm512_add_epi32(_mm512_add_epi32(h, XOR3(ROR(e, 6), ROR(e, 11), ROR(e, 25))), _mm512_add_epi32(CH(e, f, g), kw));
      const __m512i t2 = _mm512_add_epi32(XOR3(ROR(a, 2), ROR(a, 13), ROR(a, 22)), MAJ(a, b, c));
      h = g;
      g = f;
      f = e;
      e = _mm512_add_epi32(d, t1);
      d = c;
      c = b;
      b = a;
      a = _mm512_add_epi32(t1, t2);
    }
    const __m512i v[8] = {a, b, c, d, e, f, g, h};
    for (int i = 0; i < 8; i++) s[i] = _mm512_mask_add_epi32(s[i], busy, s[i], v[i]);
  }
  uint32_t st[8][SHA256_LANES];
  for (int i = 0; i < 8; i++) _mm512_storeu_si512(st[i], s[i]);
  for (int j = 0; j < n; j++) {
    unsigned char *o = out + 32 * j;
    for (int i = 0; i < 8; i++) {
      o[4 * i] = (unsigned char)(st[i][j] >> 24);
      o[4 * i + 1] = (unsigned char)(st[i][j] >> 16);
      o[4 * i + 2] = (unsigned char)(st[i][j] >> 8);
      o[4 * i + 3] = (unsigned char)st[i][j];
    }
  }
}
#undef ROR
#undef XOR3
#undef CH
#undef MAJ
#else
static int sha256_lanes_usable(void) {
  return 0;
}
static void sha256_lanes(int n, const unsigned char *const msg[], const size_t len[], unsigned char *out) {
  (void)n, (void)msg, (void)len, (void)out;
}
#endif
