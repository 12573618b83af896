// onebit/csrc/bindings.cpp
// pybind11 module onebit.kernels._core: NumPy-facing entry points of the C++ core.
// Every entry point validates dtype / shape / C-contiguity / alignment of its arrays and
// raises ValueError (std::invalid_argument) on bad input, then releases the GIL and runs
// the dispatched ISA path. Conventions (fixed, see onebit.kernels docs):
//   bit = 1 <=> value -1 (x < 0), +1 <=> bit 0; channels packed LSB-first in uint64 words
//   along the last (NHWC channel) axis; tail bits 0;  dot = K - 2*popcount(a XOR b).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "bconv/bconv.h"
#include "bconv/bmaxpool.h"
#include "bitpack/bitpack.h"
#include "common/isa.h"
#include "common/peak.h"
#include "common/thread_pool.h"
#include "elementwise/affine.h"
#include "elementwise/layout.h"
#include "elementwise/pool.h"
#include "fgemm/fgemm.h"
#include "igemm/igemm.h"

namespace py = pybind11;
using namespace onebit;

namespace {

[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument(msg); }

std::string shape_str(const py::array& a) {
  std::ostringstream s;
  s << "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.shape(i);
  if (a.ndim() == 1) s << ",";
  s << ")";
  return s.str();
}

template <class T>
const char* dtype_name();
template <> const char* dtype_name<float>() { return "float32"; }
template <> const char* dtype_name<uint64_t>() { return "uint64"; }
template <> const char* dtype_name<int32_t>() { return "int32"; }
template <> const char* dtype_name<uint8_t>() { return "uint8"; }
template <> const char* dtype_name<int8_t>() { return "int8"; }

// Checks that obj is a C-contiguous, aligned ndarray of dtype T (and ndim if >= 0).
template <class T>
py::array as_array(const py::object& obj, const char* name, int ndim = -1, bool writeable = false) {
  if (!py::isinstance<py::array>(obj))
    fail(std::string(name) + " must be a numpy.ndarray, got " +
         std::string(py::str(py::type::of(obj).attr("__name__"))));
  py::array a = py::reinterpret_borrow<py::array>(obj);
  if (!a.dtype().equal(py::dtype::of<T>()))
    fail(std::string(name) + " must have dtype " + dtype_name<T>() + ", got " +
         std::string(py::str(a.dtype())));
  if (ndim >= 0 && a.ndim() != ndim)
    fail(std::string(name) + " must be " + std::to_string(ndim) + "-D, got shape " + shape_str(a));
  if (!(a.flags() & py::array::c_style))
    fail(std::string(name) + " must be C-contiguous (use numpy.ascontiguousarray)");
  if (!(a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_))
    fail(std::string(name) + " must be aligned");
  if (writeable && !(a.flags() & py::detail::npy_api::NPY_ARRAY_WRITEABLE_))
    fail(std::string(name) + " must be writeable");
  return a;
}

void check_shape(const py::array& a, const char* name, const std::vector<int64_t>& want) {
  bool ok = a.ndim() == static_cast<py::ssize_t>(want.size());
  for (size_t i = 0; ok && i < want.size(); ++i) ok = a.shape(i) == want[i];
  if (!ok) {
    std::ostringstream s;
    s << name << " must have shape (";
    for (size_t i = 0; i < want.size(); ++i) s << (i ? ", " : "") << want[i];
    if (want.size() == 1) s << ",";
    s << "), got " << shape_str(a);
    fail(s.str());
  }
}

bool overlaps(const py::array& a, const py::array& b) {
  const char* pa = static_cast<const char*>(a.data());
  const char* pb = static_cast<const char*>(b.data());
  return a.nbytes() > 0 && b.nbytes() > 0 && pa < pb + b.nbytes() && pb < pa + a.nbytes();
}

int check_int(int64_t v, const char* name, int64_t lo, int64_t hi = (1LL << 30)) {
  if (v < lo || v > hi) {
    std::ostringstream s;
    s << name << " must be in [" << lo << ", " << hi << "], got " << v;
    fail(s.str());
  }
  return static_cast<int>(v);
}

// An optional float32 array of the given shape (a per-channel scale, mult or bias: {n}; a residual:
// the output's shape): nullptr for None. `keep` holds the validated array while the pointer is used.
const float* optional_f32(const py::object& obj, const char* name, const std::vector<int64_t>& shape,
                          py::array& keep) {
  if (obj.is_none()) return nullptr;
  keep = as_array<float>(obj, name, static_cast<int>(shape.size()));
  check_shape(keep, name, shape);
  return static_cast<const float*>(keep.data());
}

// The float32 output of a kernel: a new array of `shape`, or the caller's `out` of that shape, which must
// share no byte with any of `inputs` (a kernel writing over what it still reads gives garbage).
py::array float_output(const py::object& out_obj, const std::vector<int64_t>& shape,
                       std::initializer_list<const py::array*> inputs) {
  if (out_obj.is_none()) return py::array_t<float>(std::vector<py::ssize_t>(shape.begin(), shape.end()));
  py::array out = as_array<float>(out_obj, "out", static_cast<int>(shape.size()), true);
  check_shape(out, "out", shape);
  for (const py::array* a : inputs)
    if (a && overlaps(out, *a)) fail("out must not overlap the input or the residual");
  return out;
}

// The float block product's path for `path` ("auto": AVX-512 when the active ISA path is avx512,
// AVX2 + FMA when it is avx2 or avx512 without AVX-512F, else portable).
FloatPath float_path(const std::string& path) {
  if (path == "auto") {
    if (current_isa() == Isa::Portable) return FloatPath::Portable;
    if (current_isa() == Isa::Avx512 && fgemm_avx512_usable()) return FloatPath::Avx512;
    return fgemm_avx2_usable() ? FloatPath::Avx2 : FloatPath::Portable;
  }
  if (path == "avx512") {
    if (!fgemm_avx512_usable()) fail("the AVX-512 path is not available on this CPU/OS");
    return FloatPath::Avx512;
  }
  if (path == "avx2") {
    if (!fgemm_avx2_usable()) fail("the AVX2 + FMA path is not available on this CPU/OS");
    return FloatPath::Avx2;
  }
  if (path != "portable") fail("path must be 'auto', 'avx512', 'avx2' or 'portable', got '" + path + "'");
  return FloatPath::Portable;
}

// The conv geometry of an NHWC float input x (N, H, W, C) for weights of K = kh·kw·C columns.
IConvGeom float_conv_geom(const py::array& x, const std::vector<int>& kernel, const std::vector<int>& stride,
                          const std::vector<int>& padding, int64_t K) {
  if (kernel.size() != 2 || stride.size() != 2 || padding.size() != 2)
    fail("kernel, stride and padding must each have two values");
  IConvGeom g{check_int(x.shape(0), "N", 0), check_int(x.shape(1), "H", 1), check_int(x.shape(2), "W", 1),
              check_int(x.shape(3), "C", 1), kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1]};
  if (g.kh < 1 || g.kw < 1 || g.sh < 1 || g.sw < 1 || g.ph < 0 || g.pw < 0)
    fail("kernel and stride must be >= 1 and padding >= 0");
  if (g.kh > 1024 || g.kw > 1024 || g.sh > (1 << 16) || g.sw > (1 << 16) || g.ph > (1 << 16) || g.pw > (1 << 16))
    fail("kernel must be at most 1024 and stride and padding at most 65536");
  if (int64_t(g.H) + 2 * int64_t(g.ph) < g.kh || int64_t(g.W) + 2 * int64_t(g.pw) < g.kw)
    fail("the kernel is larger than the padded input");
  if (static_cast<int64_t>(g.kh) * g.kw * g.C != K)
    fail("w has K = " + std::to_string(K) + " but kernel x C_in = " + std::to_string(g.kh * g.kw * g.C));
  return g;
}

// Checks a pooling window geometry; `what` names the pool ("pool " for a fused one, "" alone) and
// `input` what it reads, for the messages.
void check_pool_geom(const PoolGeom& g, const std::string& what, const std::string& input) {
  if (g.kh < 1 || g.kw < 1 || g.sh < 1 || g.sw < 1 || g.ph < 0 || g.pw < 0 || g.OH < 1 || g.OW < 1)
    fail(what + "kernel, stride and output size must be >= 1 and padding >= 0");
  if (2 * g.ph > g.kh || 2 * g.pw > g.kw) fail(what + "padding must be at most half the kernel");
  if ((g.OH - 1) * g.sh - g.ph >= g.H || (g.OW - 1) * g.sw - g.pw >= g.W)
    fail("the last " + what + "window starts outside " + input);
}

// The int8 GEMM path: AMX-INT8 or the portable one.
bool int8_path_is_amx(const std::string& path) {
  if (path == "auto") return amx_int8_usable();
  if (path == "amx") {
    if (!amx_int8_usable()) fail("the AMX-INT8 path is not available on this CPU/OS");
    return true;
  }
  if (path != "portable") fail("path must be 'auto', 'amx' or 'portable', got '" + path + "'");
  return false;
}

std::pair<int, int> check_pair(const std::pair<int64_t, int64_t>& p, const char* name, int64_t lo) {
  constexpr int64_t hi = int64_t(1) << 16;  // strides / paddings / pool windows
  return {check_int(p.first, name, lo, hi), check_int(p.second, name, lo, hi)};
}

int parse_mode(const std::string& s) {
  if (s == "int") return kModeInt;
  if (s == "float") return kModeFloat;
  if (s == "bits") return kModeBits;
  fail("output must be one of 'int', 'float', 'bits', got '" + s + "'");
}

struct EpilogueArgs {
  py::object mult, bias, residual, thresh, flip;
};

// Validates the per-channel transform arrays and builds the padded epilogue.
Epilogue build_epilogue(const ConvWeights& W, int mode, const EpilogueArgs& ea) {
  auto given = [](const py::object& o) { return !o.is_none(); };
  if (mode != kModeFloat && (given(ea.mult) || given(ea.bias) || given(ea.residual)))
    fail("mult / bias / residual are only used with output='float'");
  if (mode != kModeBits && (given(ea.thresh) || given(ea.flip)))
    fail("thresh / flip are only used with output='bits'");
  const float* mult = nullptr;
  const float* bias = nullptr;
  const int32_t* thresh = nullptr;
  const uint8_t* flip = nullptr;
  py::array a;
  mult = optional_f32(ea.mult, "mult", {W.cout}, a);
  bias = optional_f32(ea.bias, "bias", {W.cout}, a);
  if (mode == kModeBits) {
    if (!given(ea.thresh)) fail("output='bits' requires thresh (int32, one per output channel)");
    a = as_array<int32_t>(ea.thresh, "thresh", 1);
    check_shape(a, "thresh", {W.cout});
    thresh = static_cast<const int32_t*>(a.data());
    if (given(ea.flip)) {
      py::object f = ea.flip;
      if (py::isinstance<py::array>(f) &&
          py::reinterpret_borrow<py::array>(f).dtype().equal(py::dtype::of<bool>()))
        f = f.attr("view")(py::dtype::of<uint8_t>());
      a = as_array<uint8_t>(f, "flip", 1);
      check_shape(a, "flip", {W.cout});
      flip = static_cast<const uint8_t*>(a.data());
    }
  }
  // (the arrays stay alive: they are referenced by the caller's arguments)
  return make_epilogue(W, mode, mult, bias, thresh, flip);
}

// Runs the conv on a validated 4-D packed input; returns the output array.
// With signs (FLOAT only) *signs receives the packed signs of the output, (.., ceil(cout/64)) uint64.
py::array run_conv(const ConvWeights& W, const ConvGeom& g, const Epilogue& e, const py::array& x,
                   const py::object& residual_obj, const py::object& out_obj, int threads,
                   bool gemm, ConvTableCache* cache, py::array* signs = nullptr) {
  // x: (N, H, W, kwin) for conv, (M, kwin) for gemm (viewed as N=1, H=1, W=M)
  int64_t N, H, Wd;
  if (gemm) {
    N = 1; H = 1; Wd = x.shape(0);
  } else {
    N = x.shape(0); H = x.shape(1); Wd = x.shape(2);
  }
  if (x.shape(x.ndim() - 1) != W.kwin) {
    std::ostringstream s;
    s << (gemm ? "a" : "x") << " has " << x.shape(x.ndim() - 1) << " words per "
      << (gemm ? "row" : "pixel") << " but the weights have c_in=" << W.cin << " (= " << W.kwin
      << " words)";
    fail(s.str());
  }
  check_int(H, "input height", 0, (1LL << 24));
  check_int(Wd, gemm ? "M" : "input width", 0, gemm ? (1LL << 30) : (1LL << 24));
  const int64_t Hp = H + 2 * g.ph, Wp = Wd + 2 * g.pw;
  if (!gemm && (Hp < W.kh || Wp < W.kw)) {  // (gemm weights are 1x1: any M >= 0 is fine)
    std::ostringstream s;
    s << "input " << H << "x" << Wd << " (padded " << Hp << "x" << Wp << ") is smaller than the kernel "
      << W.kh << "x" << W.kw;
    fail(s.str());
  }
  const int OH = conv_out_size(static_cast<int>(H), W.kh, g.sh, g.ph);
  const int OW = conv_out_size(static_cast<int>(Wd), W.kw, g.sw, g.pw);
  if (!gemm && static_cast<int64_t>(OH) * OW >= (int64_t(1) << 31))  // the kernels index pixels as int
    fail("output map " + std::to_string(OH) + "x" + std::to_string(OW) + " has 2^31 or more pixels");
  std::vector<int64_t> oshape;
  const int64_t last = e.mode == kModeBits ? (W.cout + 63) / 64 : W.cout;
  if (gemm) oshape = {OW, last};
  else oshape = {N, OH, OW, last};

  const float* residual = nullptr;
  py::array res;
  if (!residual_obj.is_none()) {
    res = as_array<float>(residual_obj, "residual");
    std::vector<int64_t> rs = oshape;
    rs.back() = W.cout;
    check_shape(res, "residual", rs);
    residual = static_cast<const float*>(res.data());
  }
  py::array out;
  if (!out_obj.is_none()) {
    if (e.mode == kModeInt) out = as_array<int32_t>(out_obj, "out", -1, true);
    else if (e.mode == kModeFloat) out = as_array<float>(out_obj, "out", -1, true);
    else out = as_array<uint64_t>(out_obj, "out", -1, true);
    check_shape(out, "out", oshape);
    if (overlaps(out, x)) fail("out must not overlap the input");
    if (residual && overlaps(out, res) && out.data() != res.data())
      fail("out may alias residual exactly but not partially overlap it");
  } else {
    std::vector<py::ssize_t> sh(oshape.begin(), oshape.end());
    if (e.mode == kModeInt) out = py::array_t<int32_t>(sh);
    else if (e.mode == kModeFloat) out = py::array_t<float>(sh);
    else out = py::array_t<uint64_t>(sh);
  }
  uint64_t* sp = nullptr;
  if (signs) {
    std::vector<py::ssize_t> sh(oshape.begin(), oshape.end());
    sh.back() = (W.cout + 63) / 64;
    *signs = py::array_t<uint64_t>(sh);
    sp = static_cast<uint64_t*>(signs->mutable_data());
  }
  const uint64_t* xp = static_cast<const uint64_t*>(x.data());
  void* op = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    bconv_run(W, g, e, xp, N, static_cast<int>(H), static_cast<int>(Wd), residual, op, threads,
              cache, sp);
  }
  return out;
}

ConvGeom make_geom(std::pair<int64_t, int64_t> stride, std::pair<int64_t, int64_t> padding, int64_t pad_value) {
  ConvGeom g;
  std::tie(g.sh, g.sw) = check_pair(stride, "stride", 1);
  std::tie(g.ph, g.pw) = check_pair(padding, "padding", 0);
  if (pad_value != 1 && pad_value != -1 && pad_value != 0)
    fail("pad_value must be +1, -1 or 0, got " + std::to_string(pad_value));
  g.pad_value = static_cast<int>(pad_value);
  return g;
}

std::shared_ptr<ConvWeights> make_weights(const py::object& w_obj, int64_t c_in, bool gemm) {
  py::array w = as_array<uint64_t>(w_obj, gemm ? "b" : "w", gemm ? 2 : 4);
  check_int(c_in, gemm ? "K" : "c_in", 1);
  const int64_t kwin = (c_in + 63) / 64;
  const int64_t cout = w.shape(0);
  check_int(cout, "number of output channels", 1);
  int64_t kh = 1, kw = 1;
  if (!gemm) {
    kh = w.shape(1);
    kw = w.shape(2);
    check_int(kh, "kernel height", 1, 1024);
    check_int(kw, "kernel width", 1, 1024);
  }
  if (w.shape(w.ndim() - 1) != kwin) {
    std::ostringstream s;
    s << (gemm ? "b" : "w") << " has " << w.shape(w.ndim() - 1) << " words on its last axis but "
      << (gemm ? "K=" : "c_in=") << c_in << " needs " << kwin << " (shape " << shape_str(w) << ")";
    fail(s.str());
  }
  if (kh * kw * c_in > kMaxK)
    fail("kh*kw*c_in = " + std::to_string(kh * kw * c_in) + " exceeds the supported maximum " +
         std::to_string(kMaxK));
  const uint64_t* p = static_cast<const uint64_t*>(w.data());
  return std::make_shared<ConvWeights>(p, static_cast<int>(cout), static_cast<int>(kh),
                                       static_cast<int>(kw), static_cast<int>(c_in));
}

// A conv layer with everything prepared: weights, geometry and the fused transform.
struct ConvPlan {
  std::shared_ptr<ConvWeights> W;
  ConvGeom g;
  Epilogue e;
  bool gemm = false;
  std::unique_ptr<ConvTableCache> cache = std::make_unique<ConvTableCache>();
};

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "onebit C++ core: bit packing and XNOR-popcount kernels (see onebit.kernels)";
  m.def("version", []() { return 2; });

  // ---------------------------------------------------------------- ISA / threads
  m.def("isa_paths", []() {
    std::vector<std::string> v;
    for (Isa i : available_isas()) v.emplace_back(isa_name(i));
    return v;
  }, "ISA paths available on this CPU, best last.");
  m.def("get_isa", []() { return std::string(isa_name(current_isa())); });
  m.def("set_isa", [](const std::string& name) {
    Isa isa;
    if (!isa_from_name(name, &isa)) fail("unknown ISA path '" + name + "' (portable, avx2, avx512)");
    if (!isa_available(isa)) fail("ISA path '" + name + "' is not available on this CPU");
    set_current_isa(isa);
  }, py::arg("name"));
  m.def("cpu_info", []() {
    const CpuFeatures& f = cpu_features();
    py::dict d;
    d["popcnt"] = f.popcnt; d["avx2"] = f.avx2; d["avx512f"] = f.avx512f;
    d["avx512bw"] = f.avx512bw; d["avx512vl"] = f.avx512vl; d["avx512dq"] = f.avx512dq;
    d["avx512vpopcntdq"] = f.avx512vpopcntdq; d["avx512vnni"] = f.avx512vnni; d["amx"] = f.amx;
    d["amx_bf16"] = f.amx_bf16; d["amx_int8"] = f.amx_int8; d["avx512bf16"] = f.avx512bf16;
    d["os_avx"] = f.os_avx; d["os_avx512"] = f.os_avx512;
    return d;
  });
  m.def("set_num_threads", [](int64_t n) { set_num_threads(check_int(n, "n", 1, 256)); }, py::arg("n"));
  m.def("get_num_threads", []() { return get_num_threads(); });
  m.def("peak_microbench", [](int64_t threads, double seconds) {
    check_int(threads, "threads", 0, 256);
    if (!(seconds > 0 && seconds < 60)) fail("seconds must be in (0, 60)");
    py::gil_scoped_release nogil;
    return peak_microbench(static_cast<int>(threads), seconds);
  }, py::arg("threads") = 0, py::arg("seconds") = 0.3,
  "Binary MAC/s of a tight xor+popcount+add loop on L1-resident data (current ISA).");

  // ---------------------------------------------------------------- bit packing
  m.def("pack_bits", [](const py::object& x_obj, int64_t threads) {
    py::array x = as_array<float>(x_obj, "x");
    if (x.ndim() < 1) fail("x must have at least 1 dimension (channels last)");
    const int64_t C = x.shape(x.ndim() - 1);
    if (C < 1) fail("x must have at least one channel on its last axis");
    std::vector<py::ssize_t> sh(x.shape(), x.shape() + x.ndim());
    sh.back() = (C + 63) / 64;
    py::array_t<uint64_t> out(sh);
    const int64_t rows = C ? x.size() / C : 0;
    const float* xp = static_cast<const float*>(x.data());
    uint64_t* op = out.mutable_data();
    {
      py::gil_scoped_release nogil;
      pack_bits(xp, rows, C, op, static_cast<int>(threads));
    }
    return out;
  }, py::arg("x"), py::arg("threads") = 0);

  m.def("unpack_bits", [](const py::object& p_obj, int64_t C, int64_t threads) {
    py::array p = as_array<uint64_t>(p_obj, "p");
    if (p.ndim() < 1) fail("p must have at least 1 dimension (words last)");
    check_int(C, "C", 1);
    const int64_t kw = (C + 63) / 64;
    if (p.shape(p.ndim() - 1) != kw)
      fail("p has " + std::to_string(p.shape(p.ndim() - 1)) + " words on its last axis but C=" +
           std::to_string(C) + " needs " + std::to_string(kw));
    std::vector<py::ssize_t> sh(p.shape(), p.shape() + p.ndim());
    sh.back() = C;
    py::array_t<float> out(sh);
    const int64_t rows = p.size() / kw;
    const uint64_t* pp = static_cast<const uint64_t*>(p.data());
    float* op = out.mutable_data();
    {
      py::gil_scoped_release nogil;
      unpack_bits(pp, rows, C, op, static_cast<int>(threads));
    }
    return out;
  }, py::arg("p"), py::arg("C"), py::arg("threads") = 0);

  // ---------------------------------------------------------------- weights
  py::class_<ConvWeights, std::shared_ptr<ConvWeights>>(m, "ConvWeights",
      "Binary conv / dense weights re-laid out for the kernels (prepared once).")
      .def(py::init([](const py::object& w, int64_t c_in) {
             py::array a = py::isinstance<py::array>(w) ? py::reinterpret_borrow<py::array>(w) : py::array();
             const bool gemm = a && a.ndim() == 2;
             return make_weights(w, c_in, gemm);
           }),
           py::arg("w_packed"), py::arg("c_in"),
           "w_packed: (C_out, kh, kw, ceil(c_in/64)) or, for dense layers, (C_out, ceil(c_in/64)) uint64")
      .def_property_readonly("c_out", [](const ConvWeights& w) { return w.cout; })
      .def_property_readonly("c_in", [](const ConvWeights& w) { return w.cin; })
      .def_property_readonly("kernel", [](const ConvWeights& w) { return std::make_pair(w.kh, w.kw); })
      .def_property_readonly("words_in", [](const ConvWeights& w) { return w.kwin; })
      .def("unpack", [](const ConvWeights& w) {
        py::array_t<uint64_t> out(std::vector<py::ssize_t>{w.cout, w.kh, w.kw, w.kwin});
        w.unpack_to(out.mutable_data());
        return out;
      }, "The packed (C_out, kh, kw, words) weights back (tail bits masked).")
      .def("__repr__", [](const ConvWeights& w) {
        std::ostringstream s;
        s << "ConvWeights(c_out=" << w.cout << ", c_in=" << w.cin << ", kernel=(" << w.kh << ", " << w.kw << "))";
        return s.str();
      });

  // ---------------------------------------------------------------- conv / gemm plans
  py::class_<ConvPlan>(m, "ConvPlan",
      "A prepared binary conv (or dense) layer: weights + geometry + fused output transform.")
      .def(py::init([](std::shared_ptr<ConvWeights> W, std::pair<int64_t, int64_t> stride,
                       std::pair<int64_t, int64_t> padding, int64_t pad_value, const std::string& output,
                       py::object mult, py::object bias, py::object thresh, py::object flip, bool gemm) {
             if (!W) fail("weights must be a ConvWeights");
             auto p = std::make_unique<ConvPlan>();
             p->W = W;
             p->g = make_geom(stride, padding, pad_value);
             p->gemm = gemm;
             if (gemm && (W->kh != 1 || W->kw != 1)) fail("dense (gemm) weights must be 1x1");
             if (gemm && (p->g.sh != 1 || p->g.sw != 1 || p->g.ph != 0 || p->g.pw != 0))
               fail("a dense (gemm) plan takes stride 1 and padding 0");
             EpilogueArgs ea{mult, bias, py::none(), thresh, flip};
             p->e = build_epilogue(*W, parse_mode(output), ea);
             return p;
           }),
           py::arg("weights"), py::arg("stride") = std::make_pair(1, 1),
           py::arg("padding") = std::make_pair(0, 0), py::arg("pad_value") = 1,
           py::arg("output") = "int", py::arg("mult") = py::none(), py::arg("bias") = py::none(),
           py::arg("thresh") = py::none(), py::arg("flip") = py::none(), py::arg("gemm") = false)
      .def("__call__", [](const ConvPlan& p, const py::object& x_obj, const py::object& residual,
                          const py::object& out, int64_t threads, bool signs) -> py::object {
             check_int(threads, "threads", 0, 256);
             if (!residual.is_none() && p.e.mode != kModeFloat)
               fail("residual is only used with output='float'");
             if (signs && p.e.mode != kModeFloat) fail("signs is only produced with output='float'");
             py::array x = as_array<uint64_t>(x_obj, p.gemm ? "a" : "x", p.gemm ? 2 : 4);
             if (!signs)
               return run_conv(*p.W, p.g, p.e, x, residual, out, static_cast<int>(threads), p.gemm,
                               p.cache.get());
             py::array bits;
             py::array y = run_conv(*p.W, p.g, p.e, x, residual, out, static_cast<int>(threads), p.gemm,
                                    p.cache.get(), &bits);
             return py::make_tuple(y, bits);
           },
           py::arg("x"), py::arg("residual") = py::none(), py::arg("out") = py::none(),
           py::arg("threads") = 0, py::arg("signs") = false)
      .def_property_readonly("weights", [](const ConvPlan& p) { return p.W; })
      .def_property_readonly("output", [](const ConvPlan& p) {
        return std::string(p.e.mode == kModeInt ? "int" : p.e.mode == kModeFloat ? "float" : "bits");
      })
      .def("output_shape", [](const ConvPlan& p, std::vector<int64_t> in_shape) {
        const int64_t last = p.e.mode == kModeBits ? (p.W->cout + 63) / 64 : p.W->cout;
        if (p.gemm) {
          if (in_shape.size() != 2) fail("gemm input shape must be (M, words)");
          return std::vector<int64_t>{in_shape[0], last};
        }
        if (in_shape.size() != 4) fail("conv input shape must be (N, H, W, words)");
        return std::vector<int64_t>{in_shape[0],
                                    conv_out_size(static_cast<int>(in_shape[1]), p.W->kh, p.g.sh, p.g.ph),
                                    conv_out_size(static_cast<int>(in_shape[2]), p.W->kw, p.g.sw, p.g.pw), last};
      });

  // ---------------------------------------------------------------- max pool
  m.def("bmaxpool2d", [](const py::object& x_obj, int64_t C, std::pair<int64_t, int64_t> kernel,
                         std::pair<int64_t, int64_t> stride, std::pair<int64_t, int64_t> padding,
                         const py::object& min_mask_obj, const py::object& out_obj, int64_t threads) {
    py::array x = as_array<uint64_t>(x_obj, "x", 4);
    check_int(C, "C", 1);
    check_int(threads, "threads", 0, 256);
    const int64_t kwin = (C + 63) / 64;
    if (x.shape(3) != kwin)
      fail("x has " + std::to_string(x.shape(3)) + " words per pixel but C=" + std::to_string(C) +
           " needs " + std::to_string(kwin));
    PoolJob J;
    std::tie(J.kh, J.kw) = check_pair(kernel, "kernel", 1);
    std::tie(J.sh, J.sw) = check_pair(stride, "stride", 1);
    std::tie(J.ph, J.pw) = check_pair(padding, "padding", 0);
    if (2 * J.ph > J.kh || 2 * J.pw > J.kw) fail("padding must be at most half the kernel size");
    J.N = x.shape(0);
    J.H = check_int(x.shape(1), "input height", 1);
    J.W = check_int(x.shape(2), "input width", 1);
    J.kwin = static_cast<int>(kwin);
    if (J.H + 2 * J.ph < J.kh || J.W + 2 * J.pw < J.kw) fail("input is smaller than the pooling window");
    J.OH = conv_out_size(J.H, J.kh, J.sh, J.ph);
    J.OW = conv_out_size(J.W, J.kw, J.sw, J.pw);
    std::vector<uint64_t> zero_mask;
    py::array mm;
    if (min_mask_obj.is_none()) {
      zero_mask.assign(kwin, 0);
      J.min_mask = zero_mask.data();
    } else {
      mm = as_array<uint64_t>(min_mask_obj, "min_mask", 1);
      check_shape(mm, "min_mask", {kwin});
      J.min_mask = static_cast<const uint64_t*>(mm.data());
    }
    std::vector<int64_t> oshape{J.N, J.OH, J.OW, kwin};
    py::array out;
    if (!out_obj.is_none()) {
      out = as_array<uint64_t>(out_obj, "out", 4, true);
      check_shape(out, "out", oshape);
      if (overlaps(out, x)) fail("out must not overlap the input");
    } else {
      out = py::array_t<uint64_t>(std::vector<py::ssize_t>(oshape.begin(), oshape.end()));
    }
    J.x = static_cast<const uint64_t*>(x.data());
    J.out = static_cast<uint64_t*>(out.mutable_data());
    {
      py::gil_scoped_release nogil;
      bmaxpool_run(J, static_cast<int>(threads));
    }
    return out;
  }, py::arg("x"), py::arg("C"), py::arg("kernel"), py::arg("stride"), py::arg("padding"),
     py::arg("min_mask") = py::none(), py::arg("out") = py::none(), py::arg("threads") = 0);

  // ---- int8 GEMM (binary-weight networks: int8 activations x +-1 weights) ----
  py::class_<Int8Weights, std::shared_ptr<Int8Weights>>(m, "Int8Weights",
      "int8 weights (N, K) laid out once for the portable and AMX paths")
      .def_property_readonly("N", [](const Int8Weights& w) { return w.N; })
      .def_property_readonly("K", [](const Int8Weights& w) { return w.K; })
      .def_property_readonly("Kp", [](const Int8Weights& w) { return w.Kp; });
  m.def("prepare_int8_weights", [](const py::object& w_obj) {
    py::array w = as_array<int8_t>(w_obj, "w", 2);
    const int N = check_int(w.shape(0), "N", 1), K = check_int(w.shape(1), "K", 1);
    return std::make_shared<Int8Weights>(prepare_int8_weights(static_cast<const int8_t*>(w.data()), N, K));
  }, py::arg("w"));
  m.def("amx_int8_usable", []() { return amx_int8_usable(); });
  m.def("igemm_s8", [](const py::object& a_obj, const std::shared_ptr<Int8Weights>& W, const py::object& scale_obj,
                       const py::object& bias_obj, const std::string& path, int64_t threads) {
    if (!W) fail("w must be prepared with prepare_int8_weights");
    if (!py::isinstance<py::array>(a_obj)) fail("a must be a numpy.ndarray");
    const bool a_unsigned = py::reinterpret_borrow<py::array>(a_obj).dtype().equal(py::dtype::of<uint8_t>());
    py::array a = a_unsigned ? as_array<uint8_t>(a_obj, "a", 2) : as_array<int8_t>(a_obj, "a", 2);
    if (a.shape(1) < W->Kp)
      fail("a must have at least Kp = " + std::to_string(W->Kp) + " columns (K padded to 64 with zeros), got " +
           shape_str(a));
    const bool amx = int8_path_is_amx(path);
    py::array sc, bi;
    const float* scale = optional_f32(scale_obj, "scale", {W->N}, sc);
    const float* bias = optional_f32(bias_obj, "bias", {W->N}, bi);
    const int64_t M = a.shape(0);
    py::array out = py::array_t<float>(std::vector<py::ssize_t>{static_cast<py::ssize_t>(M), W->N});
    {
      py::gil_scoped_release nogil;
      igemm_s8(static_cast<const int8_t*>(a.data()), M, a.shape(1), *W, scale, bias,
               static_cast<float*>(out.mutable_data()), W->N, amx, static_cast<int>(threads), a_unsigned);
    }
    return out;
  }, py::arg("a"), py::arg("w"), py::arg("scale") = py::none(), py::arg("bias") = py::none(),
     py::arg("path") = "auto", py::arg("threads") = 0);
  m.def("iconv2d_s8", [](const py::object& x_obj, const std::shared_ptr<Int8Weights>& W, float act_scale,
                         bool a_unsigned, std::vector<int> kernel, std::vector<int> stride, std::vector<int> padding,
                         const py::object& scale_obj, const py::object& bias_obj, const py::object& res_obj,
                         bool relu, const std::string& path, int64_t threads, const py::object& out_obj) {
    if (!W) fail("w must be prepared with prepare_int8_weights");
    py::array x = as_array<float>(x_obj, "x", 4);
    if (!(act_scale > 0.0f) || !std::isfinite(act_scale)) fail("act_scale must be a positive finite number");
    const IConvGeom g = float_conv_geom(x, kernel, stride, padding, W->K);
    const bool amx = int8_path_is_amx(path);
    const std::vector<int64_t> oshape{int64_t(g.N), int64_t(g.OH()), int64_t(g.OW()), int64_t(W->N)};
    py::array sc, bi, rs;
    const float* scale = optional_f32(scale_obj, "scale", {W->N}, sc);
    const float* bias = optional_f32(bias_obj, "bias", {W->N}, bi);
    const float* res = optional_f32(res_obj, "residual", oshape, rs);
    py::array out = float_output(out_obj, oshape, {&x, res ? &rs : nullptr});
    {
      py::gil_scoped_release nogil;
      iconv2d_s8(static_cast<const float*>(x.data()), g, 1.0f / act_scale, a_unsigned, *W, scale, bias, res, relu,
                 static_cast<float*>(out.mutable_data()), amx, static_cast<int>(threads));
    }
    return out;
  }, py::arg("x"), py::arg("w"), py::arg("act_scale"), py::arg("unsigned"), py::arg("kernel"), py::arg("stride"),
     py::arg("padding"), py::arg("scale") = py::none(), py::arg("bias") = py::none(),
     py::arg("residual") = py::none(), py::arg("relu") = false, py::arg("path") = "auto", py::arg("threads") = 0,
     py::arg("out") = py::none());
  m.def("quantize_s8", [](const py::object& x_obj, float act_scale, bool a_unsigned, int64_t ld, int64_t threads) {
    py::array x = as_array<float>(x_obj, "x", 2);
    if (!(act_scale > 0.0f) || !std::isfinite(act_scale)) fail("act_scale must be a positive finite number");
    const int64_t rows = x.shape(0), cols = x.shape(1);
    if (ld < cols) fail("ld must be >= the number of columns");
    py::array out = a_unsigned ? py::array(py::array_t<uint8_t>(std::vector<py::ssize_t>{rows, ld}))
                               : py::array(py::array_t<int8_t>(std::vector<py::ssize_t>{rows, ld}));
    {
      py::gil_scoped_release nogil;
      quantize_rows_s8(static_cast<const float*>(x.data()), rows, cols, 1.0f / act_scale, a_unsigned,
                       static_cast<int8_t*>(out.mutable_data()), ld, static_cast<int>(threads));
    }
    return out;
  }, py::arg("x"), py::arg("act_scale"), py::arg("unsigned"), py::arg("ld"), py::arg("threads") = 0);
  m.def("nchw_to_nhwc", [](const py::object& x_obj, bool pm1, int64_t threads) {
    if (!py::isinstance<py::array>(x_obj)) fail("x must be a numpy.ndarray");
    const bool u8 = py::reinterpret_borrow<py::array>(x_obj).dtype().equal(py::dtype::of<uint8_t>());
    if (pm1 && !u8) fail("pm1 preprocessing needs uint8 input");
    py::array x = u8 ? as_array<uint8_t>(x_obj, "x", 4) : as_array<float>(x_obj, "x", 4);
    const int64_t N = x.shape(0), C = x.shape(1), H = x.shape(2), W = x.shape(3);
    const std::vector<py::ssize_t> oshape{N, H, W, C};
    py::array out = (u8 && !pm1) ? py::array(py::array_t<uint8_t>(oshape)) : py::array(py::array_t<float>(oshape));
    {
      py::gil_scoped_release nogil;
      if (pm1)
        nchw_u8_to_nhwc_pm1(static_cast<const uint8_t*>(x.data()), static_cast<float*>(out.mutable_data()), N, C, H,
                            W, static_cast<int>(threads));
      else if (u8)
        nchw_to_nhwc_u8(static_cast<const uint8_t*>(x.data()), static_cast<uint8_t*>(out.mutable_data()), N, C, H,
                        W, static_cast<int>(threads));
      else
        nchw_to_nhwc_f32(static_cast<const float*>(x.data()), static_cast<float*>(out.mutable_data()), N, C, H, W,
                         static_cast<int>(threads));
    }
    return out;
  }, py::arg("x"), py::arg("pm1") = false, py::arg("threads") = 0);
  m.def("channel_affine_", [](const py::object& y_obj, const py::object& mult_obj, const py::object& bias_obj,
                              bool relu, int64_t threads) {
    py::array y = as_array<float>(y_obj, "y", -1, true);
    if (y.ndim() < 1) fail("y must have at least one axis (channels last)");
    const int64_t C = y.shape(y.ndim() - 1), rows = C ? y.size() / C : 0;
    py::array mu, bi;
    const float* mult = optional_f32(mult_obj, "mult", {C}, mu);
    const float* bias = optional_f32(bias_obj, "bias", {C}, bi);
    {
      py::gil_scoped_release nogil;
      channel_affine_inplace(static_cast<float*>(y.mutable_data()), rows, C, mult, bias, relu,
                             static_cast<int>(threads));
    }
    return y;
  }, py::arg("y"), py::arg("mult") = py::none(), py::arg("bias") = py::none(), py::arg("relu") = false,
     py::arg("threads") = 0);

  // ---- float conv / GEMM of the real-valued layers ----
  py::class_<FloatWeights, std::shared_ptr<FloatWeights>>(m, "FloatWeights",
      "float weights (N, K) packed once for the float conv/GEMM")
      .def_property_readonly("N", [](const FloatWeights& w) { return w.N; })
      .def_property_readonly("K", [](const FloatWeights& w) { return w.K; })
      .def_property_readonly("bf16x3", [](const FloatWeights& w) { return w.Kb > 0; });
  m.def("prepare_float_weights", [](const py::object& w_obj, bool bf16x3) {
    py::array w = as_array<float>(w_obj, "w", 2);
    const int N = check_int(w.shape(0), "N", 1), K = check_int(w.shape(1), "K", 1);
    const float* wp = static_cast<const float*>(w.data());
    for (py::ssize_t i = 0; i < w.size(); ++i)
      if (!std::isfinite(wp[i])) fail("w holds a NaN or infinite value");
    return std::make_shared<FloatWeights>(prepare_float_weights(wp, N, K, bf16x3));
  }, py::arg("w"), py::arg("bf16x3") = false);
  m.def("amx_bf16_usable", []() { return amx_bf16_usable(); });
  m.def("avx512_bf16_usable", []() { return avx512_bf16_usable(); });
  m.def("float_paths", []() {  // the float conv's paths this CPU runs, best last
    std::vector<std::string> v{"portable"};
    if (fgemm_avx2_usable()) v.push_back("avx2");
    if (fgemm_avx512_usable()) v.push_back("avx512");
    return v;
  });
  m.def("fconv2d_f32", [](const py::object& x_obj, const std::shared_ptr<FloatWeights>& W, std::vector<int> kernel,
                          std::vector<int> stride, std::vector<int> padding, const py::object& scale_obj,
                          const py::object& bias_obj, const py::object& res_obj, bool relu, const std::string& path,
                          int64_t threads, const py::object& out_obj, const std::string& precision,
                          const py::object& pool_obj) {
    if (!W) fail("w must be prepared with prepare_float_weights");
    if (precision != "fp32" && precision != "bf16x3" && precision != "bf16")
      fail("precision must be 'fp32', 'bf16x3' or 'bf16', got '" + precision + "'");
    const bool split = precision != "fp32";
    if (split && W->Kb == 0) fail("w was prepared without its bf16 halves: prepare_float_weights(w, bf16x3=True)");
    py::array x = as_array<float>(x_obj, "x", 4);
    const IConvGeom g = float_conv_geom(x, kernel, stride, padding, W->K);
    FloatPath fpath = FloatPath::Portable;
    Bf16Path bf16_path = Bf16Path::Portable;
    if (split) {
      if (path == "auto") {
        if (amx_bf16_usable()) bf16_path = Bf16Path::Amx;
        else if (avx512_bf16_usable() && current_isa() == Isa::Avx512) bf16_path = Bf16Path::Avx512Bf16;
      } else if (path == "amx") {
        if (!amx_bf16_usable()) fail("the AMX-BF16 path is not available on this CPU/OS");
        bf16_path = Bf16Path::Amx;
      } else if (path == "avx512_bf16") {
        if (!avx512_bf16_usable()) fail("the AVX512_BF16 path is not available on this CPU/OS");
        bf16_path = Bf16Path::Avx512Bf16;
      } else if (path != "portable")
        fail("path must be 'auto', 'amx', 'avx512_bf16' or 'portable' for bf16x3 and bf16, got '" + path + "'");
    } else {
      fpath = float_path(path);
    }
    std::vector<int64_t> oshape{int64_t(g.N), int64_t(g.OH()), int64_t(g.OW()), int64_t(W->N)};
    // a max or average pooling fused in: (is_max, [kh, kw], [sh, sw], [ph, pw], [OH, OW])
    bool pool_max = true;
    PoolGeom pg{};
    const bool pooled = !pool_obj.is_none();
    if (pooled) {
      if (!split) fail("a fused pooling needs precision 'bf16' or 'bf16x3'");
      if (!res_obj.is_none()) fail("a fused pooling takes no residual");
      auto t = pool_obj.cast<std::tuple<bool, std::vector<int>, std::vector<int>, std::vector<int>, std::vector<int>>>();
      pool_max = std::get<0>(t);
      const auto &k = std::get<1>(t), &st = std::get<2>(t), &pd = std::get<3>(t), &o = std::get<4>(t);
      if (k.size() != 2 || st.size() != 2 || pd.size() != 2 || o.size() != 2)
        fail("pool kernel, stride, padding and out_hw must each have two values");
      pg = PoolGeom{g.N, g.OH(), g.OW(), W->N, k[0], k[1], st[0], st[1], pd[0], pd[1], o[0], o[1]};
      check_pool_geom(pg, "pool ", "the conv's output");
      oshape = {int64_t(g.N), int64_t(pg.OH), int64_t(pg.OW), int64_t(W->N)};
    }
    py::array sc, bi, rs;
    const float* scale = optional_f32(scale_obj, "scale", {W->N}, sc);
    const float* bias = optional_f32(bias_obj, "bias", {W->N}, bi);
    const float* res = optional_f32(res_obj, "residual", oshape, rs);
    py::array out = float_output(out_obj, oshape, {&x, res ? &rs : nullptr});
    {
      py::gil_scoped_release nogil;
      if (split)
        fconv2d_bf16x3(static_cast<const float*>(x.data()), g, *W, scale, bias, res, relu,
                       static_cast<float*>(out.mutable_data()), bf16_path, static_cast<int>(threads), precision == "bf16",
                       pooled ? &pg : nullptr, pool_max);
      else
        fconv2d_f32(static_cast<const float*>(x.data()), g, *W, scale, bias, res, relu,
                    static_cast<float*>(out.mutable_data()), fpath, static_cast<int>(threads));
    }
    return out;
  }, py::arg("x"), py::arg("w"), py::arg("kernel"), py::arg("stride"), py::arg("padding"),
     py::arg("scale") = py::none(), py::arg("bias") = py::none(), py::arg("residual") = py::none(),
     py::arg("relu") = false, py::arg("path") = "auto", py::arg("threads") = 0, py::arg("out") = py::none(),
     py::arg("precision") = "fp32", py::arg("pool") = py::none());
  m.def("pool2d_f32", [](const py::object& x_obj, bool is_max, std::vector<int> kernel, std::vector<int> stride,
                         std::vector<int> padding, std::vector<int> out_hw, int64_t threads, const py::object& out_obj) {
    py::array x = as_array<float>(x_obj, "x", 4);
    if (kernel.size() != 2 || stride.size() != 2 || padding.size() != 2 || out_hw.size() != 2)
      fail("kernel, stride, padding and out_hw must each have two values");
    PoolGeom g{check_int(x.shape(0), "N", 0), check_int(x.shape(1), "H", 1), check_int(x.shape(2), "W", 1),
               check_int(x.shape(3), "C", 1), kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1],
               out_hw[0], out_hw[1]};
    check_pool_geom(g, "", "the input");
    const std::vector<int64_t> oshape{int64_t(g.N), int64_t(g.OH), int64_t(g.OW), int64_t(g.C)};
    py::array out = float_output(out_obj, oshape, {&x});
    {
      py::gil_scoped_release nogil;
      pool2d_f32(static_cast<const float*>(x.data()), g, is_max, static_cast<float*>(out.mutable_data()),
                 static_cast<int>(threads));
    }
    return out;
  }, py::arg("x"), py::arg("is_max"), py::arg("kernel"), py::arg("stride"), py::arg("padding"), py::arg("out_hw"),
     py::arg("threads") = 0, py::arg("out") = py::none());
}
