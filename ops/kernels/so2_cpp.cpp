// The SO(2) convolution of eSCN on a CPU, fused per edge: gather the sender's features, rotate
// them into the edge frame, apply the SO(2) map with the edge's weights, rotate back and add to
// the receiver, with nothing per edge reaching memory but the output. See cpp_build.py and so2.py.
//
// Features are channels-last ([node, component, channel]), so every step is a sum of channel
// vectors times scalars: rotations take scalars from the edge's Wigner entries, the map takes
// channel vectors of weights. Tables from Python name the steps:
//   rows_in  [R_in, 3]:  (first component in x, 2l+1, first Wigner entry) of edge-frame row t,
//                        x̃[t] = factor_in[t] * sum_a D[entry + a] * x[sender, first + a]
//   terms    [T, 3]:     (row of ỹ, row of x̃, weight column), ỹ[row] += w[column] * x̃[row]
//   rows_out [R_out, 3]: (first component in out, 2l+1, first Wigner entry) of row t of ỹ,
//                        out[receiver, first + a] += factor_out[t] * D[entry + a] * ỹ[t]
// The backward pass runs the same tables the other way round.
//
// Threads take ranges of edges sorted by the node they write (receivers forward, senders
// backward), split where that node changes, so no two threads write one row.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <thread>
#include <vector>

namespace {

// 64 bytes of T (GCC's vector extension: one AVX-512 register, or two AVX2 ones), unaligned.
template <typename T>
struct Vector {
  typedef T type __attribute__((vector_size(64), aligned(sizeof(T))));
};

// y[c] += s * x[c], c < n.
template <typename T>
inline void axpy(T s, const T* __restrict x, T* __restrict y, int64_t n) {
  for (int64_t c = 0; c < n; ++c) y[c] += s * x[c];
}

// y[c] += a[c] * b[c], c < n.
template <typename T>
inline void multiply_add(const T* __restrict a, const T* __restrict b, T* __restrict y, int64_t n) {
  for (int64_t c = 0; c < n; ++c) y[c] += a[c] * b[c];
}

// sum_c a[c] * b[c], c < n.
template <typename T>
inline T dot(const T* a, const T* b, int64_t n) {
  using V = typename Vector<T>::type;
  constexpr int64_t kLanes = 64 / sizeof(T);
  V acc = {};
  int64_t c = 0;
  for (; c + kLanes <= n; c += kLanes) acc += *reinterpret_cast<const V*>(a + c) * *reinterpret_cast<const V*>(b + c);
  T sum = 0;
  for (int64_t i = 0; i < kLanes; ++i) sum += acc[i];
  for (; c < n; ++c) sum += a[c] * b[c];
  return sum;
}

template <typename T>
inline void prefetch(const T* row, int64_t width) {
  for (int64_t i = 0; i < width; i += 64 / sizeof(T)) __builtin_prefetch(row + i);
}

// A table row: first component (of x or out), its count (2l+1), first Wigner entry, factor.
template <typename T>
struct Row {
  int64_t first, size, entry;
  T factor;
};

template <typename T>
std::vector<Row<T>> rows_of(const torch::Tensor& table, const torch::Tensor& factors) {
  std::vector<Row<T>> rows;
  const int64_t* t = table.data_ptr<int64_t>();
  const double* f = factors.data_ptr<double>();
  for (int64_t i = 0; i < table.size(0); ++i) rows.push_back({t[3 * i], t[3 * i + 1], t[3 * i + 2], static_cast<T>(f[i])});
  return rows;
}

struct Term {
  int64_t out, in, column;
};

std::vector<Term> terms_of(const torch::Tensor& table) {
  std::vector<Term> terms;
  const int64_t* t = table.data_ptr<int64_t>();
  for (int64_t i = 0; i < table.size(0); ++i) terms.push_back({t[3 * i], t[3 * i + 1], t[3 * i + 2]});
  return terms;
}

// Runs body(begin, end) on torch's thread count over positions of `order` (edges sorted by
// target[edge]), each range ending where the target changes. (at::parallel_for would need this
// extension built with OpenMP, a second OpenMP runtime beside torch's.)
template <typename F>
void over_targets(const int64_t* order, const int64_t* target, int64_t num, F&& body) {
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), num / 64));
  if (threads == 1) {
    body(0, num);
    return;
  }
  std::vector<int64_t> bounds{0};
  for (int64_t i = 1; i < threads; ++i) {
    int64_t b = std::max(bounds.back(), i * num / threads);
    while (b > 0 && b < num && target[order[b]] == target[order[b - 1]]) ++b;
    bounds.push_back(b);
  }
  bounds.push_back(num);
  std::vector<std::thread> pool;
  for (int64_t i = 0; i < threads; ++i)
    if (bounds[i] < bounds[i + 1]) pool.emplace_back(body, bounds[i], bounds[i + 1]);
  for (auto& thread : pool) thread.join();
}

// The convolution's structure and inputs, shared by both passes.
template <typename T>
struct SO2 {
  std::vector<Row<T>> rows_in, rows_out;
  std::vector<Term> terms;
  const T *x, *entries, *weights;
  const int64_t *sender, *receiver;
  int64_t channels, x_width, out_width, num_entries, num_weights;

  SO2(const torch::Tensor& x_, const torch::Tensor& entries_, const torch::Tensor& weights_,
      const torch::Tensor& sender_, const torch::Tensor& receiver_, const torch::Tensor& rows_in_,
      const torch::Tensor& factors_in, const torch::Tensor& terms_, const torch::Tensor& rows_out_,
      const torch::Tensor& factors_out, int64_t out_components)
      : rows_in(rows_of<T>(rows_in_, factors_in)), rows_out(rows_of<T>(rows_out_, factors_out)),
        terms(terms_of(terms_)), x(x_.data_ptr<T>()), entries(entries_.data_ptr<T>()),
        weights(weights_.data_ptr<T>()), sender(sender_.data_ptr<int64_t>()),
        receiver(receiver_.data_ptr<int64_t>()), channels(x_.size(2)), x_width(x_.size(1) * x_.size(2)),
        out_width(out_components * x_.size(2)), num_entries(entries_.size(1)), num_weights(weights_.size(1)) {}

  // The edge-frame rows [rows, C] of a [component, C] row of nodes: x̃ from the sender's
  // features with rows_in, g_ỹ from the receiver's output gradient with rows_out,
  // frame[t] = factor[t] * sum_a D[entry + a] * row[first + a].
  void to_frame(const std::vector<Row<T>>& rows, const T* d, const T* row, T* frame) const {
    const int64_t C = channels;
    for (size_t t = 0; t < rows.size(); ++t) {
      const Row<T>& r = rows[t];
      T* out = frame + t * C;
      std::fill(out, out + C, T(0));
      if (r.factor == T(0)) continue;
      for (int64_t a = 0; a < r.size; ++a) axpy(r.factor * d[r.entry + a], row + (r.first + a) * C, out, C);
    }
  }

  // ỹ [R_out, C] = the SO(2) map of x̃ with the edge's weights w.
  void map(const T* w, const T* frame_in, T* frame_out) const {
    const int64_t C = channels;
    std::fill(frame_out, frame_out + rows_out.size() * C, T(0));
    for (const Term& term : terms) multiply_add(w + term.column * C, frame_in + term.in * C, frame_out + term.out * C, C);
  }

};

template <typename T>
void forward(const SO2<T>& so2, const int64_t* order, int64_t num_edges, T* out) {
  const int64_t C = so2.channels;
  over_targets(order, so2.receiver, num_edges, [&](int64_t begin, int64_t end) {
    std::vector<T> frame_in(so2.rows_in.size() * C), frame_out(so2.rows_out.size() * C);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t e = order[i];
      if (i + 1 < end) {  // edges are visited in scattered order: fetch the next one's rows meanwhile
        const int64_t next = order[i + 1];
        prefetch(so2.x + so2.sender[next] * so2.x_width, so2.x_width);
        prefetch(so2.weights + next * so2.num_weights, so2.num_weights);
      }
      const T* d = so2.entries + e * so2.num_entries;
      so2.to_frame(so2.rows_in, d, so2.x + so2.sender[e] * so2.x_width, frame_in.data());
      so2.map(so2.weights + e * so2.num_weights, frame_in.data(), frame_out.data());
      T* target = out + so2.receiver[e] * so2.out_width;
      for (size_t t = 0; t < so2.rows_out.size(); ++t) {
        const Row<T>& r = so2.rows_out[t];
        if (r.factor == T(0)) continue;
        for (int64_t a = 0; a < r.size; ++a) axpy(r.factor * d[r.entry + a], &frame_out[t * C], target + (r.first + a) * C, C);
      }
    }
  });
}

// Gradients from grad_out [N_out, out components, C]: of x (added at the senders), of the
// Wigner entries and of the weights (written per edge); an empty tensor is not computed.
template <typename T>
void backward(const SO2<T>& so2, const int64_t* order, int64_t num_edges, const T* grad_out, T* grad_x,
              T* grad_entries, T* grad_weights) {
  const int64_t C = so2.channels;
  over_targets(order, so2.sender, num_edges, [&](int64_t begin, int64_t end) {
    const int64_t r_in = so2.rows_in.size(), r_out = so2.rows_out.size();
    std::vector<T> frame_in(r_in * C), frame_out(r_out * C), grad_in(r_in * C), grad_frame_out(r_out * C);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t e = order[i];
      if (i + 1 < end) {
        const int64_t next = order[i + 1];
        prefetch(grad_out + so2.receiver[next] * so2.out_width, so2.out_width);
        prefetch(so2.weights + next * so2.num_weights, so2.num_weights);
      }
      const T* d = so2.entries + e * so2.num_entries;
      const T* w = so2.weights + e * so2.num_weights;
      const T* x = so2.x + so2.sender[e] * so2.x_width;
      const T* g = grad_out + so2.receiver[e] * so2.out_width;
      if (grad_weights || grad_entries) so2.to_frame(so2.rows_in, d, x, frame_in.data());
      so2.to_frame(so2.rows_out, d, g, grad_frame_out.data());
      if (grad_weights) {
        T* gw = grad_weights + e * so2.num_weights;
        std::fill(gw, gw + so2.num_weights, T(0));
        for (const Term& term : so2.terms)
          multiply_add(&grad_frame_out[term.out * C], &frame_in[term.in * C], gw + term.column * C, C);
      }
      if (!(grad_x || grad_entries)) continue;
      std::fill(grad_in.begin(), grad_in.end(), T(0));
      for (const Term& term : so2.terms) multiply_add(w + term.column * C, &grad_frame_out[term.out * C], &grad_in[term.in * C], C);
      if (grad_entries) {
        T* gd = grad_entries + e * so2.num_entries;
        std::fill(gd, gd + so2.num_entries, T(0));
        so2.map(w, frame_in.data(), frame_out.data());
        for (int64_t t = 0; t < r_in; ++t) {
          const Row<T>& r = so2.rows_in[t];
          if (r.factor == T(0)) continue;
          for (int64_t a = 0; a < r.size; ++a) gd[r.entry + a] += r.factor * dot(&grad_in[t * C], x + (r.first + a) * C, C);
        }
        for (int64_t t = 0; t < r_out; ++t) {
          const Row<T>& r = so2.rows_out[t];
          if (r.factor == T(0)) continue;
          for (int64_t a = 0; a < r.size; ++a) gd[r.entry + a] += r.factor * dot(&frame_out[t * C], g + (r.first + a) * C, C);
        }
      }
      if (grad_x) {
        T* gx = grad_x + so2.sender[e] * so2.x_width;
        for (int64_t t = 0; t < r_in; ++t) {
          const Row<T>& r = so2.rows_in[t];
          if (r.factor == T(0)) continue;
          for (int64_t a = 0; a < r.size; ++a) axpy(r.factor * d[r.entry + a], &grad_in[t * C], gx + (r.first + a) * C, C);
        }
      }
    }
  });
}

template <typename T>
T* pointer_or_null(const torch::Tensor& t) {
  return t.numel() > 0 ? t.data_ptr<T>() : nullptr;
}

}  // namespace

// x [N_in, components, C], entries [E, W], weights [E, columns * C], sender/receiver/order [E]
// (order: edges sorted by receiver), tables as above; out [N_out, out components, C] zeroed.
void so2_forward(const torch::Tensor& x, const torch::Tensor& entries, const torch::Tensor& weights,
                 const torch::Tensor& sender, const torch::Tensor& receiver, const torch::Tensor& order,
                 const torch::Tensor& rows_in, const torch::Tensor& factors_in, const torch::Tensor& terms,
                 const torch::Tensor& rows_out, const torch::Tensor& factors_out, torch::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "so2_forward", [&] {
    const SO2<scalar_t> so2(x, entries, weights, sender, receiver, rows_in, factors_in, terms, rows_out, factors_out,
                            out.size(1));
    forward<scalar_t>(so2, order.data_ptr<int64_t>(), sender.size(0), out.data_ptr<scalar_t>());
  });
}

// As so2_forward, with order sorted by sender; grad_x [N_in, components, C] zeroed, grad_entries
// [E, W] and grad_weights [E, columns * C] (written whole), each empty when not wanted.
void so2_backward(const torch::Tensor& x, const torch::Tensor& entries, const torch::Tensor& weights,
                  const torch::Tensor& sender, const torch::Tensor& receiver, const torch::Tensor& order,
                  const torch::Tensor& rows_in, const torch::Tensor& factors_in, const torch::Tensor& terms,
                  const torch::Tensor& rows_out, const torch::Tensor& factors_out, const torch::Tensor& grad_out,
                  torch::Tensor& grad_x, torch::Tensor& grad_entries, torch::Tensor& grad_weights) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "so2_backward", [&] {
    const SO2<scalar_t> so2(x, entries, weights, sender, receiver, rows_in, factors_in, terms, rows_out, factors_out,
                            grad_out.size(1));
    backward<scalar_t>(so2, order.data_ptr<int64_t>(), sender.size(0), grad_out.data_ptr<scalar_t>(),
                       pointer_or_null<scalar_t>(grad_x), pointer_or_null<scalar_t>(grad_entries),
                       pointer_or_null<scalar_t>(grad_weights));
  });
}

// Other Python threads may run meanwhile: the kernel touches no Python object.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("so2_forward", &so2_forward, "SO(2) convolution (CPU)", py::call_guard<py::gil_scoped_release>());
  m.def("so2_backward", &so2_backward, "its gradients (CPU)", py::call_guard<py::gil_scoped_release>());
}
