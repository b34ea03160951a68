// One decode step of δ-mem for one attention layer, fused for CPU float32.
//
// Decoding runs this once per layer for every generated token. The math is tiny (vectors of
// rank-many numbers), so in eager PyTorch its cost is ~30 operator dispatches from Python, not
// arithmetic. Here it is one loop per batch row, with no allocation but the outputs.
// deltamem_agents/core/layer.py (`DeltaMemoryLayer._decode_step` + `corrections`) is the
// definition this must equal; its gates are deltamem_agents/core/gates.py `write_gates`, the one
// Python definition of beta / lambda / keep / erase both Python paths share. Whether this step
// runs at all is decided once per forward by deltamem_agents/core/plan.py `choose_plan`.
// tests/ops/test_fused_decode.py checks that fused, eager step and scan agree.
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

enum UpdateMode : int64_t { kStandard = 0, kLambdaOutside = 1, kNoLambda = 2 };

// GCC and Clang on x86-64 Linux: an AVX2+FMA copy of the row loop besides the baseline one,
// picked when the library loads (safe wherever the built library is copied to).
#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#define DELTAMEM_MULTIVERSION __attribute__((target_clones("avx2,fma", "default")))
#else
#define DELTAMEM_MULTIVERSION
#endif

// <a, b> over n floats with eight partial sums, so the compiler can vectorise the loop.
inline float dot(const float* a, const float* b, int64_t n) {
  float part[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    for (int64_t l = 0; l < 8; ++l) part[l] += a[j + l] * b[j + l];
  }
  float total = ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7]));
  for (; j < n; ++j) total += a[j] * b[j];
  return total;
}

// Memory q/k: tanh, then unit L2 norm (F.normalize's eps), one rank-sized block at a time.
void normalize_blocks(float* z, int64_t blocks, int64_t rank, float eps) {
  for (int64_t b = 0; b < blocks; ++b, z += rank) {
    float sum_sq = 0.f;
    for (int64_t j = 0; j < rank; ++j) {
      z[j] = std::tanh(z[j]);
      sum_sq += z[j] * z[j];
    }
    const float norm = std::max(std::sqrt(sum_sq), eps);
    for (int64_t j = 0; j < rank; ++j) z[j] /= norm;
  }
}

struct Shapes {
  int64_t hidden, heads, rank, gates_per_head, read_dim, gate_dim, packed_rows, outputs;
  bool normalize, coupled;
  int64_t mode;
  float eps, scaling;
};

// One batch row: project, read, write, correct. `packed` is scratch of packed_rows floats.
// corrections: one pointer per delta head (its row of this batch row), widths in `widths`.
DELTAMEM_MULTIVERSION void decode_row(const Shapes& sh, const float* x, const float* w_in, const float* gate_bias, const float* w_delta,
                const float* state, bool live, float* packed, float* new_state, float* read,
                float* const* corrections, const int64_t* widths, int64_t n_heads) {
  for (int64_t o = 0; o < sh.packed_rows; ++o) packed[o] = dot(w_in + o * sh.hidden, x, sh.hidden);
  const int64_t d = sh.read_dim, rank = sh.rank;
  if (sh.normalize) normalize_blocks(packed, 2 * sh.heads, rank, sh.eps);  // q blocks then k blocks
  // Gates: mirrors deltamem_agents/core/gates.py `write_gates` (sigmoid(logit + bias); lambda =
  // 1 - beta coupled, else its own gate; keep / erase per update mode). Change both together.
  float* gate = packed + 3 * d;  // beta (then lambda) logits -> gates
  const int64_t n_gates = sh.coupled ? sh.gate_dim : 2 * sh.gate_dim;
  for (int64_t g = 0; g < n_gates; ++g) gate[g] = 1.f / (1.f + std::exp(-(gate[g] + gate_bias[g])));
  for (int64_t h = 0; h < sh.heads; ++h) {
    const float* q = packed + h * rank;
    const float* k = packed + d + h * rank;
    const float* v = packed + 2 * d + h * rank;
    const float* s = state + h * rank * rank;
    float* s_new = new_state + h * rank * rank;
    float* r = read + h * rank;
    for (int64_t i = 0; i < rank; ++i, s += rank, s_new += rank) {
      float s_q = 0.f, s_k = 0.f;  // row i of S times q and k (the read is before the write)
      for (int64_t j = 0; j < rank; ++j) {
        s_q += s[j] * q[j];
        s_k += s[j] * k[j];
      }
      if (!live) {
        r[i] = 0.f;
        std::copy(s, s + rank, s_new);
        continue;
      }
      r[i] = s_q;
      const int64_t g = h * sh.gates_per_head + (sh.gates_per_head == 1 ? 0 : i);
      const float beta = gate[g];
      float keep = 1.f, erase = beta;
      if (sh.mode != kNoLambda) {
        const float lam = sh.coupled ? 1.f - beta : gate[sh.gate_dim + g];
        keep = lam;
        erase = sh.mode == kLambdaOutside ? lam * beta : beta;
      }
      const float u = beta * v[i] - erase * s_k;  // S_i <- keep S_i + (beta v_i - erase (S k)_i) k^T
      for (int64_t j = 0; j < rank; ++j) s_new[j] = keep * s[j] + u * k[j];
    }
  }
  // corrections = (alpha / r) * W_delta read, scaled on the read side (d numbers, not outputs)
  float scaled[512];
  for (int64_t j = 0; j < d; ++j) scaled[j] = read[j] * sh.scaling;
  for (int64_t head = 0; head < n_heads; ++head) {
    float* out = corrections[head];
    for (int64_t o = 0; o < widths[head]; ++o, w_delta += d) out[o] = dot(w_delta, scaled, d);
  }
}

// A fresh CPU float32 tensor, without a trip through the dispatcher (this runs per token).
at::Tensor new_float_tensor(at::IntArrayRef sizes) {
  return at::detail::empty_cpu(sizes, at::kFloat, /*pin_memory=*/false, /*memory_format=*/std::nullopt);
}

}  // namespace

// step(w_in, gate_bias, w_delta, x, state, mask): x [B, 1, hidden] or [B, hidden]; w_in
// [P, hidden] (memory q, k, v rows, then beta and, uncoupled, lambda gate rows) and gate_bias
// [P - 3 H r]; w_delta [O, H r] (delta heads stacked, unscaled; `scaling` is alpha / r); state
// [B, H, r, r]; mask [B] or [B, 1] bool or None (False: read 0, keep the state). Returns
// (read [B, 1, H r], new_state, one correction [B, 1, n] per entry of split_sizes), or None
// where the tensors are not all CPU float32 (the caller then runs the eager step).
class DecodeStep {
 public:
  // One layer's fixed configuration, so a decode call passes only its six tensors (pybind's
  // argument conversion is a noticeable share of a call this small).
  DecodeStep(int64_t heads, int64_t rank, int64_t gates_per_head, bool normalize, bool coupled, int64_t mode,
             double eps, double scaling, std::vector<int64_t> split_sizes)
      : split_sizes_(std::move(split_sizes)) {
    TORCH_CHECK(heads > 0 && rank > 0 && (gates_per_head == 1 || gates_per_head == rank),
                "fused δ-mem decode: bad configuration");
    TORCH_CHECK(heads * rank <= 512, "fused δ-mem decode: at most 512 read dimensions (heads x rank)");
    sh_.heads = heads;
    sh_.rank = rank;
    sh_.gates_per_head = gates_per_head;
    sh_.read_dim = heads * rank;
    sh_.gate_dim = heads * gates_per_head;
    sh_.packed_rows = 3 * sh_.read_dim + (coupled ? 1 : 2) * sh_.gate_dim;
    sh_.outputs = 0;
    for (int64_t width : split_sizes_) sh_.outputs += width;
    sh_.normalize = normalize;
    sh_.coupled = coupled;
    sh_.mode = mode;
    sh_.eps = static_cast<float>(eps);
    sh_.scaling = static_cast<float>(scaling);
  }

  // The weights come first so Python can bind them once (functools.partial) per forward.
  pybind11::object operator()(const at::Tensor& w_in_t, const at::Tensor& bias_t, const at::Tensor& w_delta_t,
                              const at::Tensor& x_in, const at::Tensor& state_in,
                              const c10::optional<at::Tensor>& mask_in) const;

 private:
  Shapes sh_;
  std::vector<int64_t> split_sizes_;
};

pybind11::object DecodeStep::operator()(const at::Tensor& w_in_t, const at::Tensor& bias_t, const at::Tensor& w_delta_t,
                                        const at::Tensor& x_in, const at::Tensor& state_in,
                                        const c10::optional<at::Tensor>& mask_in) const {
  for (const at::Tensor* t : {&w_in_t, &bias_t, &w_delta_t, &state_in}) {
    if (t->scalar_type() != at::kFloat || !t->device().is_cpu()) return pybind11::none();
  }
  // a half-precision backbone's hidden states are widened here (one small copy per layer);
  // the corrections come back in float32 and the projection wrappers cast them
  const auto x_type = x_in.scalar_type();
  if (!x_in.device().is_cpu() || (x_type != at::kFloat && x_type != at::kBFloat16 && x_type != at::kHalf))
    return pybind11::none();
  Shapes sh = sh_;
  const int64_t batch = x_in.size(0);
  const int64_t heads = sh.heads, rank = sh.rank;
  sh.hidden = x_in.size(-1);
  TORCH_CHECK(x_in.numel() == batch * sh.hidden, "fused δ-mem decode: one token per row expected, got ", x_in.sizes());
  TORCH_CHECK(w_in_t.dim() == 2 && w_in_t.size(0) == sh.packed_rows && w_in_t.size(1) == sh.hidden,
              "fused δ-mem decode: memory projection has shape ", w_in_t.sizes(), ", not as configured");
  TORCH_CHECK(bias_t.numel() == sh.packed_rows - 3 * sh.read_dim, "fused δ-mem decode: gate bias has ",
              bias_t.numel(), " entries");
  TORCH_CHECK(w_delta_t.dim() == 2 && w_delta_t.size(0) == sh.outputs && w_delta_t.size(1) == sh.read_dim,
              "fused δ-mem decode: delta heads have shape ", w_delta_t.sizes());
  TORCH_CHECK(state_in.dim() == 4 && state_in.size(0) == batch && state_in.size(1) == heads &&
                  state_in.size(2) == rank && state_in.size(3) == rank,
              "fused δ-mem decode: state has shape ", state_in.sizes());

  const at::Tensor x = (x_type == at::kFloat ? x_in : x_in.to(at::kFloat)).contiguous();
  const at::Tensor state = state_in.contiguous();
  const at::Tensor w_in = w_in_t.contiguous(), bias = bias_t.contiguous(), w_delta = w_delta_t.contiguous();
  at::Tensor mask;
  const bool* live = nullptr;
  if (mask_in.has_value()) {
    mask = mask_in->scalar_type() == at::kBool ? mask_in->contiguous() : mask_in->to(at::kBool).contiguous();
    TORCH_CHECK(mask.numel() == batch, "fused δ-mem decode: mask has ", mask.numel(), " entries for ", batch, " rows");
    live = mask.data_ptr<bool>();
  }
  at::Tensor read = new_float_tensor({batch, 1, sh.read_dim});
  at::Tensor new_state = new_float_tensor(state.sizes());
  const int64_t n_heads = static_cast<int64_t>(split_sizes_.size());
  std::vector<at::Tensor> corrections;
  std::vector<float*> correction_data(n_heads);
  for (int64_t head = 0; head < n_heads; ++head) {
    corrections.push_back(new_float_tensor({batch, 1, split_sizes_[head]}));
    correction_data[head] = corrections.back().data_ptr<float>();
  }
  const float* x_data = x.data_ptr<float>();
  const float* w_in_data = w_in.data_ptr<float>();
  const float* bias_data = bias.data_ptr<float>();
  const float* w_delta_data = w_delta.data_ptr<float>();
  const float* state_data = state.data_ptr<float>();
  float* new_data = new_state.data_ptr<float>();
  float* read_data = read.data_ptr<float>();
  const int64_t state_size = heads * rank * rank;
  // rows are independent: a large batch spreads over torch's intra-op threads
  at::parallel_for(0, batch, 4, [&](int64_t begin, int64_t end) {
    std::vector<float> packed(sh.packed_rows);
    std::vector<float*> row_corrections(n_heads);
    for (int64_t b = begin; b < end; ++b) {
      for (int64_t head = 0; head < n_heads; ++head) row_corrections[head] = correction_data[head] + b * split_sizes_[head];
      decode_row(sh, x_data + b * sh.hidden, w_in_data, bias_data, w_delta_data, state_data + b * state_size,
                 live == nullptr || live[b], packed.data(), new_data + b * state_size, read_data + b * sh.read_dim,
                 row_corrections.data(), split_sizes_.data(), n_heads);
    }
  });

  pybind11::tuple out(2 + n_heads);
  out[0] = pybind11::cast(std::move(read));
  out[1] = pybind11::cast(std::move(new_state));
  for (int64_t head = 0; head < n_heads; ++head) out[2 + head] = pybind11::cast(std::move(corrections[head]));
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  pybind11::class_<DecodeStep>(m, "DecodeStep")
      .def(pybind11::init<int64_t, int64_t, int64_t, bool, bool, int64_t, double, double, std::vector<int64_t>>())
      .def("__call__", &DecodeStep::operator());
}
