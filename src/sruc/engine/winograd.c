/* Compiled Winograd convolutions for sruc (src/sruc/engine/winograd.py).
 *
 * Compiled on first use by sruc.engine.native with the machine's C compiler and
 * called through ctypes; where no compiler works, winograd.py runs F(4x4, 3x3)
 * with its transforms as whole-tensor PyTorch additions and torch.bmm.
 *
 *   sruc_wino6_layer: one whole 3x3 layer by F(6x6, 3x3) in float32: per group of
 *       blocks, the input transform, the 64 matrix products (a register-tiled
 *       micro-kernel) and the output transform (+ bias, ReLU), in the core's cache
 *   sruc_wino_in / sruc_wino_out: F(4x4, 3x3)'s transforms for a strip of blocks,
 *       around a torch.bmm in bfloat16 (bf16 = 1; V rounded to nearest even) or
 *       float32: what the bf16 products run
 *   sruc_conv_head / sruc_conv_tail: the direct 3x3 convolutions before and after a
 *       stack (VDSR's first and last layers), into and out of its buffers
 *   training (sruc.engine.wino_train): sruc_wino6_backward, a middle layer's weight,
 *       bias and input gradients in one pass (the input gradient: the layer with its
 *       kernels flipped, gated by the ReLU's backward); sruc_conv_head with a gate and
 *       sruc_conv_head_wgrad / sruc_conv_tail_wgrad for the first and last layers
 *
 * B^T, G and A^T are Lavin & Gray's (CVPR 2016): points 0, +-1, +-2 for F(4x4, 3x3),
 * and +-1/2 besides for F(6x6, 3x3). Layout: activations are zero-padded NHWC
 * (n, hp, wp, C), one pixel of padding, the blocks' overhang past the image zeroed
 * after each layer; V and M are (points, T, C) with a stride between their planes.
 * C must be a multiple of 16 (the caller checks).
 */
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define BT(d0, d1, d2, d3, d4, d5, o0, o1, o2, o3, o4, o5)                      \
    {                                                                            \
        float a_ = (d4) - 4.f * (d2), b_ = (d3) - 4.f * (d1);                   \
        float e_ = (d4) - (d2), f_ = (d3) - (d1);                                \
        o0 = 4.f * (d0) - 5.f * (d2) + (d4);                                     \
        o1 = a_ + b_;                                                            \
        o2 = a_ - b_;                                                            \
        o3 = e_ + 2.f * f_;                                                      \
        o4 = e_ - 2.f * f_;                                                      \
        o5 = 4.f * (d1) - 5.f * (d3) + (d5);                                     \
    }

#define AT(m0, m1, m2, m3, m4, m5, y0, y1, y2, y3)                              \
    {                                                                            \
        float s12 = (m1) + (m2), d12 = (m1) - (m2);                              \
        float s34 = (m3) + (m4), d34 = (m3) - (m4);                              \
        y0 = (m0) + s12 + s34;                                                   \
        y1 = d12 + 2.f * d34;                                                    \
        y2 = s12 + 4.f * s34;                                                    \
        y3 = d12 + 8.f * d34 + (m5);                                             \
    }

#define LANES 16

/* float32 <-> bfloat16 (round to nearest even; the values here are finite) */
static inline uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float from_bf16(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

int sruc_wino_version(void) { return 5; }

/* This thread's number in the current parallel region (0 without OpenMP). */
static inline int thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* The pixels of a block (at y0, z0 in the padded buffer) that hang past the h x w
 * image are padding for the next layer: zero them. */
static inline void zero_overhang(float *db, int64_t y0, int64_t z0, int block, int64_t h,
                                 int64_t w, int64_t rs, int64_t K)
{
    if (y0 + block - 1 <= h && z0 + block - 1 <= w)
        return;
    for (int pp = 0; pp < block; pp++)
        for (int qq = 0; qq < block; qq++)
            if (y0 + pp > h || z0 + qq > w)
                for (int64_t k = 0; k < K; k++)
                    db[pp * rs + qq * K + k] = 0.f;
}

/* Blocks a0 .. a0+na-1 (rows) x 0 .. tw-1 (columns) of nimg images of x into v. */
void sruc_wino_in(const float *restrict x, int64_t hp, int64_t wp, int64_t C,
                  int64_t a0, int64_t na, int64_t tw, int64_t nimg,
                  void *restrict vout, int64_t vs, int bf16, int threads)
{
    const int64_t per = na * tw, T = nimg * per, rs = wp * C;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t t = 0; t < T; t++) {
        const int64_t n = t / per, r = t % per, a = a0 + r / tw, b = r % tw;
        const float *xb = x + ((n * hp + 4 * a) * wp + 4 * b) * C;
        float *vb = (float *)vout + t * C;
        uint16_t *hb = (uint16_t *)vout + t * C;
        for (int64_t c0 = 0; c0 < C; c0 += LANES) {
            float s[6][6][LANES];
            for (int j = 0; j < 6; j++) {
                const float *p = xb + j * C + c0;
#pragma omp simd
                for (int c = 0; c < LANES; c++)
                    BT(p[c], p[rs + c], p[2 * rs + c], p[3 * rs + c], p[4 * rs + c],
                       p[5 * rs + c], s[0][j][c], s[1][j][c], s[2][j][c], s[3][j][c],
                       s[4][j][c], s[5][j][c]);
            }
            for (int i = 0; i < 6; i++) {
                if (bf16) {
                    uint16_t *o = hb + (int64_t)(i * 6) * vs + c0;
#pragma omp simd
                    for (int c = 0; c < LANES; c++) {
                        float o0, o1, o2, o3, o4, o5;
                        BT(s[i][0][c], s[i][1][c], s[i][2][c], s[i][3][c], s[i][4][c],
                           s[i][5][c], o0, o1, o2, o3, o4, o5);
                        o[c] = to_bf16(o0);
                        o[vs + c] = to_bf16(o1);
                        o[2 * vs + c] = to_bf16(o2);
                        o[3 * vs + c] = to_bf16(o3);
                        o[4 * vs + c] = to_bf16(o4);
                        o[5 * vs + c] = to_bf16(o5);
                    }
                    continue;
                }
                float *o = vb + (int64_t)(i * 6) * vs + c0;
#pragma omp simd
                for (int c = 0; c < LANES; c++)
                    BT(s[i][0][c], s[i][1][c], s[i][2][c], s[i][3][c], s[i][4][c],
                       s[i][5][c], o[c], o[vs + c], o[2 * vs + c], o[3 * vs + c],
                       o[4 * vs + c], o[5 * vs + c]);
            }
        }
    }
}

/* The products m of the same blocks, transformed back (+ bias, ReLU) into dst;
 * the pixels of blocks that hang past the h x w image are written as zeros. */
void sruc_wino_out(const void *restrict min, int64_t ms, int bf16,
                   const float *restrict bias, int relu, int64_t a0, int64_t na, int64_t tw,
                   int64_t nimg, int64_t h, int64_t w, float *restrict dst, int64_t hp,
                   int64_t wp, int64_t K, int threads)
{
    const int64_t per = na * tw, T = nimg * per, rs = wp * K;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t t = 0; t < T; t++) {
        const int64_t n = t / per, r = t % per, a = a0 + r / tw, b = r % tw;
        const int64_t y = 1 + 4 * a, z = 1 + 4 * b;
        float *db = dst + ((n * hp + y) * wp + z) * K;
        const float *mb = (const float *)min + t * K;
        const uint16_t *hb = (const uint16_t *)min + t * K;
        for (int64_t k0 = 0; k0 < K; k0 += LANES) {
            float q[4][6][LANES];
            for (int j = 0; j < 6; j++) {
                if (bf16) {
                    const uint16_t *p = hb + j * ms + k0;
#pragma omp simd
                    for (int c = 0; c < LANES; c++)
                        AT(from_bf16(p[c]), from_bf16(p[6 * ms + c]), from_bf16(p[12 * ms + c]),
                           from_bf16(p[18 * ms + c]), from_bf16(p[24 * ms + c]),
                           from_bf16(p[30 * ms + c]), q[0][j][c], q[1][j][c], q[2][j][c],
                           q[3][j][c]);
                    continue;
                }
                const float *p = mb + j * ms + k0;
#pragma omp simd
                for (int c = 0; c < LANES; c++)
                    AT(p[c], p[6 * ms + c], p[12 * ms + c], p[18 * ms + c], p[24 * ms + c],
                       p[30 * ms + c], q[0][j][c], q[1][j][c], q[2][j][c], q[3][j][c]);
            }
            const float *bk = bias + k0;
            for (int pp = 0; pp < 4; pp++) {
                float *o = db + pp * rs + k0;
#pragma omp simd
                for (int c = 0; c < LANES; c++) {
                    float y0, y1, y2, y3;
                    AT(q[pp][0][c], q[pp][1][c], q[pp][2][c], q[pp][3][c], q[pp][4][c],
                       q[pp][5][c], y0, y1, y2, y3);
                    y0 += bk[c];
                    y1 += bk[c];
                    y2 += bk[c];
                    y3 += bk[c];
                    if (relu) {
                        y0 = y0 > 0.f ? y0 : 0.f;
                        y1 = y1 > 0.f ? y1 : 0.f;
                        y2 = y2 > 0.f ? y2 : 0.f;
                        y3 = y3 > 0.f ? y3 : 0.f;
                    }
                    o[c] = y0;
                    o[K + c] = y1;
                    o[2 * K + c] = y2;
                    o[3 * K + c] = y3;
                }
            }
        }
        zero_overhang(db, y, z, 4, h, w, rs, K);
    }
}

/* A 6x6 block of outputs db (rows rs floats apart, K channels), each kept where the
 * gate (laid out alike) is positive: the backward of the ReLU that made the gate, applied
 * while the block is in the core's cache. */
static inline void gate_block(float *restrict db, const float *restrict gate, int64_t rs,
                              int64_t K)
{
    for (int pp = 0; pp < 6; pp++)
        for (int64_t i = pp * rs; i < pp * rs + 6 * K; i++)
            db[i] = gate[i] > 0.f ? db[i] : 0.f;
}

/* GENERATED: F(6x6, 3x3) begin */
/* F(6x6, 3x3), float32: 8x8 windows, 6x6 output blocks, 64 planes in V and M.
 * Generated by scripts/gen_winograd6.py from the matrices there; do not edit. */

/* One block: its 8x8 window xb (rows rs floats apart, C channels) -> the 64 planes
 * of vb, vs floats apart. */
static inline void in6_block(const float *restrict xb, int64_t rs, int64_t C,
                             float *restrict vb, int64_t vs)
{
    for (int64_t c0 = 0; c0 < C; c0 += LANES) {
        float s[8][8][LANES];
        for (int j = 0; j < 8; j++) {
            const float *p = xb + j * C + c0;
#pragma omp simd
            for (int c = 0; c < LANES; c++) {
                const float d0 = p[0 * rs + c], d1 = p[1 * rs + c], d2 = p[2 * rs + c], d3 = p[3 * rs + c], d4 = p[4 * rs + c], d5 = p[5 * rs + c], d6 = p[6 * rs + c], d7 = p[7 * rs + c];
                s[0][j][c] = d0 - 5.25f * d2 + 5.25f * d4 - d6;
                s[1][j][c] = d1 + d2 - 4.25f * d3 - 4.25f * d4 + d5 + d6;
                s[2][j][c] = -d1 + d2 + 4.25f * d3 - 4.25f * d4 - d5 + d6;
                s[3][j][c] = 0.5f * d1 + 0.25f * d2 - 2.5f * d3 - 1.25f * d4 + 2.0f * d5 + d6;
                s[4][j][c] = -0.5f * d1 + 0.25f * d2 + 2.5f * d3 - 1.25f * d4 - 2.0f * d5 + d6;
                s[5][j][c] = 2.0f * d1 + 4.0f * d2 - 2.5f * d3 - 5.0f * d4 + 0.5f * d5 + d6;
                s[6][j][c] = -2.0f * d1 + 4.0f * d2 + 2.5f * d3 - 5.0f * d4 - 0.5f * d5 + d6;
                s[7][j][c] = -d1 + 5.25f * d3 - 5.25f * d5 + d7;
            }
        }
        for (int i = 0; i < 8; i++) {
            float *o = vb + (int64_t)(i * 8) * vs + c0;
#pragma omp simd
            for (int c = 0; c < LANES; c++) {
                const float d0 = s[i][0][c], d1 = s[i][1][c], d2 = s[i][2][c], d3 = s[i][3][c], d4 = s[i][4][c], d5 = s[i][5][c], d6 = s[i][6][c], d7 = s[i][7][c];
                o[c] = d0 - 5.25f * d2 + 5.25f * d4 - d6;
                o[1 * vs + c] = d1 + d2 - 4.25f * d3 - 4.25f * d4 + d5 + d6;
                o[2 * vs + c] = -d1 + d2 + 4.25f * d3 - 4.25f * d4 - d5 + d6;
                o[3 * vs + c] = 0.5f * d1 + 0.25f * d2 - 2.5f * d3 - 1.25f * d4 + 2.0f * d5 + d6;
                o[4 * vs + c] = -0.5f * d1 + 0.25f * d2 + 2.5f * d3 - 1.25f * d4 - 2.0f * d5 + d6;
                o[5 * vs + c] = 2.0f * d1 + 4.0f * d2 - 2.5f * d3 - 5.0f * d4 + 0.5f * d5 + d6;
                o[6 * vs + c] = -2.0f * d1 + 4.0f * d2 + 2.5f * d3 - 5.0f * d4 - 0.5f * d5 + d6;
                o[7 * vs + c] = -d1 + 5.25f * d3 - 5.25f * d5 + d7;
            }
        }
    }
}

/* One block's 64 product planes mb (ms floats apart, K channels) -> + bias, ReLU ->
 * its 6x6 output pixels at db (rows rs floats apart). */
static inline void out6_block(const float *restrict mb, int64_t ms,
                              const float *restrict bias, int relu, float *restrict db,
                              int64_t rs, int64_t K)
{
    for (int64_t k0 = 0; k0 < K; k0 += LANES) {
        float q[6][8][LANES];
        for (int j = 0; j < 8; j++) {
            const float *p = mb + j * ms + k0;
#pragma omp simd
            for (int c = 0; c < LANES; c++) {
                const float m0 = p[8 * 0 * ms + c], m1 = p[8 * 1 * ms + c], m2 = p[8 * 2 * ms + c], m3 = p[8 * 3 * ms + c], m4 = p[8 * 4 * ms + c], m5 = p[8 * 5 * ms + c], m6 = p[8 * 6 * ms + c], m7 = p[8 * 7 * ms + c];
                q[0][j][c] = m0 + m1 + m2 + m3 + m4 + m5 + m6;
                q[1][j][c] = m1 - m2 + 2.0f * m3 - 2.0f * m4 + 0.5f * m5 - 0.5f * m6;
                q[2][j][c] = m1 + m2 + 4.0f * m3 + 4.0f * m4 + 0.25f * m5 + 0.25f * m6;
                q[3][j][c] = m1 - m2 + 8.0f * m3 - 8.0f * m4 + 0.125f * m5 - 0.125f * m6;
                q[4][j][c] = m1 + m2 + 16.0f * m3 + 16.0f * m4 + 0.0625f * m5 + 0.0625f * m6;
                q[5][j][c] = m1 - m2 + 32.0f * m3 - 32.0f * m4 + 0.03125f * m5 - 0.03125f * m6 + m7;
            }
        }
        const float *bk = bias + k0;
        for (int pp = 0; pp < 6; pp++) {
            float *o = db + pp * rs + k0;
#pragma omp simd
            for (int c = 0; c < LANES; c++) {
                const float m0 = q[pp][0][c], m1 = q[pp][1][c], m2 = q[pp][2][c], m3 = q[pp][3][c], m4 = q[pp][4][c], m5 = q[pp][5][c], m6 = q[pp][6][c], m7 = q[pp][7][c];
                float y0 = m0 + m1 + m2 + m3 + m4 + m5 + m6 + bk[c];
                float y1 = m1 - m2 + 2.0f * m3 - 2.0f * m4 + 0.5f * m5 - 0.5f * m6 + bk[c];
                float y2 = m1 + m2 + 4.0f * m3 + 4.0f * m4 + 0.25f * m5 + 0.25f * m6 + bk[c];
                float y3 = m1 - m2 + 8.0f * m3 - 8.0f * m4 + 0.125f * m5 - 0.125f * m6 + bk[c];
                float y4 = m1 + m2 + 16.0f * m3 + 16.0f * m4 + 0.0625f * m5 + 0.0625f * m6 + bk[c];
                float y5 = m1 - m2 + 32.0f * m3 - 32.0f * m4 + 0.03125f * m5 - 0.03125f * m6 + m7 + bk[c];
                if (relu) {
                    y0 = y0 > 0.f ? y0 : 0.f;
                    y1 = y1 > 0.f ? y1 : 0.f;
                    y2 = y2 > 0.f ? y2 : 0.f;
                    y3 = y3 > 0.f ? y3 : 0.f;
                    y4 = y4 > 0.f ? y4 : 0.f;
                    y5 = y5 > 0.f ? y5 : 0.f;
                }
                o[c] = y0;
                o[1 * K + c] = y1;
                o[2 * K + c] = y2;
                o[3 * K + c] = y3;
                o[4 * K + c] = y4;
                o[5 * K + c] = y5;
            }
        }
    }
}

/* The backward of out6_block's transform: a block's 6x6 output gradients gb (rows rs
 * floats apart, K channels) -> the gradients of its 64 product planes mb (ms floats
 * apart); their sum over the block added to dbias (the bias gradient). */
static inline void grad6_block(const float *restrict gb, int64_t rs, int64_t K,
                               float *restrict mb, int64_t ms, float *restrict dbias)
{
    for (int64_t k0 = 0; k0 < K; k0 += LANES) {
        float s[8][6][LANES], sum[LANES] = {0};
        for (int j = 0; j < 6; j++) {
            const float *p = gb + j * K + k0;
#pragma omp simd
            for (int c = 0; c < LANES; c++) {
                const float g0 = p[0 * rs + c], g1 = p[1 * rs + c], g2 = p[2 * rs + c], g3 = p[3 * rs + c], g4 = p[4 * rs + c], g5 = p[5 * rs + c];
                s[0][j][c] = g0;
                s[1][j][c] = g0 + g1 + g2 + g3 + g4 + g5;
                s[2][j][c] = g0 - g1 + g2 - g3 + g4 - g5;
                s[3][j][c] = g0 + 2.0f * g1 + 4.0f * g2 + 8.0f * g3 + 16.0f * g4 + 32.0f * g5;
                s[4][j][c] = g0 - 2.0f * g1 + 4.0f * g2 - 8.0f * g3 + 16.0f * g4 - 32.0f * g5;
                s[5][j][c] = g0 + 0.5f * g1 + 0.25f * g2 + 0.125f * g3 + 0.0625f * g4 + 0.03125f * g5;
                s[6][j][c] = g0 - 0.5f * g1 + 0.25f * g2 - 0.125f * g3 + 0.0625f * g4 - 0.03125f * g5;
                s[7][j][c] = g5;
                sum[c] += g0 + g1 + g2 + g3 + g4 + g5;
            }
        }
        for (int r = 0; r < 8; r++) {
            float *o = mb + (int64_t)(r * 8) * ms + k0;
#pragma omp simd
            for (int c = 0; c < LANES; c++) {
                const float t0 = s[r][0][c], t1 = s[r][1][c], t2 = s[r][2][c], t3 = s[r][3][c], t4 = s[r][4][c], t5 = s[r][5][c];
                o[c] = t0;
                o[1 * ms + c] = t0 + t1 + t2 + t3 + t4 + t5;
                o[2 * ms + c] = t0 - t1 + t2 - t3 + t4 - t5;
                o[3 * ms + c] = t0 + 2.0f * t1 + 4.0f * t2 + 8.0f * t3 + 16.0f * t4 + 32.0f * t5;
                o[4 * ms + c] = t0 - 2.0f * t1 + 4.0f * t2 - 8.0f * t3 + 16.0f * t4 - 32.0f * t5;
                o[5 * ms + c] = t0 + 0.5f * t1 + 0.25f * t2 + 0.125f * t3 + 0.0625f * t4 + 0.03125f * t5;
                o[6 * ms + c] = t0 - 0.5f * t1 + 0.25f * t2 - 0.125f * t3 + 0.0625f * t4 - 0.03125f * t5;
                o[7 * ms + c] = t5;
            }
        }
        for (int c = 0; c < LANES; c++)
            dbias[k0 + c] += sum[c];
    }
}
/* GENERATED: F(6x6, 3x3) end */

/* The 64 matrix products of F(6x6, 3x3), M[p] (G x K) = V[p] (G x C) @ U[p] (C x K),
 * for a group of G blocks whose V and M stay in the core's cache. Each micro-kernel
 * keeps an R x (NV vectors) tile of M in registers over the C input channels, the
 * shape of a BLAS micro-kernel: 6 x 64 floats with AVX-512 (24 of 32 registers),
 * 3 x 32 with AVX2 (12 of 16), 6 x 16 with NEON (24 of 32), 4 x 8 otherwise.
 * Written with GCC/Clang vector types, so the compiler picks the instructions for
 * whatever ISA flags it was given. */
#if defined(__AVX512F__)
#define VL 16
#define MR 6
#define NV 4
#elif defined(__AVX__)
#define VL 8
#define MR 3
#define NV 4
#elif defined(__aarch64__)
#define VL 4
#define MR 6
#define NV 4
#else
#define VL 4
#define MR 4
#define NV 2
#endif
typedef float vecf __attribute__((vector_size(VL * 4)));

static inline vecf vload(const float *p)
{
    vecf v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void vstore(float *p, vecf v) { memcpy(p, &v, sizeof v); }

/* o (R rows x W vectors) = (ACC: o, else 0) + the sum over i < n of A(a, r, i, C) (the
 * R values of a's column i) times b's row i (W vectors; rows K floats apart). ROWS: a is
 * R rows of n (C floats apart), the products' tile; COLS: a is n rows of C, read down
 * its columns, the weight gradient's. The layout and ACC are fixed per kernel, so each
 * compiles to its own loop. */
#define ROWS(a, r, i, C) (a)[(r) * (C) + (i)]
#define COLS(a, r, i, C) (a)[(i) * (C) + (r)]
#define MICRO(NAME, R, W, A, ACC)                                                        \
    static inline void NAME(const float *restrict a, const float *restrict b,             \
                            float *restrict o, int64_t n, int64_t C, int64_t K)           \
    {                                                                                     \
        vecf acc[R][W];                                                                   \
        for (int r = 0; r < R; r++)                                                       \
            for (int j = 0; j < W; j++)                                                   \
                acc[r][j] = ACC ? vload(o + r * K + j * VL) : (vecf){0};                  \
        for (int64_t i = 0; i < n; i++) {                                                 \
            vecf wv[W];                                                                   \
            for (int j = 0; j < W; j++)                                                   \
                wv[j] = vload(b + i * K + j * VL);                                        \
            for (int r = 0; r < R; r++) {                                                 \
                const vecf s = (vecf){0} + A(a, r, i, C);                                 \
                for (int j = 0; j < W; j++)                                               \
                    acc[r][j] += s * wv[j];                                               \
            }                                                                             \
        }                                                                                 \
        for (int r = 0; r < R; r++)                                                       \
            for (int j = 0; j < W; j++)                                                   \
                vstore(o + r * K + j * VL, acc[r][j]);                                    \
    }
MICRO(micro_rw, MR, NV, ROWS, 0)
MICRO(micro_1w, 1, NV, ROWS, 0)
MICRO(micro_r1, MR, 1, ROWS, 0)
MICRO(micro_11, 1, 1, ROWS, 0)

/* o (g x K) = a (g x C) @ b (C x K), all rows contiguous; K a multiple of VL. */
static void gemm_group(const float *restrict a, const float *restrict b, float *restrict o,
                       int64_t g, int64_t C, int64_t K)
{
    int64_t k0 = 0;
    for (; k0 + NV * VL <= K; k0 += NV * VL) {
        int64_t t = 0;
        for (; t + MR <= g; t += MR)
            micro_rw(a + t * C, b + k0, o + t * K + k0, C, C, K);
        for (; t < g; t++)
            micro_1w(a + t * C, b + k0, o + t * K + k0, C, C, K);
    }
    for (; k0 < K; k0 += VL) {
        int64_t t = 0;
        for (; t + MR <= g; t += MR)
            micro_r1(a + t * C, b + k0, o + t * K + k0, C, C, K);
        for (; t < g; t++)
            micro_11(a + t * C, b + k0, o + t * K + k0, C, C, K);
    }
}

/* F(6x6, 3x3) for blocks t0 .. t0+g-1 of the padded NHWC image x (C channels, in
 * and out; th x tw blocks an image): their input transforms into v, the 64 products by
 * u into m (planes g * C floats apart), the output transforms (+ bias, ReLU, kept where
 * the gate is positive: NULL, or a buffer laid out as dst) into dst, the blocks'
 * overhang past the h x w image zeroed. */
static inline void layer_group(const float *restrict x, int64_t hp, int64_t wp, int64_t C,
                               int64_t th, int64_t tw, const float *restrict u,
                               const float *restrict bias, int relu,
                               const float *restrict gate, int64_t h, int64_t w,
                               float *restrict dst, float *restrict v, float *restrict m,
                               int64_t t0, int64_t g)
{
    const int64_t rs = wp * C, per = th * tw;
    for (int64_t i = 0; i < g; i++) {
        const int64_t t = t0 + i, n = t / per, a = t % per / tw, b = t % tw;
        in6_block(x + ((n * hp + 6 * a) * wp + 6 * b) * C, rs, C, v + i * C, g * C);
    }
    for (int p = 0; p < 64; p++)
        gemm_group(v + p * g * C, u + (int64_t)p * C * C, m + p * g * C, g, C, C);
    for (int64_t i = 0; i < g; i++) {
        const int64_t t = t0 + i, n = t / per, a = t % per / tw, b = t % tw;
        const int64_t y0 = 1 + 6 * a, z0 = 1 + 6 * b, at = ((n * hp + y0) * wp + z0) * C;
        out6_block(m + i * C, g * C, bias, relu, dst + at, rs, C);
        if (gate)
            gate_block(dst + at, gate + at, rs, C);
        zero_overhang(dst + at, y0, z0, 6, h, w, rs, C);
    }
}

/* One whole 3x3 layer by F(6x6, 3x3), float32: the padded NHWC image x (nimg x hp x
 * wp x C, th x tw blocks) -> dst (same geometry, K = C channels), + bias, ReLU, the
 * padding past the h x w image zeroed. u: the transformed kernels, (64, C, K). Each
 * thread takes groups of `group` blocks (groups g0 .. g1-1 of the image's blocks in
 * order) and, for each, runs the input transform, the 64 products and the output
 * transform while they are in its cache; scratch holds 64 * group * (C + K) floats
 * per thread. Without OpenMP the caller runs ranges of groups on threads of its own. */
void sruc_wino6_layer(const float *restrict x, int64_t hp, int64_t wp, int64_t C,
                      int64_t th, int64_t tw, int64_t nimg, const float *restrict u,
                      const float *restrict bias, int relu, int64_t h, int64_t w,
                      float *restrict dst, float *restrict scratch, int64_t group, int64_t g0,
                      int64_t g1, int threads)
{
    const int64_t T = nimg * th * tw, vs = group * C;
#pragma omp parallel num_threads(threads)
    {
        const int me = thread_id();
        float *v = scratch + (int64_t)me * 64 * 2 * vs, *m = v + 64 * vs;
        /* dynamic: where another process slows one core, its thread takes fewer
         * groups instead of holding up the others (a 384 px layer with one core
         * busy: 25 ms on two threads, 32 on one, 34.5 with a static split) */
#pragma omp for schedule(dynamic)
        for (int64_t gi = g0; gi < g1; gi++) {
            const int64_t t0 = gi * group, g = T - t0 < group ? T - t0 : group;
            layer_group(x, hp, wp, C, th, tw, u, bias, relu, NULL, h, w, dst, v, m, t0, g);
        }
    }
}

/* The convolutions before and after a Winograd stack (VDSR's 1 -> 64 and 64 -> 1),
 * 3x3 with padding 1, reading and writing the stack's padded buffers directly: no
 * channel padding for oneDNN, no copies in or out of the buffers. */

/* x: (nimg, cin, h + 2, w + 2), NCHW with one pixel of zeros around; wt: (9 * cin, K),
 * row (dy * 3 + dx) * cin + ci; -> + bias, ReLU, kept where the gate (NULL, or a buffer
 * of dst's geometry) is positive -> dst's interior (padded NHWC). */
void sruc_conv_head(const float *restrict x, int64_t nimg, int64_t cin, int64_t h, int64_t w,
                    const float *restrict wt, const float *restrict bias, int relu,
                    const float *restrict gate, float *restrict dst, int64_t hp, int64_t wp,
                    int64_t K, int threads)
{
    const int64_t xs = w + 2, plane = (h + 2) * xs;
#pragma omp parallel for schedule(dynamic) num_threads(threads)
    for (int64_t row = 0; row < nimg * h; row++) {
        const int64_t n = row / h, y = row % h;
        const float *xr = x + n * cin * plane + y * xs;
        float *o = dst + ((n * hp + 1 + y) * wp + 1) * K;
        const float *gt = gate ? gate + (o - dst) : 0;
        for (int64_t z = 0; z < w; z++, o += K, gt = gt ? gt + K : 0)
            for (int64_t k0 = 0; k0 < K; k0 += VL) {
                vecf acc = vload(bias + k0);
                for (int64_t ci = 0; ci < cin; ci++)
                    for (int dy = 0; dy < 3; dy++)
                        for (int dx = 0; dx < 3; dx++)
                            acc += xr[ci * plane + dy * xs + z + dx] *
                                   vload(wt + ((dy * 3 + dx) * cin + ci) * K + k0);
                if (relu)
                    for (int l = 0; l < VL; l++)
                        acc[l] = acc[l] > 0.f ? acc[l] : 0.f;
                if (gt)
                    for (int l = 0; l < VL; l++)
                        acc[l] = gt[k0 + l] > 0.f ? acc[l] : 0.f;
                vstore(o + k0, acc);
            }
    }
}

/* src: the stack's padded NHWC buffer (C channels); wt: (kout, 9 * C), row k, column
 * (dy * 3 + dx) * C + c; -> + bias, ReLU -> y: (nimg, kout, h, w), NCHW. */
void sruc_conv_tail(const float *restrict src, int64_t nimg, int64_t hp, int64_t wp, int64_t C,
                    int64_t h, int64_t w, const float *restrict wt, const float *restrict bias,
                    int relu, float *restrict y, int64_t kout, int threads)
{
#pragma omp parallel for schedule(dynamic) num_threads(threads)
    for (int64_t row = 0; row < nimg * h; row++) {
        const int64_t n = row / h, yy = row % h;
        for (int64_t k = 0; k < kout; k++) {
            float *o = y + ((n * kout + k) * h + yy) * w;
            const float *wk = wt + k * 9 * C;
            for (int64_t z = 0; z < w; z++) {
                vecf acc = (vecf){0};
                for (int dy = 0; dy < 3; dy++) {
                    const float *s = src + ((n * hp + yy + dy) * wp + z) * C;
                    const float *wr = wk + dy * 3 * C;
                    for (int64_t c = 0; c < 3 * C; c += VL)  /* dx = 0..2: contiguous */
                        acc += vload(s + c) * vload(wr + c);
                }
                float sum = bias[k];
                for (int l = 0; l < VL; l++)
                    sum += acc[l];
                o[z] = relu && sum < 0.f ? 0.f : sum;
            }
        }
    }
}

/* Training: the weight and bias gradients, summed into slices of the outputs that the
 * caller then adds up, so that a step gives the same sums every time. */

/* The gradient micro-kernels: o (R rows of C x K) += a^T b over the g blocks of a
 * group, a (g x C) and b (g x K) as the layer leaves V and M. */
#if defined(__AVX512F__) || defined(__aarch64__) || !defined(__AVX__)
#define WR 4
#else
#define WR 2
#endif
MICRO(wmicro_rw, WR, NV, COLS, 1)
MICRO(wmicro_r1, WR, 1, COLS, 1)

/* o (C x K) += a^T (C x g) @ b (g x K); C a multiple of 16, K of VL. */
static void gemm_acc(const float *restrict a, const float *restrict b, float *restrict o,
                     int64_t g, int64_t C, int64_t K)
{
    for (int64_t c0 = 0; c0 < C; c0 += WR) {
        int64_t k0 = 0;
        for (; k0 + NV * VL <= K; k0 += NV * VL)
            wmicro_rw(a + c0, b + k0, o + c0 * K + k0, g, C, K);
        for (; k0 < K; k0 += VL)
            wmicro_r1(a + c0, b + k0, o + c0 * K + k0, g, C, K);
    }
}

/* A middle layer's backward: x its input, gy the gradient of its output (the ReLU's
 * backward applied; padding and overhang zero), both padded NHWC with C channels.
 * - The gradients of its transformed kernels and bias: per group of blocks, x's input
 *   transform V, gy's transposed output transform dM, and du[p] += V[p]^T dM[p] for the
 *   64 points (the kernels' gradient is G^T du G). The image's groups are cut into
 *   nslots equal runs, each summed into its own slot of du (nslots, 64, C, C) and
 *   dbias (nslots, C), which it zeroes first: threads take slots s0 .. s1-1 as they
 *   come free (a core slowed by another process holds nothing up), and the sums do not
 *   depend on who took which, so a step gives the same gradients every time, whatever
 *   the thread count. The groups are larger than the layer's: each adds into the
 *   whole of its slot (64 C C floats, 1 MB for 64 channels), out of the core's cache.
 * - Its input gradient, for the same group while it is in the core's cache: gy by the
 *   flipped, transposed kernels ut (64, C, C), `sub` blocks at a time as
 *   sruc_wino6_layer runs them, kept where x is positive (the ReLU's backward), into
 *   dx (padded NHWC, its overhang past the h x w image zeroed). zero: C zeros. */
void sruc_wino6_backward(const float *restrict x, const float *restrict gy, int64_t hp,
                         int64_t wp, int64_t C, int64_t th, int64_t tw, int64_t nimg,
                         int64_t h, int64_t w, const float *restrict ut,
                         const float *restrict zero, float *restrict dx, float *restrict du,
                         float *restrict dbias, float *restrict scratch, int64_t group,
                         int64_t sub, int64_t nslots, int64_t s0, int64_t s1, int threads)
{
    const int64_t per = th * tw, T = nimg * per, vs = group * C, rs = wp * C;
    const int64_t groups = (T + group - 1) / group;
#pragma omp parallel num_threads(threads)
    {
        const int me = thread_id();
        float *v = scratch + (int64_t)me * 64 * 2 * vs, *m = v + 64 * vs;
#pragma omp for schedule(dynamic)
        for (int64_t sl = s0; sl < s1; sl++) {
            float *dus = du + sl * 64 * C * C, *dbs = dbias + sl * C;
            memset(dus, 0, (size_t)(64 * C * C) * sizeof *dus);
            memset(dbs, 0, (size_t)C * sizeof *dbs);
            for (int64_t gi = sl * groups / nslots; gi < (sl + 1) * groups / nslots; gi++) {
                const int64_t t0 = gi * group, g = T - t0 < group ? T - t0 : group;
                for (int64_t i = 0; i < g; i++) {
                    const int64_t t = t0 + i, n = t / per, a = t % per / tw, b = t % tw;
                    in6_block(x + ((n * hp + 6 * a) * wp + 6 * b) * C, rs, C, v + i * C, vs);
                    grad6_block(gy + ((n * hp + 1 + 6 * a) * wp + 1 + 6 * b) * C, rs, C,
                                m + i * C, vs, dbs);
                }
                for (int p = 0; p < 64; p++)
                    gemm_acc(v + p * vs, m + p * vs, dus + (int64_t)p * C * C, g, C, C);
                for (int64_t j0 = 0; j0 < g; j0 += sub) {
                    const int64_t gs = g - j0 < sub ? g - j0 : sub;
                    layer_group(gy, hp, wp, C, th, tw, ut, zero, 0, x, h, w, dx, v, m,
                                t0 + j0, gs);
                }
            }
        }
    }
}

/* The gradients of sruc_conv_head's weights and bias: x as there, gy the gradient of
 * its output (padded NHWC, K channels, ReLU's backward applied). dw: (threads, 9 * cin,
 * K) in the head's weight layout, db: (threads, K). */
void sruc_conv_head_wgrad(const float *restrict x, int64_t nimg, int64_t cin, int64_t h,
                          int64_t w, const float *restrict gy, int64_t hp, int64_t wp,
                          int64_t K, float *restrict dw, float *restrict db, int threads)
{
    const int64_t xs = w + 2, plane = (h + 2) * xs;
#pragma omp parallel num_threads(threads)
    {
        const int me = thread_id();
        float *dwt = dw + (int64_t)me * 9 * cin * K, *dbt = db + (int64_t)me * K;
#pragma omp for schedule(static)
        for (int64_t row = 0; row < nimg * h; row++) {
            const int64_t n = row / h, y = row % h;
            const float *xr = x + n * cin * plane + y * xs;
            const float *g = gy + ((n * hp + 1 + y) * wp + 1) * K;
            for (int64_t z = 0; z < w; z++, g += K)
                for (int64_t k0 = 0; k0 < K; k0 += VL) {
                    const vecf gv = vload(g + k0);
                    vstore(dbt + k0, vload(dbt + k0) + gv);
                    for (int64_t ci = 0; ci < cin; ci++)
                        for (int dy = 0; dy < 3; dy++)
                            for (int dx = 0; dx < 3; dx++) {
                                float *o = dwt + ((dy * 3 + dx) * cin + ci) * K + k0;
                                vstore(o, vload(o) + xr[ci * plane + dy * xs + z + dx] * gv);
                            }
                }
        }
    }
}

/* The gradients of sruc_conv_tail's weights and bias (no ReLU): src as there, gy the
 * gradient of its output, (nimg, kout, h, w). dw: (threads, kout, 9 * C) in the tail's
 * weight layout, db: (threads, kout). */
void sruc_conv_tail_wgrad(const float *restrict src, int64_t nimg, int64_t hp, int64_t wp,
                          int64_t C, int64_t h, int64_t w, const float *restrict gy,
                          int64_t kout, float *restrict dw, float *restrict db, int threads)
{
#pragma omp parallel num_threads(threads)
    {
        const int me = thread_id();
        float *dwt = dw + (int64_t)me * kout * 9 * C, *dbt = db + (int64_t)me * kout;
#pragma omp for schedule(static)
        for (int64_t row = 0; row < nimg * h; row++) {
            const int64_t n = row / h, yy = row % h;
            for (int64_t k = 0; k < kout; k++) {
                const float *gk = gy + ((n * kout + k) * h + yy) * w;
                float *wk = dwt + k * 9 * C;
                for (int64_t z = 0; z < w; z++) {
                    const float gval = gk[z];
                    dbt[k] += gval;
                    for (int dy = 0; dy < 3; dy++) {
                        const float *s = src + ((n * hp + yy + dy) * wp + z) * C;
                        float *wr = wk + dy * 3 * C;
                        for (int64_t c = 0; c < 3 * C; c += VL)
                            vstore(wr + c, vload(wr + c) + gval * vload(s + c));
                    }
                }
            }
        }
    }
}
