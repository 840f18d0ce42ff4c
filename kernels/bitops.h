/*
 * bitcl fast path: the per-step bit operations of BLIP-style bit freezing.
 * Every function validates its arguments and the values it reads before it
 * writes anything, and returns a status (BITCL_OK or one of the codes below);
 * *bad_index receives the flat index of the first offending element when the
 * status names one.
 */
#ifndef BITCL_BITOPS_H
#define BITCL_BITOPS_H

#include <stdint.h>

enum bitcl_status {
    BITCL_OK = 0,
    BITCL_ERR_NULL = -1,       /* a null pointer with n > 0 */
    BITCL_ERR_COUNT = -2,      /* n < 0, or an output buffer of the wrong length */
    BITCL_ERR_BITS = -3,       /* bits outside the allowed range */
    BITCL_ERR_SCALE = -4,      /* scale not finite or <= 0 */
    BITCL_ERR_INV_SCALE = -5,  /* inv_scale not finite or <= 0 */
    BITCL_ERR_OVERLAP = -6,    /* the buffers overlap */
    BITCL_ERR_NONFINITE = 1,   /* a NaN or infinite latent at *bad_index */
    BITCL_ERR_CODE = 2,        /* a code outside the N-bit range at *bad_index */
    BITCL_ERR_FROZEN = 3       /* a frozen count above N at *bad_index */
};

/* Index of the first NaN/inf in *bad_index (-1 if none); read-only. */
int bitcl_first_nonfinite(const float *x, int64_t n, int64_t *bad_index);

/* Clamp latents into the windows their frozen bits allow and refresh the
 * codes; bits in 2..24; codes in [-(2^(N-1) - 1), 2^(N-1) - 1]; frozen <= bits. */
int bitcl_project(float *latent, int32_t *codes, const uint8_t *frozen, int64_t n,
                  int bits, float scale, float inv_scale, int nthreads,
                  int64_t *bad_index);

/* The latent half of bitcl_project: clamp latents into their windows, codes
 * left unchanged (read only); check_codes = 0 skips validating codes and
 * frozen counts (the caller validated them since they last changed). */
int bitcl_project_latent(float *latent, const int32_t *codes, const uint8_t *frozen, int64_t n,
                         int bits, float scale, int check_codes, int nthreads, int64_t *bad_index);

/* One window word per weight, w = (1 << k) | ((c + 2^(N-1)) >> (N - k)), of width 2 bytes (every
 * k <= 15) or 4; codes and frozen counts checked as bitcl_project checks them, nothing written
 * unless all are valid (a count above 15 with width 2: BITCL_ERR_COUNT). */
int bitcl_build_windows(const int32_t *codes, const uint8_t *frozen, int64_t n, int bits, void *windows,
                        int width, int64_t *bad_index);

/* bitcl_project_latent from window words: latents clamped into their windows, value for value. */
int bitcl_project_windows(float *latent, const void *windows, int width, int64_t n, int bits, float scale,
                          int nthreads, int64_t *bad_index);

/* codes in [-2^(N-1), 2^(N-1) - 1], bits (planes) in 1..24, out_len = bits * ceil(n / 8). */
int bitcl_pack(const int32_t *codes, int64_t n, int bits, uint8_t *out, int64_t out_len,
               int nthreads, int64_t *bad_index);

/* Inverse of bitcl_pack; packed_len = bits * ceil(n / 8). */
int bitcl_unpack(const uint8_t *packed, int64_t packed_len, int64_t n, int bits,
                 int32_t *codes, int nthreads);

/* 1 when built with OpenMP, else 0. */
int bitcl_openmp(void);

/* Instruction set used by the dispatching kernels: "avx2" or "baseline". */
const char *bitcl_isa(void);

/* Force "baseline" (0) or, when the CPU has it, "avx2" (1); returns 1 if honoured. */
int bitcl_set_isa(int avx2);

#endif
