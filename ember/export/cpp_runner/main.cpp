// ember_runner: load an AOTInductor model package and run it on tensors read from a file.
//
// Usage: ember_runner MODEL.aoti.pt2 INPUTS.bin OUTPUTS.bin
//
// Tensor file format (little-endian), used for both inputs and outputs:
//   char[4]  magic "EMBT"
//   uint32   version (1: float32 only; 2: a dtype per tensor)
//   uint32   count            number of tensors, in the model's input order
//   then per tensor:
//     uint32 ndim
//     uint32 dtype            version 2 only: 0 float32, 1 int64, 2 int32, 3 bool, 4 float64
//     int64  dims[ndim]
//     data[prod(dims)]        row-major, in that dtype (bool: one byte each)
// Outputs are written as version 1 (float32).
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

constexpr char kMagic[4] = {'E', 'M', 'B', 'T'};
constexpr uint32_t kVersion = 1;
constexpr uint32_t kTypedVersion = 2;

at::ScalarType scalar_type(uint32_t code) {
  switch (code) {
    case 0: return at::kFloat;
    case 1: return at::kLong;
    case 2: return at::kInt;
    case 3: return at::kBool;
    case 4: return at::kDouble;
    default: throw std::runtime_error("unknown EMBT dtype code " + std::to_string(code));
  }
}

template <typename T>
T read_pod(std::istream& in, const std::string& what) {
  T value{};
  if (!in.read(reinterpret_cast<char*>(&value), sizeof(T))) {
    throw std::runtime_error("truncated tensor file while reading " + what);
  }
  return value;
}

template <typename T>
void write_pod(std::ostream& out, T value) {
  out.write(reinterpret_cast<const char*>(&value), sizeof(T));
}

std::vector<at::Tensor> read_tensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open input file " + path);
  char magic[4];
  if (!in.read(magic, 4) || std::string(magic, 4) != std::string(kMagic, 4)) {
    throw std::runtime_error(path + " is not an EMBT tensor file (bad magic)");
  }
  auto version = read_pod<uint32_t>(in, "version");
  if (version != kVersion && version != kTypedVersion) {
    throw std::runtime_error("unsupported EMBT version " + std::to_string(version));
  }
  auto count = read_pod<uint32_t>(in, "tensor count");
  std::vector<at::Tensor> tensors;
  for (uint32_t t = 0; t < count; ++t) {
    auto ndim = read_pod<uint32_t>(in, "ndim");
    auto dtype = version == kTypedVersion ? scalar_type(read_pod<uint32_t>(in, "dtype")) : at::kFloat;
    std::vector<int64_t> dims;
    for (uint32_t d = 0; d < ndim; ++d) dims.push_back(read_pod<int64_t>(in, "dims"));
    at::Tensor tensor = at::empty(dims, at::TensorOptions().dtype(dtype));
    auto bytes = static_cast<std::streamsize>(tensor.numel() * tensor.element_size());
    if (!in.read(reinterpret_cast<char*>(tensor.data_ptr()), bytes)) {
      throw std::runtime_error("truncated tensor data in " + path);
    }
    tensors.push_back(tensor);
  }
  return tensors;
}

void write_tensors(const std::string& path, const std::vector<at::Tensor>& tensors) {
  std::ofstream out(path, std::ios::binary);
  if (!out) throw std::runtime_error("cannot open output file " + path);
  out.write(kMagic, 4);
  write_pod<uint32_t>(out, kVersion);
  write_pod<uint32_t>(out, static_cast<uint32_t>(tensors.size()));
  for (const auto& raw : tensors) {
    at::Tensor tensor = raw.to(at::kFloat).contiguous();
    write_pod<uint32_t>(out, static_cast<uint32_t>(tensor.dim()));
    for (auto d : tensor.sizes()) write_pod<int64_t>(out, d);
    out.write(reinterpret_cast<const char*>(tensor.data_ptr<float>()),
              static_cast<std::streamsize>(tensor.numel() * sizeof(float)));
  }
  if (!out) throw std::runtime_error("failed writing " + path);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: " << argv[0] << " MODEL.aoti.pt2 INPUTS.bin OUTPUTS.bin\n";
    return 2;
  }
  try {
    c10::InferenceMode guard;
    torch::inductor::AOTIModelPackageLoader loader(argv[1]);
    std::vector<at::Tensor> inputs = read_tensors(argv[2]);
    auto start = std::chrono::steady_clock::now();
    std::vector<at::Tensor> outputs = loader.run(inputs);
    auto elapsed = std::chrono::duration<double, std::milli>(
        std::chrono::steady_clock::now() - start);
    write_tensors(argv[3], outputs);
    std::cerr << "ember_runner: " << outputs.size() << " output(s) in " << elapsed.count()
              << " ms\n";
  } catch (const std::exception& e) {
    std::cerr << "ember_runner: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
