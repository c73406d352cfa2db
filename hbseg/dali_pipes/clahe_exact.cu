// hbseg's CLAHE for 8-bit grey images, equal to cv::createCLAHE(clip, {tiles_x, tiles_y}).apply
// bit for bit (OpenCV's modules/imgproc/src/clahe.cpp: tiles of the reflect-101 padded image,
// clipped histograms, round-to-nearest look-up tables, bilinear interpolation between them).
//
// One source, two builds:
//   * NVRTC through CuPy (hbseg.dali_pipes.clahe_gpu): the two __global__ kernels;
//   * a C++ compiler with -ffp-contract=off (the CPU tests): clahe_reference(), which runs
//     the same per-bin and per-pixel functions one thread at a time.
// Every float operation is a separately rounded IEEE operation: OpenCV's baseline build
// does no fused multiply-add here, and one FMA changes a level on some pixels.

#ifdef __CUDACC__
#define CLAHE_FN __device__ __forceinline__
CLAHE_FN float f_mul(float a, float b) { return __fmul_rn(a, b); }
CLAHE_FN float f_add(float a, float b) { return __fadd_rn(a, b); }
CLAHE_FN float f_sub(float a, float b) { return __fsub_rn(a, b); }
CLAHE_FN int round_half_even(float v) { return __float2int_rn(v); }  // cvRound
#else
#include <math.h>
#define CLAHE_FN static inline
CLAHE_FN float f_mul(float a, float b) { return a * b; }
CLAHE_FN float f_add(float a, float b) { return a + b; }
CLAHE_FN float f_sub(float a, float b) { return a - b; }
CLAHE_FN int round_half_even(float v) { return (int)lrintf(v); }  // cvRound: current mode, to even
#endif

typedef unsigned char u8;
#define CLAHE_BINS 256

CLAHE_FN int to_u8(int v) { return v < 0 ? 0 : (v > 255 ? 255 : v); }
CLAHE_FN int floor_f(float v) { int i = (int)v; return i - (i > v); }  // cvFloor

// Where a pixel of the padded image comes from (cv::borderInterpolate, BORDER_REFLECT_101),
// so that the LUT pass reads the padding without an image being padded.
CLAHE_FN int reflect_101(int p, int len) {
  if (len == 1) return 0;
  while (p < 0 || p >= len) p = p < 0 ? -p : 2 * len - 2 - p;
  return p;
}

// Bin `bin` after clipping at `limit` and handing the `clipped` excess back: first evenly,
// then one more to bins 0, step, 2*step, ... while some is left. OpenCV does this in a serial
// loop; a bin's share depends only on its index, so every bin can take its own.
CLAHE_FN int clipped_bin(int count, int bin, int limit, int clipped) {
  if (limit <= 0) return count;
  int c = count > limit ? limit : count;
  int batch = clipped / CLAHE_BINS, residual = clipped - batch * CLAHE_BINS;
  c += batch;
  if (residual > 0) {
    int step = CLAHE_BINS / residual > 1 ? CLAHE_BINS / residual : 1;
    if (bin % step == 0 && bin / step < residual) c += 1;
  }
  return c;
}

CLAHE_FN int bin_excess(int count, int limit) { return limit > 0 && count > limit ? count - limit : 0; }

CLAHE_FN u8 lut_entry(int cdf, float lut_scale) {
  return (u8)to_u8(round_half_even(f_mul((float)cdf, lut_scale)));
}

// One axis of the interpolation: the two neighbouring tiles and their weights.
struct Axis { int t1, t2; float w2, w1; };

CLAHE_FN Axis axis_weights(int p, float inv_tile, int tiles) {
  Axis a;
  float tf = f_sub(f_mul((float)p, inv_tile), 0.5f);
  int i1 = floor_f(tf);
  a.w2 = f_sub(tf, (float)i1);
  a.w1 = f_sub(1.0f, a.w2);
  a.t1 = i1 > 0 ? i1 : 0;
  a.t2 = i1 + 1 < tiles - 1 ? i1 + 1 : tiles - 1;
  return a;
}

CLAHE_FN u8 interpolate(const u8 *luts, int tiles_x, int v, Axis x, Axis y) {
  const u8 *row1 = luts + y.t1 * tiles_x * CLAHE_BINS, *row2 = luts + y.t2 * tiles_x * CLAHE_BINS;
  float top = f_add(f_mul((float)row1[x.t1 * CLAHE_BINS + v], x.w1),
                    f_mul((float)row1[x.t2 * CLAHE_BINS + v], x.w2));
  float bottom = f_add(f_mul((float)row2[x.t1 * CLAHE_BINS + v], x.w1),
                       f_mul((float)row2[x.t2 * CLAHE_BINS + v], x.w2));
  return (u8)to_u8(round_half_even(f_add(f_mul(top, y.w1), f_mul(bottom, y.w2))));
}

#ifdef __CUDACC__
// Grid (tiles_x, tiles_y), CLAHE_BINS threads: thread b owns bin b of its tile's histogram.
extern "C" __global__ void clahe_tile_luts(const u8 *src, int height, int width, int tile_w,
                                           int tile_h, int tiles_x, int limit, float lut_scale,
                                           u8 *luts) {
  __shared__ int hist[CLAHE_BINS];
  __shared__ int clipped;
  const int b = threadIdx.x;
  hist[b] = 0;
  if (b == 0) clipped = 0;
  __syncthreads();
  const int x0 = blockIdx.x * tile_w, y0 = blockIdx.y * tile_h;
  for (int i = b; i < tile_w * tile_h; i += CLAHE_BINS) {
    int y = reflect_101(y0 + i / tile_w, height), x = reflect_101(x0 + i % tile_w, width);
    atomicAdd(&hist[src[(long long)y * width + x]], 1);
  }
  __syncthreads();
  int count = hist[b];
  int excess = bin_excess(count, limit);
  if (excess) atomicAdd(&clipped, excess);
  __syncthreads();
  hist[b] = clipped_bin(count, b, limit, clipped);
  __syncthreads();
  for (int offset = 1; offset < CLAHE_BINS; offset <<= 1) {  // inclusive prefix sum (integers)
    int add = b >= offset ? hist[b - offset] : 0;
    __syncthreads();
    hist[b] += add;
    __syncthreads();
  }
  luts[(blockIdx.y * tiles_x + blockIdx.x) * CLAHE_BINS + b] = lut_entry(hist[b], lut_scale);
}

// One thread per pixel of the unpadded image.
extern "C" __global__ void clahe_apply(const u8 *src, u8 *dst, int height, int width,
                                       float inv_tile_w, float inv_tile_h, int tiles_x, int tiles_y,
                                       const u8 *luts) {
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (long long)height * width) return;
  int y = (int)(i / width), x = (int)(i - (long long)y * width);
  dst[i] = interpolate(luts, tiles_x, src[i], axis_weights(x, inv_tile_w, tiles_x),
                       axis_weights(y, inv_tile_h, tiles_y));
}
#else
// The kernels' work, one thread at a time, for the CPU tests. Geometry comes from the caller
// (hbseg.dali_pipes.clahe_gpu.tile_geometry), as it does for the kernels.
extern "C" void clahe_reference(const u8 *src, u8 *dst, int height, int width, int tile_w,
                                int tile_h, int tiles_x, int tiles_y, int limit, float lut_scale,
                                float inv_tile_w, float inv_tile_h, u8 *luts) {
  for (int ty = 0; ty < tiles_y; ++ty)
    for (int tx = 0; tx < tiles_x; ++tx) {
      int hist[CLAHE_BINS] = {0};
      for (int i = 0; i < tile_w * tile_h; ++i) {
        int y = reflect_101(ty * tile_h + i / tile_w, height);
        int x = reflect_101(tx * tile_w + i % tile_w, width);
        hist[src[(long long)y * width + x]] += 1;
      }
      int clipped = 0;
      for (int b = 0; b < CLAHE_BINS; ++b) clipped += bin_excess(hist[b], limit);
      int cdf = 0;
      for (int b = 0; b < CLAHE_BINS; ++b) {
        cdf += clipped_bin(hist[b], b, limit, clipped);
        luts[(ty * tiles_x + tx) * CLAHE_BINS + b] = lut_entry(cdf, lut_scale);
      }
    }
  for (int y = 0; y < height; ++y) {
    Axis ay = axis_weights(y, inv_tile_h, tiles_y);
    for (int x = 0; x < width; ++x) {
      long long i = (long long)y * width + x;
      dst[i] = interpolate(luts, tiles_x, src[i], axis_weights(x, inv_tile_w, tiles_x), ay);
    }
  }
}
#endif
