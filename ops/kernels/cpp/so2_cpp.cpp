// The SO(2) convolution of eSCN on a CPU, fused per edge: gather the sender's features, rotate
// them into the edge frame, apply the SO(2) map with the edge's weights, rotate back and add to
// the receiver, with nothing per edge reaching memory but the output. See build.py and so2.py.
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
// Channels come in whole 64-byte vectors (Python pads them). An edge is done one slab of 1, 2
// or 4 vectors of channels at a time, every sum of the slab held in registers until it is stored.
//
// Threads take ranges of edges sorted by the node they write (receivers forward, senders
// backward), split where that node changes, so no two threads write one row.

#include "cpu_kernels.h"

#include <sys/mman.h>

#include <cstring>

namespace {

using equinet::prefetch_row;
using equinet::Vector;

// A slab of NV vectors: channels c0 .. c0 + NV * kLanes of one row, kept in registers while it
// accumulates, so that each sum reaches memory once.
template <typename T, int NV>
struct Slab {
  using V = typename Vector<T>::type;
  static constexpr int64_t kWidth = NV * Vector<T>::kLanes;
  V v[NV];

  Slab() : v{} {}
  static const V& at(const T* p, int i) { return reinterpret_cast<const V*>(p)[i]; }
  void add(T s, const T* x) {  // += s * x
    for (int i = 0; i < NV; ++i) v[i] += s * at(x, i);
  }
  void add(const T* a, const T* b) {  // += a * b
    for (int i = 0; i < NV; ++i) v[i] += at(a, i) * at(b, i);
  }
  void store(T* y) const {
    for (int i = 0; i < NV; ++i) reinterpret_cast<V*>(y)[i] = v[i];
  }
  void add_to(T* y) const {
    for (int i = 0; i < NV; ++i) reinterpret_cast<V*>(y)[i] += v[i];
  }
};

// sum_c a[c] * b[c] over one slab, the lanes added as a tree.
template <typename T, int NV>
inline T dot(const T* a, const T* b) {
  using V = typename Vector<T>::type;
  V sum = Slab<T, NV>::at(a, 0) * Slab<T, NV>::at(b, 0);
  for (int i = 1; i < NV; ++i) sum += Slab<T, NV>::at(a, i) * Slab<T, NV>::at(b, i);
  typedef T Half __attribute__((vector_size(32)));
  typedef T Quarter __attribute__((vector_size(16)));
  Half h[2];
  std::memcpy(h, &sum, sizeof(sum));
  const Half half = h[0] + h[1];
  Quarter q[2];
  std::memcpy(q, &half, sizeof(half));
  const Quarter quarter = q[0] + q[1];
  T total = 0;
  for (size_t i = 0; i < sizeof(Quarter) / sizeof(T); ++i) total += quarter[i];
  return total;
}

// An edge-frame row: its segment's first component (in x or out) and count (2l+1), its first
// Wigner entry and factor.
template <typename T>
struct Row {
  int64_t first, size, entry;
  T factor;
};

// A segment: its first component and count, and its rows [begin, end).
struct Segment {
  int64_t first, size, begin, end;
};

struct Term {
  int64_t out, in, column;
};

// The convolution's tables and inputs, shared by both passes. Terms are grouped three ways:
// by row of ỹ (the map), by row of x̃ (its transpose) and by weight column (weight gradients).
template <typename T>
struct SO2 {
  std::vector<Row<T>> rows_in, rows_out;
  std::vector<Segment> segments_in, segments_out;
  std::vector<std::vector<Term>> by_out, by_in, by_column;
  const T *x, *entries, *weights;
  const int64_t *sender, *receiver;
  int64_t channels, x_width, out_width, num_entries, num_weights;

  SO2(const torch::Tensor& x_, const torch::Tensor& entries_, const torch::Tensor& weights_,
      const torch::Tensor& sender_, const torch::Tensor& receiver_, const torch::Tensor& rows_in_,
      const torch::Tensor& factors_in, const torch::Tensor& terms, const torch::Tensor& rows_out_,
      const torch::Tensor& factors_out, int64_t out_components)
      : rows_in(rows_of(rows_in_, factors_in)), rows_out(rows_of(rows_out_, factors_out)),
        x(x_.data_ptr<T>()), entries(entries_.data_ptr<T>()), weights(weights_.data_ptr<T>()),
        sender(sender_.data_ptr<int64_t>()), receiver(receiver_.data_ptr<int64_t>()), channels(x_.size(2)),
        x_width(x_.size(1) * x_.size(2)), out_width(out_components * x_.size(2)), num_entries(entries_.size(1)),
        num_weights(weights_.size(1)) {
    segments_in = segments_of(rows_in);
    segments_out = segments_of(rows_out);
    by_out.resize(rows_out.size());
    by_in.resize(rows_in.size());
    by_column.resize(num_weights / channels);
    const int64_t* t = terms.data_ptr<int64_t>();
    for (int64_t i = 0; i < terms.size(0); ++i) {
      const Term term{t[3 * i], t[3 * i + 1], t[3 * i + 2]};
      by_out[term.out].push_back(term);
      by_in[term.in].push_back(term);
      by_column[term.column].push_back(term);
    }
  }

  static std::vector<Row<T>> rows_of(const torch::Tensor& table, const torch::Tensor& factors) {
    std::vector<Row<T>> rows;
    const int64_t* t = table.data_ptr<int64_t>();
    const double* f = factors.data_ptr<double>();
    for (int64_t i = 0; i < table.size(0); ++i)
      rows.push_back({t[3 * i], t[3 * i + 1], t[3 * i + 2], static_cast<T>(f[i])});
    return rows;
  }

  // Consecutive rows of one segment (same first component) grouped.
  static std::vector<Segment> segments_of(const std::vector<Row<T>>& rows) {
    std::vector<Segment> segments;
    for (size_t t = 0; t < rows.size(); ++t) {
      if (t == 0 || rows[t].first != rows[t - 1].first) segments.push_back({rows[t].first, rows[t].size, int64_t(t), int64_t(t)});
      segments.back().end = t + 1;
    }
    return segments;
  }

  // Adds the rows of a frame [rows][slab] back to a node row [component][C]:
  // node[first + a] += sum over the segment's rows t of factor[t] * D[entry_t + a] * frame[t]
  // (messages to the receiver with rows_out, the features' gradient at the sender with rows_in).
  template <int NV>
  void from_frame(const std::vector<Row<T>>& rows, const std::vector<Segment>& segments, const T* d,
                  const T* frame, T* node) const {
    for (const Segment& segment : segments)
      for (int64_t a = 0; a < segment.size; ++a) {
        Slab<T, NV> acc;
        for (int64_t t = segment.begin; t < segment.end; ++t) {
          const Row<T>& r = rows[t];
          if (r.factor != T(0)) acc.add(r.factor * d[r.entry + a], frame + t * Slab<T, NV>::kWidth);
        }
        acc.add_to(node + (segment.first + a) * channels);
      }
  }

  // Edge-frame rows [rows][slab] of a node row [component][C]: x̃ from the
  // sender's features with rows_in, g_ỹ from the receiver's output gradient with rows_out,
  // frame[t] = factor[t] * sum_a D[entry + a] * row[first + a].
  template <int NV>
  void to_frame(const std::vector<Row<T>>& rows, const T* d, const T* row, T* frame) const {
    for (size_t t = 0; t < rows.size(); ++t) {
      const Row<T>& r = rows[t];
      Slab<T, NV> acc;
      if (r.factor != T(0))
        for (int64_t a = 0; a < r.size; ++a) acc.add(r.factor * d[r.entry + a], row + (r.first + a) * channels);
      acc.store(frame + t * Slab<T, NV>::kWidth);
    }
  }

  // ỹ [R_out][slab] = the SO(2) map of x̃ with the edge's weights w. Node rows and weights
  // are passed at the slab's first channel.
  template <int NV>
  void map(const T* w, const T* frame_in, T* frame_out) const {
    constexpr int64_t S = Slab<T, NV>::kWidth;
    for (size_t r = 0; r < by_out.size(); ++r) {
      Slab<T, NV> acc;
      for (const Term& term : by_out[r]) acc.add(w + term.column * channels, frame_in + term.in * S);
      acc.store(frame_out + r * S);
    }
  }
};

// Runs body(begin, end) over positions of `order` (edges sorted by target[edge]) on torch's
// thread count, each range ending where the target changes.
template <typename F>
void over_targets(const int64_t* order, const int64_t* target, int64_t num, F&& body) {
  const int64_t threads = equinet::thread_count(num);
  std::vector<int64_t> bounds{0};
  for (int64_t i = 1; i < threads; ++i) {
    int64_t b = std::max(bounds.back(), i * num / threads);
    while (b > 0 && b < num && target[order[b]] == target[order[b - 1]]) ++b;
    bounds.push_back(b);
  }
  bounds.push_back(num);
  equinet::run_ranges(bounds, body);
}

template <typename T, int NV>
void forward(const SO2<T>& so2, const int64_t* order, int64_t num_edges, T* out) {
  constexpr int64_t S = Slab<T, NV>::kWidth;
  over_targets(order, so2.receiver, num_edges, [&](int64_t begin, int64_t end) {
    std::vector<T> frame_in(so2.rows_in.size() * S), frame_out(so2.rows_out.size() * S);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t e = order[i];
      if (i + 1 < end) {  // edges are visited in scattered order: fetch the next one's rows meanwhile
        const int64_t next = order[i + 1];
        prefetch_row(so2.x + so2.sender[next] * so2.x_width, so2.x_width);
        prefetch_row(so2.weights + next * so2.num_weights, so2.num_weights);
      }
      const T* d = so2.entries + e * so2.num_entries;
      for (int64_t c0 = 0; c0 < so2.channels; c0 += S) {
        so2.template to_frame<NV>(so2.rows_in, d, so2.x + so2.sender[e] * so2.x_width + c0, frame_in.data());
        so2.template map<NV>(so2.weights + e * so2.num_weights + c0, frame_in.data(), frame_out.data());
        so2.template from_frame<NV>(so2.rows_out, so2.segments_out, d, frame_out.data(),
                                    out + so2.receiver[e] * so2.out_width + c0);
      }
    }
  });
}

// Gradients from grad_out [N_out, out components, C]: of x (added at the senders), of the
// Wigner entries and of the weights (written per edge); a null pointer is not computed.
template <typename T, int NV>
void backward(const SO2<T>& so2, const int64_t* order, int64_t num_edges, const T* grad_out, T* grad_x,
              T* grad_entries, T* grad_weights) {
  constexpr int64_t S = Slab<T, NV>::kWidth;
  const int64_t C = so2.channels;
  over_targets(order, so2.sender, num_edges, [&](int64_t begin, int64_t end) {
    const int64_t r_in = so2.rows_in.size(), r_out = so2.rows_out.size();
    std::vector<T> frame_in(r_in * S), frame_out(r_out * S), grad_in(r_in * S), grad_frame_out(r_out * S);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t e = order[i];
      if (i + 1 < end) {
        const int64_t next = order[i + 1];
        prefetch_row(grad_out + so2.receiver[next] * so2.out_width, so2.out_width);
        prefetch_row(so2.weights + next * so2.num_weights, so2.num_weights);
      }
      const T* d = so2.entries + e * so2.num_entries;
      T* gd = grad_entries ? grad_entries + e * so2.num_entries : nullptr;
      if (gd) std::fill(gd, gd + so2.num_entries, T(0));
      for (int64_t c0 = 0; c0 < C; c0 += S) {
        const T* w = so2.weights + e * so2.num_weights + c0;
        const T* x = so2.x + so2.sender[e] * so2.x_width + c0;
        const T* g = grad_out + so2.receiver[e] * so2.out_width + c0;
        if (grad_weights || gd) so2.template to_frame<NV>(so2.rows_in, d, x, frame_in.data());
        so2.template to_frame<NV>(so2.rows_out, d, g, grad_frame_out.data());
        if (grad_weights) {
          T* gw = grad_weights + e * so2.num_weights + c0;
          for (size_t column = 0; column < so2.by_column.size(); ++column) {
            Slab<T, NV> acc;
            for (const Term& term : so2.by_column[column]) acc.add(&grad_frame_out[term.out * S], &frame_in[term.in * S]);
            acc.store(gw + column * C);
          }
        }
        if (!(grad_x || gd)) continue;
        for (int64_t t = 0; t < r_in; ++t) {
          Slab<T, NV> acc;
          for (const Term& term : so2.by_in[t]) acc.add(w + term.column * C, &grad_frame_out[term.out * S]);
          acc.store(&grad_in[t * S]);
        }
        if (gd) {
          so2.template map<NV>(w, frame_in.data(), frame_out.data());
          for (int64_t t = 0; t < r_in; ++t) {
            const Row<T>& r = so2.rows_in[t];
            if (r.factor == T(0)) continue;
            for (int64_t a = 0; a < r.size; ++a) gd[r.entry + a] += r.factor * dot<T, NV>(&grad_in[t * S], x + (r.first + a) * C);
          }
          for (int64_t t = 0; t < r_out; ++t) {
            const Row<T>& r = so2.rows_out[t];
            if (r.factor == T(0)) continue;
            for (int64_t a = 0; a < r.size; ++a) gd[r.entry + a] += r.factor * dot<T, NV>(&frame_out[t * S], g + (r.first + a) * C);
          }
        }
        if (grad_x)
          so2.template from_frame<NV>(so2.rows_in, so2.segments_in, d, grad_in.data(), grad_x + so2.sender[e] * so2.x_width + c0);
      }
    }
  });
}

// Calls f.template operator()<NV>() with the slab width that divides the channels (a multiple
// of one vector): 4 vectors, else 2, else 1.
template <typename T, typename F>
void with_slab(int64_t channels, F&& f) {
  constexpr int64_t L = Vector<T>::kLanes;
  TORCH_CHECK(channels % L == 0, "so2_cpp: channels must be a multiple of ", L, " (pad them), got ", channels);
  if (channels % (4 * L) == 0)
    f.template operator()<4>();
  else if (channels % (2 * L) == 0)
    f.template operator()<2>();
  else
    f.template operator()<1>();
}

// Asks the kernel to back the untouched memory of t with huge pages: the weight gradients are
// hundreds of MB written once, and taking them in 4 kB page faults costs more than computing them.
void advise_huge_pages(const torch::Tensor& t) {
#ifdef MADV_HUGEPAGE
  constexpr uintptr_t kHuge = uintptr_t(1) << 21;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(t.data_ptr()) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(t.data_ptr()) + t.nbytes()) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);  // advice: failure is harmless
#endif
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
    with_slab<scalar_t>(so2.channels, [&]<int NV>() {
      forward<scalar_t, NV>(so2, order.data_ptr<int64_t>(), sender.size(0), out.data_ptr<scalar_t>());
    });
  });
}

// As so2_forward, with order sorted by sender; grad_x [N_in, components, C] zeroed, grad_entries
// [E, W] and grad_weights [E, columns * C] (written whole), each empty when not wanted.
void so2_backward(const torch::Tensor& x, const torch::Tensor& entries, const torch::Tensor& weights,
                  const torch::Tensor& sender, const torch::Tensor& receiver, const torch::Tensor& order,
                  const torch::Tensor& rows_in, const torch::Tensor& factors_in, const torch::Tensor& terms,
                  const torch::Tensor& rows_out, const torch::Tensor& factors_out, const torch::Tensor& grad_out,
                  torch::Tensor& grad_x, torch::Tensor& grad_entries, torch::Tensor& grad_weights) {
  if (grad_weights.numel() > 0) advise_huge_pages(grad_weights);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "so2_backward", [&] {
    const SO2<scalar_t> so2(x, entries, weights, sender, receiver, rows_in, factors_in, terms, rows_out, factors_out,
                            grad_out.size(1));
    with_slab<scalar_t>(so2.channels, [&]<int NV>() {
      backward<scalar_t, NV>(so2, order.data_ptr<int64_t>(), sender.size(0), grad_out.data_ptr<scalar_t>(),
                             pointer_or_null<scalar_t>(grad_x), pointer_or_null<scalar_t>(grad_entries),
                             pointer_or_null<scalar_t>(grad_weights));
    });
  });
}
