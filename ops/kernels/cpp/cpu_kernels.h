// What the C++ CPU kernels (gaunt_cpp.cpp, so2_cpp.cpp) share: 64-byte vectors, prefetching and
// threads, and the functions bindings.cpp gives Python. See build.py.

#pragma once

#include <torch/types.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <thread>
#include <vector>

namespace equinet {

// 64 bytes of T (GCC's vector extension: one AVX-512 register, or two AVX2 ones), unaligned.
template <typename T>
struct Vector {
  typedef T type __attribute__((vector_size(64), aligned(sizeof(T))));
  static constexpr int64_t kLanes = 64 / sizeof(T);
};

// Asks for the `width` values at `row` to be brought into the cache.
template <typename T>
inline void prefetch_row(const T* row, int64_t width) {
  for (int64_t i = 0; i < width; i += Vector<T>::kLanes) __builtin_prefetch(row + i);
}

// Threads for `num` items: torch's thread count, at most one per 64 items.
inline int64_t thread_count(int64_t num) {
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), num / 64));
}

// Runs body(bounds[i], bounds[i + 1]) for every range, each on its own std::thread (the first
// on this one). at::parallel_for would need the extension built with OpenMP, a second OpenMP
// runtime beside torch's.
template <typename F>
void run_ranges(const std::vector<int64_t>& bounds, F&& body) {
  std::vector<std::thread> pool;
  for (size_t i = 1; i + 1 < bounds.size(); ++i)
    if (bounds[i] < bounds[i + 1]) pool.emplace_back(body, bounds[i], bounds[i + 1]);
  if (bounds.size() > 1 && bounds[0] < bounds[1]) body(bounds[0], bounds[1]);
  for (auto& thread : pool) thread.join();
}

}  // namespace equinet

// gaunt_cpp.cpp
void gaunt_product(const std::vector<std::vector<torch::Tensor>>& factors,
                   const std::vector<std::vector<torch::Tensor>>& products, const std::vector<int64_t>& first,
                   const std::vector<int64_t>& second, const std::vector<double>& sign, int64_t channels,
                   int64_t groups, int64_t points);

// so2_cpp.cpp
void so2_forward(const torch::Tensor& x, const torch::Tensor& entries, const torch::Tensor& weights,
                 const torch::Tensor& sender, const torch::Tensor& receiver, const torch::Tensor& order,
                 const torch::Tensor& rows_in, const torch::Tensor& factors_in, const torch::Tensor& terms,
                 const torch::Tensor& rows_out, const torch::Tensor& factors_out, torch::Tensor& out);
void so2_backward(const torch::Tensor& x, const torch::Tensor& entries, const torch::Tensor& weights,
                  const torch::Tensor& sender, const torch::Tensor& receiver, const torch::Tensor& order,
                  const torch::Tensor& rows_in, const torch::Tensor& factors_in, const torch::Tensor& terms,
                  const torch::Tensor& rows_out, const torch::Tensor& factors_out, const torch::Tensor& grad_out,
                  torch::Tensor& grad_x, torch::Tensor& grad_entries, torch::Tensor& grad_weights);
