/*
 * bitcl fast path: the per-step bit operations of BLIP-style bit freezing.
 *
 * Plain C (no torch headers) so that it compiles in well under a second with
 * any cc; bitcl/kernels/_fast.py builds it on first use and calls it through
 * ctypes on the tensors' data pointers.  Every function here has a reference
 * twin in kernels/reference.py, and the tests check they agree bit for bit.
 *
 * Code convention (see DESIGN.md): signed narrow-range codes
 * c in [-(2^(N-1) - 1), 2^(N-1) - 1], offset-binary u = c + 2^(N-1), bit planes
 * most significant first; k = number of frozen most significant bits of u.
 */
#include <stdint.h>
#include <math.h>

#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef __AVX2__
#include <immintrin.h>
#endif

/* Below this many elements, threading costs more than it saves. */
#define PARALLEL_MIN 65536

/* Return the index of the first NaN/inf of x, or -1.  Read-only, so a tensor
 * with a bad value is rejected before anything is written. */
int64_t bitcl_first_nonfinite(const float *x, int64_t n)
{
    const uint32_t *bits = (const uint32_t *)x;
    const int64_t block = 4096;
    for (int64_t start = 0; start < n; start += block) {
        int64_t end = start + block < n ? start + block : n;
        uint32_t bad = 0;
        for (int64_t i = start; i < end; ++i)
            bad |= ((bits[i] & 0x7f800000u) == 0x7f800000u);
        if (bad)
            for (int64_t i = start; i < end; ++i)
                if ((bits[i] & 0x7f800000u) == 0x7f800000u)
                    return i;
    }
    return -1;
}

/*
 * Project latent weights onto the intervals their frozen bits allow, and
 * refresh the codes, in one pass over (latent, codes, frozen).
 *
 * With k frozen bits and window w = 2^(N-k), the allowed offset codes are
 * u in [floor(u/w) w, floor(u/w) w + w - 1], intersected with u >= 1 (narrow
 * range).  The latent is clamped to scale * [c_lo, c_hi]; the new code is the
 * latent rounded half-to-even, clamped again so that float rounding can never
 * move a code outside its window: no frozen bit can change.
 *
 * The body lives in its own restrict-qualified function so the compiler
 * vectorises it (inside an OpenMP-outlined loop it does not).
 */
static void project_range(float *restrict latent, int32_t *restrict codes,
                          const uint8_t *restrict frozen, int64_t begin,
                          int64_t end, int32_t bits, float scale,
                          float inv_scale)
{
    const int32_t half = (int32_t)1 << (bits - 1);
    for (int64_t i = begin; i < end; ++i) {
        int32_t shift = bits - (int32_t)frozen[i];
        int32_t window = (int32_t)1 << shift;
        int32_t u = codes[i] + half;
        int32_t u_lo = u & ~(window - 1);
        int32_t u_hi = u_lo + window - 1;
        u_lo = u_lo > 1 ? u_lo : 1;
        int32_t c_lo = u_lo - half, c_hi = u_hi - half;
        float lo = (float)c_lo * scale, hi = (float)c_hi * scale;
        float x = latent[i];
        x = x < lo ? lo : x;
        x = x > hi ? hi : x;
        /* |x * inv_scale| < 2^23, where rintf (round half to even in the
         * default rounding mode) is exact and vectorises. */
        int32_t c = (int32_t)__builtin_rintf(x * inv_scale);
        c = c < c_lo ? c_lo : c;
        c = c > c_hi ? c_hi : c;
        latent[i] = x;
        codes[i] = c;
    }
}

void bitcl_project(float *latent, int32_t *codes, const uint8_t *frozen,
                   int64_t n, int bits, float scale, float inv_scale,
                   int nthreads)
{
    int threads = n >= PARALLEL_MIN ? nthreads : 1;
    if (threads <= 1) {
        project_range(latent, codes, frozen, 0, n, bits, scale, inv_scale);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        int64_t chunk = (n + nt - 1) / nt;
        int64_t begin = (int64_t)t * chunk, end = begin + chunk < n ? begin + chunk : n;
        if (begin < end)
            project_range(latent, codes, frozen, begin, end, bits, scale, inv_scale);
    }
#else
    project_range(latent, codes, frozen, 0, n, bits, scale, inv_scale);
#endif
}

/* Split [0, n) over the OpenMP threads and call body(begin, end) on each. */
#ifdef _OPENMP
#define PARALLEL_RANGES(n, nthreads, body)                                      \
    do {                                                                        \
        int threads_ = (n) >= PARALLEL_MIN / 8 ? (nthreads) : 1;                \
        _Pragma("omp parallel num_threads(threads_)")                           \
        {                                                                       \
            int t_ = omp_get_thread_num(), nt_ = omp_get_num_threads();         \
            int64_t chunk_ = ((n) + nt_ - 1) / nt_;                             \
            int64_t b_ = (int64_t)t_ * chunk_;                                  \
            int64_t e_ = b_ + chunk_ < (n) ? b_ + chunk_ : (n);                 \
            if (b_ < e_)                                                        \
                body(b_, e_);                                                   \
        }                                                                       \
    } while (0)
#else
#define PARALLEL_RANGES(n, nthreads, body) body(0, (n))
#endif

/*
 * Pack N-bit codes into N bit planes, most significant plane first.  Plane b
 * occupies bytes [b * nbytes, (b + 1) * nbytes) with nbytes = ceil(n / 8);
 * within a byte the first element is the most significant bit (numpy's
 * packbits order).  Padding bits are zero.
 */
static void pack_bytes(const int32_t *restrict codes, int64_t n, int bits,
                       uint8_t *restrict out, int64_t jb, int64_t je)
{
    const int32_t half = (int32_t)1 << (bits - 1);
    const int64_t nbytes = (n + 7) / 8;
    int64_t j = jb;
#ifdef __AVX2__
    /* 8 codes per byte: reverse the lanes (first element = most significant
     * bit), shift the wanted bit into each lane's sign bit, movemask. */
    const __m256i reverse = _mm256_setr_epi32(7, 6, 5, 4, 3, 2, 1, 0);
    const __m256i offset = _mm256_set1_epi32(half);
    for (; j < je && 8 * j + 8 <= n; ++j) {
        __m256i u = _mm256_loadu_si256((const __m256i *)(codes + 8 * j));
        u = _mm256_permutevar8x32_epi32(_mm256_add_epi32(u, offset), reverse);
        for (int b = 0; b < bits; ++b) {
            __m256i top = _mm256_slli_epi32(u, 31 - (bits - 1 - b));
            out[(int64_t)b * nbytes + j] = (uint8_t)_mm256_movemask_ps(_mm256_castsi256_ps(top));
        }
    }
#endif
    for (; j < je; ++j) {
        uint32_t u[8];
        if (8 * j + 8 <= n) {
            for (int t = 0; t < 8; ++t)
                u[t] = (uint32_t)(codes[8 * j + t] + half);
        } else {
            for (int t = 0; t < 8; ++t)
                u[t] = 8 * j + t < n ? (uint32_t)(codes[8 * j + t] + half) : 0u;
        }
        for (int b = 0; b < bits; ++b) {
            int shift = bits - 1 - b;
            uint32_t byte = 0;
            for (int t = 0; t < 8; ++t)
                byte |= ((u[t] >> shift) & 1u) << (7 - t);
            out[(int64_t)b * nbytes + j] = (uint8_t)byte;
        }
    }
}

void bitcl_pack(const int32_t *codes, int64_t n, int bits, uint8_t *out,
                int nthreads)
{
    const int64_t nbytes = (n + 7) / 8;
#define PACK_BODY(b_, e_) pack_bytes(codes, n, bits, out, b_, e_)
    PARALLEL_RANGES(nbytes, nthreads, PACK_BODY);
#undef PACK_BODY
}

/* Inverse of bitcl_pack. */
static void unpack_bytes(const uint8_t *restrict packed, int64_t n, int bits,
                         int32_t *restrict codes, int64_t jb, int64_t je)
{
    const int32_t half = (int32_t)1 << (bits - 1);
    const int64_t nbytes = (n + 7) / 8;
    int64_t j = jb;
#ifdef __AVX2__
    /* Spread each plane byte over 8 lanes (lane t tests bit 7 - t), then
     * OR the plane's weight into the lanes whose bit is set. */
    const __m256i lane_bit = _mm256_setr_epi32(128, 64, 32, 16, 8, 4, 2, 1);
    const __m256i offset = _mm256_set1_epi32(half);
    for (; j < je && 8 * j + 8 <= n; ++j) {
        __m256i u = _mm256_setzero_si256();
        for (int b = 0; b < bits; ++b) {
            __m256i byte = _mm256_set1_epi32(packed[(int64_t)b * nbytes + j]);
            __m256i set = _mm256_cmpeq_epi32(_mm256_and_si256(byte, lane_bit), lane_bit);
            u = _mm256_or_si256(u, _mm256_and_si256(set, _mm256_set1_epi32(1 << (bits - 1 - b))));
        }
        _mm256_storeu_si256((__m256i *)(codes + 8 * j), _mm256_sub_epi32(u, offset));
    }
#endif
    for (; j < je; ++j) {
        uint32_t u[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int b = 0; b < bits; ++b) {
            uint32_t byte = packed[(int64_t)b * nbytes + j];
            int shift = bits - 1 - b;
            for (int t = 0; t < 8; ++t)
                u[t] |= ((byte >> (7 - t)) & 1u) << shift;
        }
        for (int t = 0; t < 8; ++t)
            if (8 * j + t < n)
                codes[8 * j + t] = (int32_t)u[t] - half;
    }
}

void bitcl_unpack(const uint8_t *packed, int64_t n, int bits, int32_t *codes,
                  int nthreads)
{
    const int64_t nbytes = (n + 7) / 8;
#define UNPACK_BODY(b_, e_) unpack_bytes(packed, n, bits, codes, b_, e_)
    PARALLEL_RANGES(nbytes, nthreads, UNPACK_BODY);
#undef UNPACK_BODY
}
