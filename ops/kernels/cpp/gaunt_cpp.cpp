// The Gaunt sphere-grid product on a CPU, fused per sample: read features in e3nn's layout,
// take them to the northern half of the grid (mirror-even and mirror-odd parts), multiply
// pairs of them pointwise and project back, writing e3nn's layout. See build.py.
//
// For a block of 4 channels at a time (1 for fewer than 4), the values on the grid are small matrix products
// [4, K] x [K, W] whose accumulators stay in vector registers; inputs are read straight
// from e3nn's layout through index tables (component k of channel c sits at index[c][k]
// of a row), so nothing is permuted in memory. One pass may make several products of the
// same functions (the two input gradients share the output gradient's values).

#include "cpu_kernels.h"

#include <mutex>

namespace {

using equinet::prefetch_row;
using equinet::Vector;

// Columns w0.. (Vectors vectors' worth) of c[rows][width] = a[rows][k] @ b[k][width], b's rows `ldb`
// apart. Fewer than 4 rows split the sum over k between accumulators, to keep multiply-adds in flight.
template <typename T, int Rows, int Vectors>
inline void matmul_tile(const T* a, int64_t k_size, const T* b, int64_t ldb, int64_t width, int64_t w0, T* c) {
  using V = typename Vector<T>::type;
  constexpr int kSplit = Rows >= 4 ? 1 : 4 / Rows;
  V acc[kSplit][Rows][Vectors] = {};
  for (int64_t k0 = 0; k0 < k_size; k0 += kSplit) {
    for (int s = 0; s < kSplit && k0 + s < k_size; ++s) {
      const int64_t k = k0 + s;
      const V* row = reinterpret_cast<const V*>(b + k * ldb + w0);
      for (int i = 0; i < Rows; ++i) {
        const T value = a[i * k_size + k];
        for (int v = 0; v < Vectors; ++v) acc[s][i][v] += value * row[v];
      }
    }
  }
  for (int i = 0; i < Rows; ++i) {
    V* out = reinterpret_cast<V*>(c + i * width + w0);
    for (int v = 0; v < Vectors; ++v) {
      for (int s = 1; s < kSplit; ++s) acc[0][i][v] += acc[s][i][v];
      out[v] = acc[0][i][v];
    }
  }
}

// c[rows][width] = a[rows][k] @ b[k][width] (width a multiple of one vector), two vectors at a time.
template <typename T, int Rows>
inline void small_matmul(const T* a, int64_t k_size, const T* b, int64_t ldb, int64_t width, T* c) {
  constexpr int kLanes = 64 / sizeof(T);
  int64_t w0 = 0;
  for (; w0 + 2 * kLanes <= width; w0 += 2 * kLanes) matmul_tile<T, Rows, 2>(a, k_size, b, ldb, width, w0, c);
  if (w0 < width) matmul_tile<T, Rows, 1>(a, k_size, b, ldb, width, w0, c);
}

// One half (mirror-even or mirror-odd components) of a feature's tables: positions in a row of
// e3nn's layout and scales, both [channels, K], and the synthesis [K, width] or analysis
// [points, padded K] matrix.
template <typename T>
struct Half {
  const int64_t* index;
  const T* scale;
  const T* matrix;
  int64_t size, width;
};

template <typename T>
Half<T> half(const torch::Tensor& index, const torch::Tensor& matrix, const torch::Tensor& scale) {
  return {index.data_ptr<int64_t>(), scale.data_ptr<T>(), matrix.data_ptr<T>(), index.size(1), matrix.size(1)};
}

bool given(const torch::Tensor& t) { return t.numel() > 0; }

// A feature read as a spherical function: [x, index_even, matrix_even, scale_even, index_odd, ...].
template <typename T>
struct Factor {
  const T* x;
  int64_t row_stride, row_width, channels, width;
  Half<T> halves[2];

  explicit Factor(const std::vector<torch::Tensor>& t)
      : x(t[0].data_ptr<T>()), row_stride(t[0].stride(0)), row_width(t[0].size(1)), channels(t[3].size(0)),
        width(t[2].size(1)), halves{half<T>(t[1], t[2], t[3]), half<T>(t[4], t[5], t[6])} {}

  // The values [2][rows][width] (halves) of channels c0.. of sample n.
  template <int Rows>
  void synthesize(int64_t n, int64_t c0, int64_t count, T* gathered, T* values) const {
    const T* row = x + n * row_stride;
    for (int h = 0; h < 2; ++h) {
      const Half<T>& part = halves[h];
      T* out = values + h * Rows * width;
      if (part.size == 0) {
        std::fill(out, out + Rows * width, T(0));
        continue;
      }
      const int64_t* index = part.index + c0 * part.size;
      const T* scale = part.scale + c0 * part.size;
      for (int64_t j = 0; j < count * part.size; ++j) gathered[j] = row[index[j]] * scale[j];
      std::fill(gathered + count * part.size, gathered + Rows * part.size, T(0));
      small_matmul<T, Rows>(gathered, part.size, part.matrix, width, width, out);
    }
  }
};

// A product of two factors projected back: [index_even, matrix_even, scale_even, index_odd, ...,
// out, raw, weight_grad_even, weight_grad_odd] (the last four empty when not asked for). It writes
// out[n] = sign * scale * A(f_first f_second) and adds sum_n raw[n] * sign * A(...) to weight_grad;
// with one channel (the gradient of a shared feature), A(...) summed over the channels.
template <typename T>
struct Product {
  Half<T> halves[2];
  int64_t channels, first, second, width;
  T sign;
  T* out;
  const T* raw;
  T* weight_grad[2];

  Product(const std::vector<torch::Tensor>& t, int64_t first, int64_t second, double sign)
      : halves{half<T>(t[0], t[1], t[2]), half<T>(t[3], t[4], t[5])}, channels(t[2].size(0)), first(first),
        second(second), width(t[2].size(0) * (t[0].size(1) + t[3].size(1))), sign(static_cast<T>(sign)),
        out(given(t[6]) ? t[6].data_ptr<T>() : nullptr), raw(given(t[7]) ? t[7].data_ptr<T>() : nullptr),
        weight_grad{given(t[8]) ? t[8].data_ptr<T>() : nullptr, given(t[9]) ? t[9].data_ptr<T>() : nullptr} {}
};

// The pointwise product of two functions (halves [2][rows][width] each; rows 1 for a shared
// function) for a block of kBlock channels: even part e_a e_b + o_a o_b, odd part
// e_a o_b + o_a e_b, summed over the `factors` groups of `points` values (the bracket's j).
template <typename T, int kBlock>
void multiply(const T* a, int64_t rows_a, int64_t width_a, const T* b, int64_t rows_b, int64_t width_b,
              int64_t factors, int64_t points, T* halves) {
  for (int i = 0; i < kBlock; ++i) {
    const T* ea = a + (rows_a == 1 ? 0 : i) * width_a;
    const T* oa = ea + rows_a * width_a;
    const T* eb = b + (rows_b == 1 ? 0 : i) * width_b;
    const T* ob = eb + rows_b * width_b;
    T* even = halves + i * points;
    T* odd = even + kBlock * points;
    std::fill(even, even + points, T(0));
    std::fill(odd, odd + points, T(0));
    for (int64_t j = 0; j < factors; ++j) {
      const int64_t s = j * points;
      for (int64_t p = 0; p < points; ++p) {
        even[p] += ea[s + p] * eb[s + p] + oa[s + p] * ob[s + p];
        odd[p] += ea[s + p] * ob[s + p] + oa[s + p] * eb[s + p];
      }
    }
  }
}

template <typename T, int kBlock>
void run(const std::vector<Factor<T>>& factors, const std::vector<Product<T>>& products, int64_t num,
         int64_t channels, int64_t groups, int64_t points) {
  int64_t k_max = 0, values_size = 0, padded_max = 0;
  std::vector<int64_t> values_at;
  for (const auto& f : factors) {
    k_max = std::max({k_max, f.halves[0].size, f.halves[1].size});
    values_at.push_back(values_size);
    values_size += 2 * kBlock * f.width;
  }
  for (const auto& p : products) padded_max = std::max({padded_max, p.halves[0].width, p.halves[1].width});
  std::mutex lock;
  auto rows = [&](int64_t begin, int64_t end) {
    std::vector<T> gathered(kBlock * k_max), values(values_size), halves(2 * kBlock * points);
    std::vector<T> projected(kBlock * padded_max);
    std::vector<std::vector<T>> sums(products.size()), grads(2 * products.size());
    for (size_t q = 0; q < products.size(); ++q) {
      const auto& p = products[q];
      sums[q].resize(p.halves[0].size + p.halves[1].size);
      for (int h = 0; h < 2; ++h) grads[2 * q + h].resize(p.weight_grad[h] ? p.channels * p.halves[h].size : 0);
    }
    for (int64_t n = begin; n < end; ++n) {
      if (n + 1 < end) {  // rows are read in scattered order: fetch the next ones while this one runs
        for (const auto& f : factors) prefetch_row(f.x + (n + 1) * f.row_stride, f.row_width);
        for (const auto& p : products) {
          if (p.raw) prefetch_row(p.raw + (n + 1) * p.width, p.width);
          if (p.out) prefetch_row(p.out + (n + 1) * p.width, p.width);
        }
      }
      for (size_t i = 0; i < factors.size(); ++i)
        if (factors[i].channels == 1) factors[i].template synthesize<1>(n, 0, 1, gathered.data(), &values[values_at[i]]);
      for (auto& s : sums) std::fill(s.begin(), s.end(), T(0));
      for (int64_t c0 = 0; c0 < channels; c0 += kBlock) {
        const int64_t count = std::min<int64_t>(kBlock, channels - c0);
        for (size_t i = 0; i < factors.size(); ++i)
          if (factors[i].channels != 1)
            factors[i].template synthesize<kBlock>(n, c0, count, gathered.data(), &values[values_at[i]]);
        for (size_t q = 0; q < products.size(); ++q) {
          const Product<T>& p = products[q];
          const Factor<T>&a = factors[p.first], &b = factors[p.second];
          multiply<T, kBlock>(&values[values_at[p.first]], a.channels == 1 ? 1 : kBlock, a.width,
                              &values[values_at[p.second]], b.channels == 1 ? 1 : kBlock, b.width, groups, points,
                              halves.data());
          const bool channel_sum = p.channels == 1 && channels > 1;
          for (int h = 0; h < 2; ++h) {
            const Half<T>& part = p.halves[h];
            if (part.size == 0) continue;
            small_matmul<T, kBlock>(halves.data() + h * kBlock * points, points, part.matrix, part.width, part.width,
                                    projected.data());
            for (int i = 0; i < count; ++i) {
              const int64_t c = c0 + i;
              for (int64_t k = 0; k < part.size; ++k) {
                const T u = p.sign * projected[i * part.width + k];
                if (channel_sum) {
                  sums[q][h * p.halves[0].size + k] += u;
                  continue;
                }
                const int64_t position = n * p.width + part.index[c * part.size + k];
                if (p.out) p.out[position] = u * part.scale[c * part.size + k];
                if (p.weight_grad[h]) grads[2 * q + h][c * part.size + k] += p.raw[position] * u;
              }
            }
          }
        }
      }
      for (size_t q = 0; q < products.size(); ++q) {
        const Product<T>& p = products[q];
        if (!(p.channels == 1 && channels > 1)) continue;
        for (int h = 0; h < 2; ++h)
          for (int64_t k = 0; k < p.halves[h].size; ++k) {
            const T u = sums[q][h * p.halves[0].size + k];
            const int64_t position = n * p.width + p.halves[h].index[k];
            if (p.out) p.out[position] = u * p.halves[h].scale[k];
            if (p.weight_grad[h]) grads[2 * q + h][k] += p.raw[position] * u;
          }
      }
    }
    std::lock_guard<std::mutex> guard(lock);
    for (size_t q = 0; q < products.size(); ++q)
      for (int h = 0; h < 2; ++h)
        for (size_t i = 0; i < grads[2 * q + h].size(); ++i) products[q].weight_grad[h][i] += grads[2 * q + h][i];
  };
  const int64_t threads = equinet::thread_count(num);
  std::vector<int64_t> bounds;
  for (int64_t i = 0; i <= threads; ++i) bounds.push_back(i * num / threads);
  equinet::run_ranges(bounds, rows);
}

}  // namespace

// factors[i] = [x [N, dim] (rows contiguous), index_even, matrix_even, scale_even, index_odd,
// matrix_odd, scale_odd]; products[q] = [index_even, matrix_even, scale_even, index_odd, matrix_odd,
// scale_odd, out, raw, weight_grad_even, weight_grad_odd] of factors first[q] and second[q] (a
// shared factor, of one channel, may be either), with sign[q]; outputs and raws [N, channels * D]
// contiguous. `groups` = 3 for the bracket (sum over j), else 1; `points` per group and half.
void gaunt_product(const std::vector<std::vector<torch::Tensor>>& factors,
                   const std::vector<std::vector<torch::Tensor>>& products, const std::vector<int64_t>& first,
                   const std::vector<int64_t>& second, const std::vector<double>& sign, int64_t channels,
                   int64_t groups, int64_t points) {
  AT_DISPATCH_FLOATING_TYPES(factors[0][0].scalar_type(), "gaunt_product", [&] {
    std::vector<Factor<scalar_t>> fs;
    for (const auto& f : factors) fs.emplace_back(f);
    std::vector<Product<scalar_t>> ps;
    for (size_t q = 0; q < products.size(); ++q) ps.emplace_back(products[q], first[q], second[q], sign[q]);
    const int64_t num = factors[0][0].size(0);
    if (channels >= 4)
      run<scalar_t, 4>(fs, ps, num, channels, groups, points);
    else
      run<scalar_t, 1>(fs, ps, num, channels, groups, points);
  });
}
