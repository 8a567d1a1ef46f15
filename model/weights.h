/*
 * weights.h: weight matrices for inference in float32, bfloat16, IEEE half
 * or 8 bits, and the matrix product that reads them where they lie.
 *
 * Training keeps float32 master weights (gpt.h's parameter arena); a model
 * for inference may convert its matrices once at load (gpt_set_weight_dtype)
 * and then decode reads half or about a quarter of the bytes per step.
 *
 *   f32   4 bytes a weight, the numbers as trained; a view of the training
 *         weights (wmat_view) goes through ops.c's matmul_forward
 *   bf16  2 bytes: the top half of the float32, rounded to nearest even. The
 *         activations are rounded to bf16 too and AVX512_BF16's vdpbf16ps
 *         sums pairs of products in float32 (as llama.cpp does)
 *   f16   2 bytes, IEEE half, rounded to nearest even; converted to float32
 *         as loaded (AVX-512F vcvtph2ps) and multiplied with the float32
 *         activations
 *   q8    blocks of 32 weights of a row: int8 q = round(w / d), d = max|w| /
 *         127, one float32 scale d per block (llama.cpp's Q8_0 with a float
 *         scale): 1.125 bytes a weight. The activations are quantised the
 *         same way per block as they enter the product, and each block's
 *         int8 dot product is exact in int32 (AVX512_VNNI vpdpbusd), then
 *         scaled by d_w d_x into a float32 sum
 *
 * Storage: a view of float32 weights (wmat_view: the training weights,
 * as the full forward reads them) is row-major, rows of `ld` elements. A
 * converted matrix of any dtype, f32 included, interleaves its rows 16 at
 * a time (WMAT_GROUP; the last group padded with rows of zeros), so that
 * a vector holds one number per row: a group stores, for each step of the
 * product, 64 bytes (f16: 32) of 16 rows side by side, each row's part of
 * a 32-bit lane (f16: 16-bit) together: f32 and f16 one column, bf16 a
 * pair of columns, q8 4 columns (weights.c: wmat_pos). Each dot product
 * instruction then advances 16 rows' sums, one a lane, with the input's
 * numbers broadcast, and no sum across lanes is left to do at the end. q8
 * pads each row with zeros to whole blocks and stores q + 128 as unsigned
 * bytes, because vpdpbusd multiplies unsigned by signed bytes: sum (q_w +
 * 128) q_x = sum q_w q_x + 128 sum q_x, and the second term, the
 * activations' alone, is subtracted; a group's scales are stored (blocks,
 * 16), so one float multiply-add per block applies the 16 rows' scales.
 * bf16 pads rows to an even number of columns.
 *
 * The portable kernels (plain C, float32 sums, the same rounding of the
 * activations) run where the CPU features were not compiled in, or when
 * chosen at run time (GQA_KERNELS=portable, wmat_use_portable); the tests
 * check that both give the same products.
 */
#ifndef GQA_WEIGHTS_H
#define GQA_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

typedef enum { W_F32 = 0, W_BF16 = 1, W_F16 = 2, W_Q8 = 3 } WeightDtype;
#define W_NUM_DTYPES 4
#define WQ8_BLOCK 32  // weights per q8 scale
#define WMAT_GROUP 16  // rows stored interleaved (every converted dtype, f32 too)

// "f32" | "bf16" | "f16" | "q8" -> dtype; 0, or -1 if the name is unknown.
int weight_dtype_parse(const char *name, WeightDtype *out);
const char *weight_dtype_name(WeightDtype d);
// The dtypes' names in enum order, NULL-terminated (a CLI choice list).
extern const char *const weight_dtype_names[];

// A (rows, cols) matrix of dtype: `rows` rows of `ld` stored elements.
typedef struct {
    WeightDtype dtype;
    size_t rows;
    int cols, ld;   // ld = cols; bf16: rounded up to even; q8: to whole blocks of 32
    int grouped;    // 1: converted, rows in groups of 16; 0: a view of float32 rows (wmat_view)
    int lane0;      // grouped: row 0's place in its group of 16 (a view of rows from the middle of a group)
    void *data;     // groups of 16 rows of ld float (f32), uint16_t (bf16, f16) or uint8_t q + 128 (q8); a view: rows
    float *scale;   // q8: the groups' block scales, (ld / 32, 16) each; NULL otherwise
} WMat;

// Elements per stored row, and the bytes of a (rows, cols) matrix: data,
// and for q8 its scales (of rows rounded up to 16), each part rounded up
// to 64 bytes (a cache line).
int wmat_ld(WeightDtype d, int cols);
size_t wmat_bytes(WeightDtype d, size_t rows, int cols);
// Bytes a product reads per weight row (data and scales, no rounding).
size_t wmat_row_bytes(WeightDtype d, int cols);

// Lay out a matrix at mem (64-byte aligned, wmat_bytes of it) and convert
// src (rows, cols) float32 into it, in groups of rows (f32 too). A float32
// WMat may instead view src as it lies: wmat_view (row-major; its product
// is ops.c's matmul_forward).
void wmat_init_from_float(WMat *w, WeightDtype d, size_t rows, int cols, void *mem, const float *src);
WMat wmat_view(const float *src, size_t rows, int cols);
// Rows [row0, row0 + n) as a matrix of their own (no copy).
WMat wmat_rows(const WMat *w, size_t row0, size_t n);
// Row r as float32 (cols values): the weights the products use.
void wmat_row_to_float(const WMat *w, size_t r, float *dst);

// A converted matrix (bf16, f16 or q8) in the host-independent form of an
// inference checkpoint (docs/formats.md): bf16 and f16 the (rows, cols)
// numbers row-major, uint16 little-endian; q8 the scales (rows, cols / 32
// rounded up) float32 little-endian, then the (rows, cols) int8 q. No
// padding: the grouped layout is this build's, not the file's.
size_t wmat_raw_bytes(WeightDtype d, size_t rows, int cols);
// w (converted, lane0 0: a whole matrix) into raw (wmat_raw_bytes of it).
void wmat_to_raw(const WMat *w, uint8_t *raw);
// 0 if raw holds finite numbers (q8: finite scales >= 0), else -1 with err
// naming the first bad one: "row R, column K is not finite (0x7c00)" or
// "row R, block B has scale -1 (...)".
int wmat_raw_check(WeightDtype d, size_t rows, int cols, const uint8_t *raw, char *err, size_t errlen);
// wmat_init_from_float's matrix from raw instead (checked by
// wmat_raw_check): the same bytes as converting the numbers it came from.
void wmat_init_from_raw(WMat *w, WeightDtype d, size_t rows, int cols, void *mem, const uint8_t *raw);

// out (N, rows) = inp (N, cols) @ w^T + b (rows; may be NULL). scratch holds
// the activations in the weights' form: wmat_scratch_bytes(N, cols) bytes,
// 64-byte aligned (unused with f32). Threads split the weight rows.
void wmat_matmul(float *out, const float *inp, const WMat *w, const float *b, int N, void *scratch);
size_t wmat_scratch_bytes(int N, int cols);

// Portable kernels (1) or the vector ones (0, the default where compiled
// in; GQA_KERNELS=portable selects the portable ones at start-up). Returns
// the previous setting. Not thread-safe: set it outside parallel work.
int wmat_use_portable(int on);
// Which kernel a dtype's product runs now: "avx512" names the instruction
// set ("avx512bf16", "avx512f", "avx512vnni") or "portable".
const char *wmat_kernel_name(WeightDtype d);

// Where the grouped kernels prefetch: a thread reads a block of G groups
// (gbytes each) side by side, then its next block; what to add to the
// address of the load at byte off of a group to prefetch dist bytes ahead
// in that group's reading order (past its end: the same group of the next
// block, G groups on). At most one group ahead.
size_t wmat_prefetch_ahead(size_t off, size_t gbytes, int G, size_t dist);

#endif
