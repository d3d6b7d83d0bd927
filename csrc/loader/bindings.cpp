// Python bindings (seedcoder._C): Dataset, Loader (batches as dicts of zero-copy torch tensors over pooled,
// optionally pinned buffers), the FIM/BPE entry points, CRC32C. The GIL is released for every wait and every
// piece of C++ work; C++ errors become Python exceptions (ShardError -> seedcoder.data.shards.ShardError).
#include <torch/extension.h>

#include <chrono>
#include <cstring>

#include "crc32c.h"
#include "loader.h"
#include "plan.h"
#include "random.h"
#include "shard.h"
#include "bpe.h"
#include "fim.h"
void register_fim_bindings(pybind11::module_& m);  // fim_bindings.cpp (the FIM helper's)

namespace py = pybind11;
using namespace seedcoder::loader;

namespace {

torch::Tensor tensor_from(const std::vector<uint64_t>& values) {
  auto out = torch::empty({static_cast<int64_t>(values.size())}, torch::kInt64);
  std::memcpy(out.data_ptr<int64_t>(), values.data(), values.size() * 8);
  return out;
}

template <typename T>
torch::Tensor int64_tensor(const std::vector<T>& values) {
  auto out = torch::empty({static_cast<int64_t>(values.size())}, torch::kInt64);
  auto* data = out.data_ptr<int64_t>();
  for (size_t i = 0; i < values.size(); ++i) data[i] = static_cast<int64_t>(values[i]);
  return out;
}

py::dict batch_to_dict(const std::shared_ptr<Batch>& batch) {
  const BatchLayout& layout = batch->layout;
  uint8_t* base = batch->memory.get();
  // Each tensor keeps the batch (and so its pooled buffer) alive; the buffer is recycled when all are gone.
  auto view = [&](size_t offset, std::vector<int64_t> sizes, torch::ScalarType type) {
    std::shared_ptr<Batch> keep = batch;
    return torch::from_blob(base + offset, sizes, [keep](void*) mutable { keep.reset(); }, torch::TensorOptions().dtype(type));
  };
  const auto rows = static_cast<int64_t>(layout.rows), seq_len = static_cast<int64_t>(layout.seq_len);
  const auto index_type = layout.index_type == IndexType::kInt64 ? torch::kInt64 : torch::kInt32;
  py::dict out;
  out["input_ids"] = view(layout.input_ids, {rows, seq_len}, index_type);
  out["labels"] = view(layout.labels, {rows, seq_len}, index_type);
  out["position_ids"] = view(layout.position_ids, {rows, seq_len}, index_type);
  out["loss_mask"] = view(layout.loss_mask, {rows, seq_len}, torch::kBool);
  out["cu_seqlens"] = view(layout.cu_seqlens, {static_cast<int64_t>(batch->segments) + 1}, torch::kInt32);
  out["max_seqlen"] = batch->max_seqlen;
  out["row_epoch"] = view(layout.row_epoch, {rows}, torch::kInt64);
  out["row_index"] = view(layout.row_index, {rows}, torch::kInt64);
  return out;
}

template <typename T>
T take(py::dict& config, const char* key, T fallback) {
  if (!config.contains(key)) return fallback;
  T value = config[key].cast<T>();
  config.attr("pop")(key);
  return value;
}

OpenOptions open_options(py::object expected_sha256, bool verify_checksums, uint32_t language_count, uint32_t source_count) {
  OpenOptions options;
  options.verify_checksums = verify_checksums;
  options.language_count = language_count;
  options.source_count = source_count;
  if (!expected_sha256.is_none()) {
    const std::string digest = expected_sha256.cast<py::bytes>();
    if (digest.size() != 32) throw std::invalid_argument("expected_tokenizer_sha256 must be 32 bytes");
    std::array<uint8_t, 32> bytes;
    std::memcpy(bytes.data(), digest.data(), 32);
    options.expected_tokenizer_sha256 = bytes;
  }
  return options;
}

using seedcoder::fim::ByteLevelBPE;
using seedcoder::fim::FimSpec;


struct PyLoader {
  std::shared_ptr<Loader> loader;
  std::shared_ptr<const Dataset> dataset;
  std::shared_ptr<ByteLevelBPE> bpe;
};

PyLoader make_loader(std::shared_ptr<Dataset> dataset, py::dict config, py::object bpe_object) {
  LoaderConfig c;
  PlanConfig& plan = c.plan;
  plan.seed = take<uint64_t>(config, "seed", 0);
  plan.seq_len = take<uint32_t>(config, "seq_len", 0);
  const std::string mode = take<std::string>(config, "mode", "concat");
  if (mode == "concat") plan.mode = PackMode::kConcat;
  else if (mode == "best_fit") plan.mode = PackMode::kBestFit;
  else throw std::invalid_argument("mode must be 'concat' or 'best_fit', got '" + mode + "'");
  plan.best_fit_window = take<uint32_t>(config, "best_fit_window", 8192);
  for (auto& group : take<std::vector<std::tuple<std::string, int32_t, int32_t, double>>>(config, "mixture", {}))
    plan.mixture.push_back({std::get<0>(group), std::get<1>(group), std::get<2>(group), std::get<3>(group)});
  plan.min_score = take<double>(config, "min_score", -std::numeric_limits<double>::infinity());
  plan.drop_bottom_fraction = take<double>(config, "drop_bottom_fraction", 0.0);
  plan.score_temperature = take<double>(config, "score_temperature", 0.0);
  plan.tokens_per_epoch = take<uint64_t>(config, "tokens_per_epoch", 0);
  plan.eos_id = take<int64_t>(config, "eos_id", -1);
  c.packer.pad_id = take<int64_t>(config, "pad_id", 0);
  c.batch_size = take<uint32_t>(config, "batch_size", 1);
  c.rank = take<uint32_t>(config, "rank", 0);
  c.world_size = take<uint32_t>(config, "world_size", 1);
  c.epochs = take<int64_t>(config, "epochs", -1);
  c.threads = take<uint32_t>(config, "threads", 2);
  c.prefetch = take<uint32_t>(config, "prefetch", 4);
  const std::string index_dtype = take<std::string>(config, "index_dtype", "int64");
  if (index_dtype == "int64") c.index_type = IndexType::kInt64;
  else if (index_dtype == "int32") c.index_type = IndexType::kInt32;
  else throw std::invalid_argument("index_dtype must be 'int64' or 'int32'");
  const bool pin_memory = take<bool>(config, "pin_memory", false);
  const double fim_rate = take<double>(config, "fim_rate", 0.0);
  const bool fim_token_level = take<bool>(config, "fim_token_level", false);
  const auto fim_ids = take<std::vector<int64_t>>(config, "fim_ids", {});  // suffix, prefix, middle, eos
  if (!config.empty()) throw std::invalid_argument("unknown loader option(s): " + py::str(config.attr("keys")()).cast<std::string>());

  PyLoader result;
  result.dataset = dataset;
  if (fim_rate > 0) {
    if (bpe_object.is_none()) throw std::invalid_argument("fim_rate > 0 needs the tokenizer's byte-level BPE tables");
    if (fim_ids.size() != 4) throw std::invalid_argument("fim_ids must be (suffix, prefix, middle, eos)");
    result.bpe = bpe_object.cast<std::shared_ptr<ByteLevelBPE>>();
    for (int64_t id : fim_ids)
      if (id < 0 || id >= static_cast<int64_t>(dataset->vocab_size()))
        throw std::invalid_argument("FIM token id " + std::to_string(id) + " is not below the shards' vocab size");
    FimSpec spec{static_cast<uint32_t>(fim_ids[0]), static_cast<uint32_t>(fim_ids[1]), static_cast<uint32_t>(fim_ids[2]),
                 static_cast<uint32_t>(fim_ids[3]), fim_rate, fim_token_level};
    seedcoder::fim::check_fim_spec(spec, *result.bpe);
    // FIM's randomness is its own stream: same seed, different domain than the plan's permutations.
    const uint64_t fim_seed = hash_key({0xF1Full, plan.seed});
    std::shared_ptr<ByteLevelBPE> bpe = result.bpe;
    plan.fim_select = [fim_rate, fim_seed](uint64_t epoch, uint64_t key) { return seedcoder::fim::fim_decision(fim_rate, fim_seed, epoch, key); };
    plan.fim_eos_id = fim_ids[3];
    c.packer.fim = [bpe, spec, fim_seed](const uint32_t* tokens, size_t n, uint64_t epoch, uint64_t key, std::vector<uint32_t>& out) {
      return seedcoder::fim::apply_spm(tokens, n, *bpe, spec, fim_seed, epoch, key, out);
    };
    c.packer.fim_prefix_id = spec.prefix_id;
    c.packer.fim_middle_id = spec.middle_id;
    c.fim_fingerprint = hash_key({0xF1Full, static_cast<uint64_t>(fim_rate * 1e9), fim_token_level, spec.suffix_id, spec.prefix_id,
                                  spec.middle_id, spec.eos_id, bpe->vocab_size(), bpe->merge_count()});
  }
  Allocator allocate;
  if (pin_memory)
    allocate = [](size_t bytes) {
      auto tensor = torch::empty({static_cast<int64_t>(bytes)}, torch::TensorOptions().dtype(torch::kUInt8).pinned_memory(true));
      uint8_t* data = tensor.data_ptr<uint8_t>();
      return std::shared_ptr<uint8_t>(data, [tensor](uint8_t*) mutable { tensor.reset(); });
    };
  py::gil_scoped_release release;
  result.loader = std::make_shared<Loader>(dataset, std::move(c), std::move(allocate));
  return result;
}

py::object next_batch(PyLoader& self) {
  while (true) {
    std::shared_ptr<Batch> batch;
    bool timed_out = false;
    {
      py::gil_scoped_release release;
      batch = self.loader->next(std::chrono::milliseconds(100), timed_out);
    }
    if (timed_out) {
      if (PyErr_CheckSignals() != 0) throw py::error_already_set();  // Ctrl-C while waiting
      continue;
    }
    if (!batch) return py::none();
    return batch_to_dict(batch);
  }
}

py::dict plan_to_dict(const Plan& plan) {
  py::dict out;
  std::vector<uint32_t> documents(plan.entries.size()), occurrences(plan.entries.size());
  for (size_t i = 0; i < plan.entries.size(); ++i) documents[i] = plan.entries[i].document, occurrences[i] = plan.entries[i].occurrence;
  out["epoch"] = plan.epoch;
  out["documents"] = int64_tensor(documents);
  out["occurrences"] = int64_tensor(occurrences);
  out["fim"] = int64_tensor(plan.fim).to(torch::kBool);
  out["stream_begin"] = tensor_from(plan.stream_begin);
  out["row_count"] = plan.row_count;
  if (plan.mode == PackMode::kBestFit) {
    out["row_begin"] = tensor_from(plan.row_begin);
    auto items = torch::empty({static_cast<int64_t>(plan.items.size()), 3}, torch::kInt64);
    auto* data = items.data_ptr<int64_t>();
    for (size_t i = 0; i < plan.items.size(); ++i)
      data[3 * i] = plan.items[i].entry, data[3 * i + 1] = plan.items[i].offset, data[3 * i + 2] = plan.items[i].length;
    out["items"] = items;
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "seedcoder C++ data loader: shards, sampling plans, packing, FIM (see seedcoder.data.loader)";

  // ShardError(path, problem) -> seedcoder.data.shards.ShardError(path, problem)
  py::register_exception_translator([](std::exception_ptr error) {
    try {
      if (error) std::rethrow_exception(error);
    } catch (const ShardError& shard_error) {
      py::object type = py::module_::import("seedcoder.data.shards").attr("ShardError");
      py::object instance = type(shard_error.path(), shard_error.problem());
      PyErr_SetObject(type.ptr(), instance.ptr());
    }
  });

  m.def("crc32c", [](py::buffer data, uint32_t value) {
    py::buffer_info info = data.request();
    py::ssize_t expected_stride = info.itemsize;
    for (py::ssize_t d = info.ndim - 1; d >= 0; --d) {
      if (info.shape[d] > 1 && info.strides[d] != expected_stride) throw std::invalid_argument("crc32c: the buffer is not C-contiguous");
      expected_stride *= info.shape[d];
    }
    const size_t bytes = static_cast<size_t>(info.size) * static_cast<size_t>(info.itemsize);
    py::gil_scoped_release release;
    return crc32c(info.ptr, bytes, value);
  }, py::arg("data"), py::arg("value") = 0, "CRC32C of a contiguous buffer (continues `value`).");
  m.def("crc32c_portable", [](py::bytes data, uint32_t value) {
    const std::string bytes = data;
    return crc32c_portable(bytes.data(), bytes.size(), value);
  }, py::arg("data"), py::arg("value") = 0);
  m.def("crc32c_hardware_available", &crc32c_hardware_available);

  m.def("memcpy_seconds", [](torch::Tensor destination, torch::Tensor source, int64_t repeats) {
    TORCH_CHECK(destination.is_contiguous() && source.is_contiguous() && destination.nbytes() >= source.nbytes(), "memcpy_seconds: bad buffers");
    uint8_t* to = static_cast<uint8_t*>(destination.data_ptr());
    const uint8_t* from = static_cast<const uint8_t*>(source.data_ptr());
    const size_t bytes = source.nbytes();
    py::gil_scoped_release release;
    const auto start = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < repeats; ++i) {
      std::memcpy(to, from, bytes);
      asm volatile("" : : "r"(to) : "memory");  // keep every copy
    }
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }, "Seconds for `repeats` single-thread memcpy calls of source into destination (the benchmark's ceiling).");

  py::class_<Dataset, std::shared_ptr<Dataset>>(m, "Dataset")
      .def(py::init([](const std::vector<std::string>& paths, py::object expected_sha256, bool verify_checksums, uint32_t language_count,
                       uint32_t source_count, unsigned threads) {
             const OpenOptions options = open_options(expected_sha256, verify_checksums, language_count, source_count);
             py::gil_scoped_release release;
             return std::make_shared<Dataset>(paths, options, threads);
           }),
           py::arg("paths"), py::arg("expected_tokenizer_sha256") = py::none(), py::arg("verify_checksums") = true,
           py::arg("language_count") = 66, py::arg("source_count") = 6, py::arg("threads") = 1)
      .def_property_readonly("shard_count", &Dataset::shard_count)
      .def_property_readonly("document_count", &Dataset::document_count)
      .def_property_readonly("token_count", &Dataset::token_count)
      .def_property_readonly("vocab_size", &Dataset::vocab_size)
      .def("shard_path", [](const Dataset& d, size_t i) { return d.shard(i).path(); })
      .def("locate", [](const Dataset& d, uint64_t id) {
        const auto location = d.locate(id);
        return py::make_tuple(location.shard_index, location.document);
      })
      .def("document_tokens", [](const Dataset& d, uint64_t id) {
        const auto location = d.locate(id);
        const Shard& shard = *location.shard;
        const uint64_t begin = shard.document_begin(location.document), n = shard.document_length(location.document);
        auto out = torch::empty({static_cast<int64_t>(n)}, torch::kInt64);
        for (uint64_t i = 0; i < n; ++i) out.data_ptr<int64_t>()[i] = shard.token(begin + i);
        return out;
      });

  py::class_<PyLoader>(m, "Loader")
      .def(py::init(&make_loader), py::arg("dataset"), py::arg("config"), py::arg("bpe") = py::none())
      .def("next", &next_batch, "The next batch (dict of tensors) of this rank, or None after the last epoch.")
      .def("position", [](const PyLoader& self) {
        const Position p = self.loader->position();
        return py::make_tuple(p.epoch, p.row);
      })
      .def("seek", [](PyLoader& self, uint64_t epoch, uint64_t row) {
        py::gil_scoped_release release;
        self.loader->seek({epoch, row});
      })
      .def("close", [](PyLoader& self) {
        py::gil_scoped_release release;
        self.loader->close();
      })
      .def("rows", [](PyLoader& self, uint64_t epoch, uint64_t row, uint32_t count) {
        std::shared_ptr<Batch> batch;
        {
          py::gil_scoped_release release;
          batch = self.loader->rows({epoch, row}, count);
        }
        return batch_to_dict(batch);
      }, "`count` consecutive global rows from (epoch, row), made on the caller's thread (tools and tests).")
      .def("advance", [](PyLoader& self, uint64_t epoch, uint64_t row, uint64_t offset) {
        Position p;
        {
          py::gil_scoped_release release;
          p = self.loader->advance({epoch, row}, offset);
        }
        return py::make_tuple(p.epoch, p.row);
      })
      .def("row_count", [](PyLoader& self, uint64_t epoch) {
        py::gil_scoped_release release;
        return self.loader->row_count(epoch);
      })
      .def("plan", [](PyLoader& self, uint64_t epoch) {
        std::shared_ptr<const Plan> plan;
        {
          py::gil_scoped_release release;
          plan = self.loader->plan(epoch);
        }
        return plan_to_dict(*plan);
      })
      .def("kept_groups", [](const PyLoader& self) {
        py::list groups;
        for (const auto& group : self.loader->kept().groups)
          groups.append(py::make_tuple(group.name, group.weight, group.documents.size(), group.stream_tokens));
        return groups;
      })
      .def("kept_documents", [](const PyLoader& self) {
        std::vector<uint32_t> all;
        for (const auto& group : self.loader->kept().groups) all.insert(all.end(), group.documents.begin(), group.documents.end());
        std::sort(all.begin(), all.end());
        return int64_tensor(all);
      })
      .def_property_readonly("fingerprint", [](const PyLoader& self) { return self.loader->fingerprint(); })
      .def_property_readonly("layout_bytes", [](const PyLoader& self) { return BatchLayout::make(self.loader->config().batch_size,
                                                                                                  self.loader->config().plan.seq_len,
                                                                                                  self.loader->config().index_type).bytes; });

  register_fim_bindings(m);  // ByteLevelBPE, FimSpec, fim_apply_spm, fim_plan_spm, fim_decision (fim_bindings.cpp)
  m.def("loader_fim_seed", [](uint64_t seed) { return hash_key({0xF1Full, seed}); },
        "The seed the loader hands to FIM for its own `seed` (to reproduce a loader's FIM samples with fim_apply_spm).");
}
