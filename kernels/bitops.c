/*
 * bitcl fast path: the per-step bit operations of BLIP-style bit freezing
 * (Shi et al., "Continual Learning via Bit-Level Information Preserving",
 * CVPR 2021, arXiv 2105.04444, Sec. 3.3).
 *
 * Plain C11 with no torch headers; setup.py builds it into the extension
 * bitcl.kernels._bitops (with OpenMP when the compiler supports it), and
 * bitcl/kernels/__init__.py calls it on the tensors' data pointers after
 * checking dtypes, shapes and devices.  Every function here also defends
 * itself (null pointers, negative counts, bits or scales out of range, codes
 * outside the N-bit range, frozen counts above N) and reports a status
 * before it writes anything.  Each has a reference twin in
 * kernels/reference.py; the tests check they agree bit for bit.
 *
 * Code convention (docs/methods.md): signed narrow-range codes
 * c in [-(2^(N-1) - 1), 2^(N-1) - 1], offset-binary u = c + 2^(N-1), bit planes
 * most significant first; k = number of frozen most significant bits of u.
 *
 * Instruction sets: the wheel is built for the baseline of the target
 * architecture (no -march=native, so it runs on any machine of that
 * architecture); on x86-64 with GCC or clang the hot loops are also compiled
 * for AVX2 and chosen at run time (one CPUID test, cached).
 */
#include "bitops.h"

#include <math.h>
#include <stddef.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(BITCL_NO_DISPATCH)
#define BITCL_DISPATCH 1
#include <immintrin.h>
#define AVX2_FN __attribute__((target("avx2")))
#else
#define BITCL_DISPATCH 0
#endif

#if defined(__GNUC__) || defined(__clang__)
#define INLINE static inline __attribute__((always_inline))
#else
#define INLINE static inline
#endif

/* Below this many elements, threading costs more than it saves. */
#define PARALLEL_MIN 65536
#define MIN_PROJECT_BITS 2
#define MAX_BITS 24

/* -- instruction set selection ------------------------------------------------ */
static int use_avx2 = -1; /* -1: not decided yet */

static int cpu_has_avx2(void)
{
#if BITCL_DISPATCH
    return __builtin_cpu_supports("avx2") ? 1 : 0;
#else
    return 0;
#endif
}

static int avx2_enabled(void)
{
    if (use_avx2 < 0)
        use_avx2 = cpu_has_avx2();
    return use_avx2;
}

const char *bitcl_isa(void) { return avx2_enabled() ? "avx2" : "baseline"; }

int bitcl_set_isa(int avx2)
{
    if (avx2 && !cpu_has_avx2())
        return 0;
    use_avx2 = avx2 ? 1 : 0;
    return 1;
}

int bitcl_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* Split [0, n) over at most nthreads OpenMP threads, calling body(begin, end). */
#ifdef _OPENMP
#define PARALLEL_RANGES(n, nthreads, min_n, body)                               \
    do {                                                                        \
        int threads_ = (n) >= (min_n) && (nthreads) > 1 ? (nthreads) : 1;       \
        if (threads_ == 1) {                                                    \
            body(0, (n));                                                       \
        } else {                                                                \
            _Pragma("omp parallel num_threads(threads_)")                       \
            {                                                                   \
                int t_ = omp_get_thread_num(), nt_ = omp_get_num_threads();     \
                int64_t chunk_ = ((n) + nt_ - 1) / nt_;                         \
                int64_t b_ = (int64_t)t_ * chunk_;                              \
                int64_t e_ = b_ + chunk_ < (n) ? b_ + chunk_ : (n);             \
                if (b_ < e_)                                                    \
                    body(b_, e_);                                               \
            }                                                                   \
        }                                                                       \
    } while (0)
#else
#define PARALLEL_RANGES(n, nthreads, min_n, body) body(0, (n))
#endif

/* Whether byte ranges [a, a + na) and [b, b + nb) intersect. */
static int overlap(const void *a, int64_t na, const void *b, int64_t nb)
{
    uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b;
    return pa < pb + (uintptr_t)nb && pb < pa + (uintptr_t)na;
}

/* -- finiteness ---------------------------------------------------------------- */
INLINE int nonfinite_bits(uint32_t b) { return (b & 0x7f800000u) == 0x7f800000u; }

int bitcl_first_nonfinite(const float *x, int64_t n, int64_t *bad_index)
{
    if (!bad_index)
        return BITCL_ERR_NULL;
    *bad_index = -1;
    if (n < 0)
        return BITCL_ERR_COUNT;
    if (n > 0 && !x)
        return BITCL_ERR_NULL;
    const uint32_t *bits = (const uint32_t *)x;
    const int64_t block = 4096;
    for (int64_t start = 0; start < n; start += block) {
        int64_t end = start + block < n ? start + block : n;
        uint32_t bad = 0;
        for (int64_t i = start; i < end; ++i)
            bad |= nonfinite_bits(bits[i]);
        if (bad)
            for (int64_t i = start; i < end; ++i)
                if (nonfinite_bits(bits[i])) {
                    *bad_index = i;
                    return BITCL_OK;
                }
    }
    return BITCL_OK;
}

/* -- projection ------------------------------------------------------------------ */
/*
 * Read-only validation of (latent, codes, frozen) over [begin, end): bit 0 of
 * the result flags a non-finite latent, bit 1 a code outside [-m, m], bit 2 a
 * frozen count above N.  (uint32)c + m > 2m tests both ends of the code range
 * in one unsigned comparison, without signed overflow.
 */
INLINE uint32_t check_body(const float *restrict latent, const int32_t *restrict codes,
                           const uint8_t *restrict frozen, int64_t begin, int64_t end,
                           int32_t bits)
{
    const uint32_t *lb = (const uint32_t *)latent;
    const uint32_t m = ((uint32_t)1 << (bits - 1)) - 1;
    const uint8_t nbits = (uint8_t)bits;
    uint32_t nonfinite = 0, code = 0;
    uint8_t froz = 0;
    /* two loops: bytes compared 32 to a vector, words 8 to a vector */
    for (int64_t i = begin; i < end; ++i)
        froz |= frozen[i] > nbits;
    for (int64_t i = begin; i < end; ++i) {
        nonfinite |= nonfinite_bits(lb[i]);
        code |= (uint32_t)codes[i] + m > 2 * m;
    }
    return (nonfinite ? 1u : 0u) | (code ? 2u : 0u) | (froz ? 4u : 0u);
}

/*
 * Round half to even without libm: for |y| < 2^23, adding then subtracting
 * 2^23 rounds to an integer in the default rounding mode (ulp 1 there); larger
 * floats are integers already.  Unlike rintf, this vectorises on every
 * instruction set (the baseline x86-64 has no vector rounding instruction).
 * The build disables FP contraction and fast-math, so the compiler keeps both
 * additions.
 */
INLINE float round_half_even(float y)
{
    const float big = 8388608.0f; /* 2^23 */
    float a = __builtin_fabsf(y);
    float t = (a + big) - big; /* computed unconditionally: a select, not a branch, so it vectorises */
    return __builtin_copysignf(a < big ? t : a, y);
}

/*
 * Project latent weights onto the intervals their frozen bits allow, and
 * refresh the codes, in one pass over (latent, codes, frozen).
 *
 * With k frozen bits and window w = 2^(N-k), the allowed offset codes are
 * u in [floor(u/w) w, floor(u/w) w + w - 1], intersected with u >= 1 (narrow
 * range).  The latent is clamped to scale * [c_lo, c_hi]; the new code is the
 * clamped latent times inv_scale rounded half to even, clamped again (as a
 * float, so the conversion to int is always defined) so that float rounding
 * can never move a code outside its window: no frozen bit can change.
 */
INLINE void project_body(float *restrict latent, int32_t *restrict codes,
                         const uint8_t *restrict frozen, int64_t begin, int64_t end,
                         int32_t bits, float scale, float inv_scale, int use_rint)
{
    const int32_t half = (int32_t)1 << (bits - 1);
    const int32_t full = ((int32_t)1 << bits) - 1;
    for (int64_t i = begin; i < end; ++i) {
        int32_t low = full >> frozen[i];          /* w - 1 */
        int32_t u_hi = (codes[i] + half) | low;
        int32_t u_lo = u_hi - low;
        u_lo = u_lo > 1 ? u_lo : 1;
        float c_lo = (float)(u_lo - half), c_hi = (float)(u_hi - half);
        float lo = c_lo * scale, hi = c_hi * scale;
        float x = latent[i];
        x = x < lo ? lo : x;
        x = x > hi ? hi : x;
        /* both round half to even: rintf is one instruction where the ISA has a
         * vector rounding instruction (AVX2 here), the add trick elsewhere */
        float r = use_rint ? __builtin_rintf(x * inv_scale) : round_half_even(x * inv_scale);
        r = r < c_lo ? c_lo : r;
        r = r > c_hi ? c_hi : r;
        latent[i] = x;
        codes[i] = (int32_t)r;
    }
}

static uint32_t check_base(const float *l, const int32_t *c, const uint8_t *f, int64_t b, int64_t e, int32_t bits)
{
    return check_body(l, c, f, b, e, bits);
}

static void project_base(float *l, int32_t *c, const uint8_t *f, int64_t b, int64_t e, int32_t bits, float s,
                         float inv)
{
    project_body(l, c, f, b, e, bits, s, inv, 0);
}

#if BITCL_DISPATCH
AVX2_FN static uint32_t check_avx2(const float *l, const int32_t *c, const uint8_t *f, int64_t b, int64_t e,
                                   int32_t bits)
{
    return check_body(l, c, f, b, e, bits);
}

AVX2_FN static void project_avx2(float *l, int32_t *c, const uint8_t *f, int64_t b, int64_t e, int32_t bits,
                                 float s, float inv)
{
    project_body(l, c, f, b, e, bits, s, inv, 1);
}
#endif

static uint32_t check_range(const float *l, const int32_t *c, const uint8_t *f, int64_t b, int64_t e,
                            int32_t bits)
{
#if BITCL_DISPATCH
    if (avx2_enabled())
        return check_avx2(l, c, f, b, e, bits);
#endif
    return check_base(l, c, f, b, e, bits);
}

static void project_range(float *l, int32_t *c, const uint8_t *f, int64_t b, int64_t e, int32_t bits, float s,
                          float inv)
{
#if BITCL_DISPATCH
    if (avx2_enabled()) {
        project_avx2(l, c, f, b, e, bits, s, inv);
        return;
    }
#endif
    project_base(l, c, f, b, e, bits, s, inv);
}

/* First index whose problem is `flag` (1 non-finite, 2 code, 4 frozen). */
/* The read-only pass 1 over [0, n), split over at most nthreads OpenMP threads: the OR of
 * pass(l, c, f, begin, end, bits, check_codes) over the ranges (1: a non-finite latent, 2: a code
 * out of range, 4: a frozen count above N). */
typedef uint32_t (*pass_fn)(const float *, const int32_t *, const uint8_t *, int64_t, int64_t, int32_t, int);

static uint32_t parallel_flags(pass_fn pass, const float *l, const int32_t *c, const uint8_t *f, int64_t n,
                               int32_t bits, int check_codes, int nthreads)
{
    uint32_t flags = 0;
#ifdef _OPENMP
    int threads = n >= PARALLEL_MIN && nthreads > 1 ? nthreads : 1;
    if (threads > 1) {
#pragma omp parallel num_threads(threads) reduction(| : flags)
        {
            int t = omp_get_thread_num(), nt = omp_get_num_threads();
            int64_t chunk = (n + nt - 1) / nt;
            int64_t b = (int64_t)t * chunk, e = b + chunk < n ? b + chunk : n;
            if (b < e)
                flags |= pass(l, c, f, b, e, bits, check_codes);
        }
        return flags;
    }
#else
    (void)nthreads;
#endif
    return pass(l, c, f, 0, n, bits, check_codes);
}

static uint32_t full_check_range(const float *l, const int32_t *c, const uint8_t *f, int64_t b, int64_t e,
                                 int32_t bits, int check_codes)
{
    (void)check_codes;
    return check_range(l, c, f, b, e, bits);
}

static int64_t first_flagged(const float *l, const int32_t *c, const uint8_t *f, int64_t n, int32_t bits,
                             uint32_t flag)
{
    for (int64_t i = 0; i < n; ++i)
        if (check_base(l, c, f, i, i + 1, bits) & flag)
            return i;
    return -1;
}

int bitcl_project(float *latent, int32_t *codes, const uint8_t *frozen, int64_t n,
                  int bits, float scale, float inv_scale, int nthreads,
                  int64_t *bad_index)
{
    if (!bad_index)
        return BITCL_ERR_NULL;
    *bad_index = -1;
    if (n < 0)
        return BITCL_ERR_COUNT;
    if (n > 0 && (!latent || !codes || !frozen))
        return BITCL_ERR_NULL;
    if (bits < MIN_PROJECT_BITS || bits > MAX_BITS)
        return BITCL_ERR_BITS;
    if (!(isfinite(scale) && scale > 0.0f))
        return BITCL_ERR_SCALE;
    if (!(isfinite(inv_scale) && inv_scale > 0.0f))
        return BITCL_ERR_INV_SCALE;
    if (n > 0 && (overlap(latent, 4 * n, codes, 4 * n) || overlap(latent, 4 * n, frozen, n) ||
                  overlap(codes, 4 * n, frozen, n)))
        return BITCL_ERR_OVERLAP;

    /* Pass 1, read-only: nothing is written unless every element is valid. */
    uint32_t flags = parallel_flags(full_check_range, latent, codes, frozen, n, bits, 1, nthreads);
    if (flags) {
        /* Same priority as the reference: non-finite, then codes, then frozen. */
        uint32_t flag = flags & 1u ? 1u : flags & 2u ? 2u : 4u;
        *bad_index = first_flagged(latent, codes, frozen, n, bits, flag);
        return flag == 1u ? BITCL_ERR_NONFINITE : flag == 2u ? BITCL_ERR_CODE : BITCL_ERR_FROZEN;
    }

    /* Pass 2: project. */
#define PROJECT_BODY(b_, e_) project_range(latent, codes, frozen, b_, e_, bits, scale, inv_scale)
    PARALLEL_RANGES(n, nthreads, PARALLEL_MIN, PROJECT_BODY);
#undef PROJECT_BODY
    return BITCL_OK;
}

/* -- latent-only projection -------------------------------------------------- */
/*
 * The per-step half of the projection: clamp each latent into the window its
 * frozen bits allow, exactly as project_body does, and leave the codes alone.
 * The window comes from the top k bits of the stored code, which no
 * projection changes, so codes refreshed only when something reads them (the
 * lazy codes of bitcl/quant/state.py) give the same windows, latents and,
 * once refreshed, codes as codes refreshed after every step.
 *
 * Bytes per weight and step: the latent read twice (finiteness check, then
 * clamp) and written once, the code and frozen count read once: 5 bytes
 * besides the latent the optimiser has just written, against 9 + 9 + 4 + 4
 * for the check and project passes of bitcl_project (which also write every
 * code).
 *
 * The shift count is masked and the wrapping arithmetic unsigned, so codes or
 * frozen counts that were not validated (the caller's choice when they are
 * unchanged since the last validation) cannot cause undefined behaviour: a
 * bad value gives a bad window, never a bad memory access.  For valid codes
 * (c + 2^(N-1) in [1, 2^N - 1]) and counts (<= N) neither changes a value.
 */
INLINE void clamp_body(float *restrict latent, const int32_t *restrict codes,
                       const uint8_t *restrict frozen, int64_t begin, int64_t end,
                       int32_t bits, float scale)
{
    /* project_body's window in signed codes, in fewer operations:
     * c_hi = ((c + 2^(N-1)) | (w - 1)) - 2^(N-1) and c_lo = max(c_hi - (w - 1), -m) */
    const uint32_t half = (uint32_t)1 << (bits - 1);
    const int32_t full = (int32_t)(((uint32_t)1 << bits) - 1);
    const int32_t neg_m = -(int32_t)(half - 1);
    for (int64_t i = begin; i < end; ++i) {
        int32_t low = full >> (frozen[i] & 31u);                 /* w - 1 */
        int32_t c_hi = (int32_t)((((uint32_t)codes[i] + half) | (uint32_t)low) - half);
        int32_t c_lo = (int32_t)((uint32_t)c_hi - (uint32_t)low);
        c_lo = c_lo > neg_m ? c_lo : neg_m;                      /* narrow range: u >= 1 */
        float lo = (float)c_lo * scale, hi = (float)c_hi * scale;
        float x = latent[i];
        x = x < lo ? lo : x;
        x = x > hi ? hi : x;
        latent[i] = x;
    }
}

/* Read-only: 1 when [begin, end) holds a NaN or infinite latent. */
INLINE uint32_t finite_body(const float *restrict latent, int64_t begin, int64_t end)
{
    const uint32_t *lb = (const uint32_t *)latent;
    uint32_t nonfinite = 0;
    for (int64_t i = begin; i < end; ++i)
        nonfinite |= nonfinite_bits(lb[i]);
    return nonfinite ? 1u : 0u;
}

static void clamp_base(float *l, const int32_t *c, const uint8_t *f, int64_t b, int64_t e, int32_t bits, float s)
{
    clamp_body(l, c, f, b, e, bits, s);
}

static uint32_t finite_base(const float *l, int64_t b, int64_t e) { return finite_body(l, b, e); }

#if BITCL_DISPATCH
AVX2_FN static void clamp_avx2(float *l, const int32_t *c, const uint8_t *f, int64_t b, int64_t e, int32_t bits,
                               float s)
{
    clamp_body(l, c, f, b, e, bits, s);
}

AVX2_FN static uint32_t finite_avx2(const float *l, int64_t b, int64_t e) { return finite_body(l, b, e); }
#endif

static void clamp_range(float *l, const int32_t *c, const uint8_t *f, int64_t b, int64_t e, int32_t bits, float s)
{
#if BITCL_DISPATCH
    if (avx2_enabled()) {
        clamp_avx2(l, c, f, b, e, bits, s);
        return;
    }
#endif
    clamp_base(l, c, f, b, e, bits, s);
}

/* Pass-1 flags over [b, e) (as check_range): the latents' finiteness, and the
 * codes and frozen counts too when check_codes is set. */
static uint32_t latent_check_range(const float *l, const int32_t *c, const uint8_t *f, int64_t b, int64_t e,
                                   int32_t bits, int check_codes)
{
    if (check_codes)
        return check_range(l, c, f, b, e, bits);
#if BITCL_DISPATCH
    if (avx2_enabled())
        return finite_avx2(l, b, e);
#endif
    return finite_base(l, b, e);
}

int bitcl_project_latent(float *latent, const int32_t *codes, const uint8_t *frozen, int64_t n,
                         int bits, float scale, int check_codes, int nthreads, int64_t *bad_index)
{
    if (!bad_index)
        return BITCL_ERR_NULL;
    *bad_index = -1;
    if (n < 0)
        return BITCL_ERR_COUNT;
    if (n > 0 && (!latent || !codes || !frozen))
        return BITCL_ERR_NULL;
    if (bits < MIN_PROJECT_BITS || bits > MAX_BITS)
        return BITCL_ERR_BITS;
    if (!(isfinite(scale) && scale > 0.0f))
        return BITCL_ERR_SCALE;
    if (n > 0 && (overlap(latent, 4 * n, codes, 4 * n) || overlap(latent, 4 * n, frozen, n)))
        return BITCL_ERR_OVERLAP;

    /* Pass 1, read-only: nothing is written unless every element is valid. */
    uint32_t flags = parallel_flags(latent_check_range, latent, codes, frozen, n, bits, check_codes, nthreads);
    if (flags) {
        uint32_t flag = flags & 1u ? 1u : flags & 2u ? 2u : 4u;
        *bad_index = first_flagged(latent, codes, frozen, n, bits, flag);
        return flag == 1u ? BITCL_ERR_NONFINITE : flag == 2u ? BITCL_ERR_CODE : BITCL_ERR_FROZEN;
    }

    /* Pass 2: clamp the latents. */
#define CLAMP_BODY(b_, e_) clamp_range(latent, codes, frozen, b_, e_, bits, scale)
    PARALLEL_RANGES(n, nthreads, PARALLEL_MIN, CLAMP_BODY);
#undef CLAMP_BODY
    return BITCL_OK;
}

/* -- the per-step projection from window words ------------------------------- */
/*
 * What the per-step projection needs of a weight's code and frozen count is its window: the
 * frozen prefix p = u >> (N - k) of the offset code u = c + 2^(N-1), and k.  One window word
 * w = (2p + 1) << (N - k) holds both (its lowest set bit marks k), so the window's top offset
 * code is (w >> 1) | (lowbit(w) - 1): a few integer operations, no variable shift.  Every
 * k <= 15 leaves the low N - 15 bits of w zero, so w >> (N - 15) fits in 2 bytes; else 4.
 * bitcl_build_windows derives the words once (after a freeze, or whenever the codes or counts
 * change); bitcl_project_windows then reads them instead of the code and the count: 2 or 4 bytes
 * a weight instead of 5.  Right after a training step, where the per-step projection runs, those
 * bytes have left the cache and are most of its cost.  The clamp is clamp_body's, value for value:
 * (w >> 1) | (lowbit(w) - 1) is (c + 2^(N-1)) | (2^(N-k) - 1).
 */
INLINE uint32_t window_word(int32_t code, uint32_t k, int32_t bits)
{
    uint32_t u = (uint32_t)code + ((uint32_t)1 << (bits - 1));
    uint32_t free_bits = (uint32_t)(bits - (int32_t)k) & 31u;
    return ((u >> free_bits) << (free_bits + 1)) | ((uint32_t)1 << free_bits);
}

/* the 2-byte words keep w >> narrow_shift(bits) */
static int narrow_shift(int bits) { return bits > 15 ? bits - 15 : 0; }

#define WINDOW_CLAMP_BODY                                                                   \
    const uint32_t half = (uint32_t)1 << (bits - 1);                                        \
    const int32_t neg_m = -(int32_t)(half - 1);                                             \
    for (int64_t i = begin; i < end; ++i) {                                                 \
        uint32_t w = (uint32_t)windows[i] << shift;                                         \
        uint32_t low = (w & (0u - w)) - 1u;                       /* 2^(N-k) - 1 */         \
        int32_t c_hi = (int32_t)(((w >> 1) | low) - half);                                  \
        int32_t c_lo = (int32_t)((uint32_t)c_hi - low);                                     \
        c_lo = c_lo > neg_m ? c_lo : neg_m;                       /* narrow range: u >= 1 */ \
        float lo = (float)c_lo * scale, hi = (float)c_hi * scale;                           \
        float x = latent[i];                                                                \
        x = x < lo ? lo : x;                                                                \
        x = x > hi ? hi : x;                                                                \
        latent[i] = x;                                                                      \
    }

INLINE void window_clamp16(float *restrict latent, const uint16_t *restrict windows, int64_t begin, int64_t end,
                           int32_t bits, int shift, float scale)
{
    WINDOW_CLAMP_BODY
}

INLINE void window_clamp32(float *restrict latent, const uint32_t *restrict windows, int64_t begin, int64_t end,
                           int32_t bits, float scale)
{
    const int shift = 0;
    WINDOW_CLAMP_BODY
}

static void window_clamp_base(float *l, const void *w, int width, int64_t b, int64_t e, int32_t bits, float s)
{
    if (width == 2)
        window_clamp16(l, (const uint16_t *)w, b, e, bits, narrow_shift(bits), s);
    else
        window_clamp32(l, (const uint32_t *)w, b, e, bits, s);
}

#if BITCL_DISPATCH
AVX2_FN static void window_clamp_avx2(float *l, const void *w, int width, int64_t b, int64_t e, int32_t bits,
                                      float s)
{
    if (width == 2)
        window_clamp16(l, (const uint16_t *)w, b, e, bits, narrow_shift(bits), s);
    else
        window_clamp32(l, (const uint32_t *)w, b, e, bits, s);
}
#endif

static void window_clamp_range(float *l, const void *w, int width, int64_t b, int64_t e, int32_t bits, float s)
{
#if BITCL_DISPATCH
    if (avx2_enabled()) {
        window_clamp_avx2(l, w, width, b, e, bits, s);
        return;
    }
#endif
    window_clamp_base(l, w, width, b, e, bits, s);
}

int bitcl_build_windows(const int32_t *codes, const uint8_t *frozen, int64_t n, int bits, void *windows,
                        int width, int64_t *bad_index)
{
    if (!bad_index)
        return BITCL_ERR_NULL;
    *bad_index = -1;
    if (n < 0 || (width != 2 && width != 4))
        return BITCL_ERR_COUNT;
    if (n > 0 && (!codes || !frozen || !windows))
        return BITCL_ERR_NULL;
    if (bits < MIN_PROJECT_BITS || bits > MAX_BITS)
        return BITCL_ERR_BITS;
    if (n > 0 && (overlap(windows, width * n, codes, 4 * n) || overlap(windows, width * n, frozen, n)))
        return BITCL_ERR_OVERLAP;
    const int32_t m = ((int32_t)1 << (bits - 1)) - 1;
    const uint32_t widest = width == 2 ? 15u : (uint32_t)bits;
    for (int64_t i = 0; i < n; ++i) { /* read-only: nothing is written unless every element is valid */
        if (codes[i] < -m || codes[i] > m) {
            *bad_index = i;
            return BITCL_ERR_CODE;
        }
        if (frozen[i] > bits) {
            *bad_index = i;
            return BITCL_ERR_FROZEN;
        }
        if (frozen[i] > widest) /* a 2-byte word holds k <= 15: the caller chose the width wrongly */
            return BITCL_ERR_COUNT;
    }
    for (int64_t i = 0; i < n; ++i) {
        uint32_t w = window_word(codes[i], frozen[i], bits);
        if (width == 2)
            ((uint16_t *)windows)[i] = (uint16_t)(w >> narrow_shift(bits));
        else
            ((uint32_t *)windows)[i] = w;
    }
    return BITCL_OK;
}

int bitcl_project_windows(float *latent, const void *windows, int width, int64_t n, int bits, float scale,
                          int nthreads, int64_t *bad_index)
{
    if (!bad_index)
        return BITCL_ERR_NULL;
    *bad_index = -1;
    if (n < 0 || (width != 2 && width != 4))
        return BITCL_ERR_COUNT;
    if (n > 0 && (!latent || !windows))
        return BITCL_ERR_NULL;
    if (bits < MIN_PROJECT_BITS || bits > MAX_BITS)
        return BITCL_ERR_BITS;
    if (!(isfinite(scale) && scale > 0.0f))
        return BITCL_ERR_SCALE;
    if (n > 0 && overlap(latent, 4 * n, windows, width * n))
        return BITCL_ERR_OVERLAP;

    /* Pass 1, read-only: nothing is written unless every latent is finite. */
    uint32_t flags = parallel_flags(latent_check_range, latent, NULL, NULL, n, bits, 0, nthreads);
    if (flags) {
        for (int64_t i = 0; i < n && *bad_index < 0; ++i)
            if (finite_base(latent, i, i + 1))
                *bad_index = i;
        return BITCL_ERR_NONFINITE;
    }

    /* Pass 2: clamp the latents into their windows. */
#define WINDOW_BODY(b_, e_) window_clamp_range(latent, windows, width, b_, e_, bits, scale)
    PARALLEL_RANGES(n, nthreads, PARALLEL_MIN, WINDOW_BODY);
#undef WINDOW_BODY
    return BITCL_OK;
}

/* -- bit planes ---------------------------------------------------------------------- */
/*
 * Pack N-bit codes into N bit planes, most significant plane first.  Plane b
 * occupies bytes [b * nbytes, (b + 1) * nbytes) with nbytes = ceil(n / 8);
 * within a byte the first element is the most significant bit (numpy's
 * packbits order).  Padding bits are zero.
 */
INLINE void pack_tail(const int32_t *restrict codes, int64_t n, int bits, uint8_t *restrict out,
                      int64_t j, int64_t je)
{
    const int32_t half = (int32_t)1 << (bits - 1);
    const int64_t nbytes = (n + 7) / 8;
    for (; j < je; ++j) {
        uint32_t u[8];
        for (int t = 0; t < 8; ++t)
            u[t] = 8 * j + t < n ? (uint32_t)(codes[8 * j + t] + half) : 0u;
        for (int b = 0; b < bits; ++b) {
            int shift = bits - 1 - b;
            uint32_t byte = 0;
            for (int t = 0; t < 8; ++t)
                byte |= ((u[t] >> shift) & 1u) << (7 - t);
            out[(int64_t)b * nbytes + j] = (uint8_t)byte;
        }
    }
}

#if BITCL_DISPATCH
/* 8 codes per byte: reverse the lanes (first element = most significant bit),
 * shift the wanted bit into each lane's sign bit, movemask. */
AVX2_FN static int64_t pack_avx2(const int32_t *restrict codes, int64_t n, int bits, uint8_t *restrict out,
                                 int64_t j, int64_t je)
{
    const int64_t nbytes = (n + 7) / 8;
    const __m256i reverse = _mm256_setr_epi32(7, 6, 5, 4, 3, 2, 1, 0);
    const __m256i offset = _mm256_set1_epi32((int32_t)1 << (bits - 1));
    for (; j < je && 8 * j + 8 <= n; ++j) {
        __m256i u = _mm256_loadu_si256((const __m256i *)(codes + 8 * j));
        u = _mm256_permutevar8x32_epi32(_mm256_add_epi32(u, offset), reverse);
        for (int b = 0; b < bits; ++b) {
            __m256i top = _mm256_sll_epi32(u, _mm_cvtsi32_si128(31 - (bits - 1 - b)));
            out[(int64_t)b * nbytes + j] = (uint8_t)_mm256_movemask_ps(_mm256_castsi256_ps(top));
        }
    }
    return j;
}
#endif

static void pack_bytes(const int32_t *codes, int64_t n, int bits, uint8_t *out, int64_t jb, int64_t je)
{
    int64_t j = jb;
#if BITCL_DISPATCH
    if (avx2_enabled())
        j = pack_avx2(codes, n, bits, out, j, je);
#endif
    pack_tail(codes, n, bits, out, j, je);
}

int bitcl_pack(const int32_t *codes, int64_t n, int bits, uint8_t *out, int64_t out_len,
               int nthreads, int64_t *bad_index)
{
    if (!bad_index)
        return BITCL_ERR_NULL;
    *bad_index = -1;
    if (n < 0)
        return BITCL_ERR_COUNT;
    if (bits < 1 || bits > MAX_BITS)
        return BITCL_ERR_BITS;
    const int64_t nbytes = (n + 7) / 8;
    if (out_len != (int64_t)bits * nbytes)
        return BITCL_ERR_COUNT;
    if (n > 0 && (!codes || !out))
        return BITCL_ERR_NULL;
    if (n > 0 && overlap(codes, 4 * n, out, out_len))
        return BITCL_ERR_OVERLAP;
    /* codes must fit N planes: u = c + 2^(N-1) in [0, 2^N - 1] */
    const uint32_t half = (uint32_t)1 << (bits - 1), top = ((uint32_t)1 << bits) - 1;
    uint32_t bad = 0;
    for (int64_t i = 0; i < n; ++i)
        bad |= (uint32_t)codes[i] + half > top;
    if (bad) {
        for (int64_t i = 0; i < n; ++i)
            if ((uint32_t)codes[i] + half > top) {
                *bad_index = i;
                break;
            }
        return BITCL_ERR_CODE;
    }
#define PACK_BODY(b_, e_) pack_bytes(codes, n, bits, out, b_, e_)
    PARALLEL_RANGES(nbytes, nthreads, PARALLEL_MIN / 8, PACK_BODY);
#undef PACK_BODY
    return BITCL_OK;
}

INLINE void unpack_tail(const uint8_t *restrict packed, int64_t n, int bits, int32_t *restrict codes,
                        int64_t j, int64_t je)
{
    const int32_t half = (int32_t)1 << (bits - 1);
    const int64_t nbytes = (n + 7) / 8;
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

#if BITCL_DISPATCH
/* Spread each plane byte over 8 lanes (lane t tests bit 7 - t), then OR the
 * plane's weight into the lanes whose bit is set. */
AVX2_FN static int64_t unpack_avx2(const uint8_t *restrict packed, int64_t n, int bits,
                                   int32_t *restrict codes, int64_t j, int64_t je)
{
    const int64_t nbytes = (n + 7) / 8;
    const __m256i lane_bit = _mm256_setr_epi32(128, 64, 32, 16, 8, 4, 2, 1);
    const __m256i offset = _mm256_set1_epi32((int32_t)1 << (bits - 1));
    for (; j < je && 8 * j + 8 <= n; ++j) {
        __m256i u = _mm256_setzero_si256();
        for (int b = 0; b < bits; ++b) {
            __m256i byte = _mm256_set1_epi32(packed[(int64_t)b * nbytes + j]);
            __m256i set = _mm256_cmpeq_epi32(_mm256_and_si256(byte, lane_bit), lane_bit);
            u = _mm256_or_si256(u, _mm256_and_si256(set, _mm256_set1_epi32(1 << (bits - 1 - b))));
        }
        _mm256_storeu_si256((__m256i *)(codes + 8 * j), _mm256_sub_epi32(u, offset));
    }
    return j;
}
#endif

static void unpack_bytes(const uint8_t *packed, int64_t n, int bits, int32_t *codes, int64_t jb, int64_t je)
{
    int64_t j = jb;
#if BITCL_DISPATCH
    if (avx2_enabled())
        j = unpack_avx2(packed, n, bits, codes, j, je);
#endif
    unpack_tail(packed, n, bits, codes, j, je);
}

int bitcl_unpack(const uint8_t *packed, int64_t packed_len, int64_t n, int bits,
                 int32_t *codes, int nthreads)
{
    if (n < 0)
        return BITCL_ERR_COUNT;
    if (bits < 1 || bits > MAX_BITS)
        return BITCL_ERR_BITS;
    const int64_t nbytes = (n + 7) / 8;
    if (packed_len != (int64_t)bits * nbytes)
        return BITCL_ERR_COUNT;
    if (n > 0 && (!packed || !codes))
        return BITCL_ERR_NULL;
    if (n > 0 && overlap(packed, packed_len, codes, 4 * n))
        return BITCL_ERR_OVERLAP;
#define UNPACK_BODY(b_, e_) unpack_bytes(packed, n, bits, codes, b_, e_)
    PARALLEL_RANGES(nbytes, nthreads, PARALLEL_MIN / 8, UNPACK_BODY);
#undef UNPACK_BODY
    return BITCL_OK;
}
