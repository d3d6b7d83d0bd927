// Python bindings of the byte-level BPE and fill-in-the-middle (tests, tools). The module init of
// seedcoder._C calls register_fim_bindings(m). C++ exceptions become Python ones through pybind11:
// std::invalid_argument -> ValueError, std::out_of_range -> IndexError; ids that do not fit u32 -> TypeError.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "bpe.h"
#include "fim.h"

namespace py = pybind11;
using seedcoder::fim::ByteLevelBPE;
using seedcoder::fim::FimSpec;

void register_fim_bindings(py::module_& m) {
  py::class_<ByteLevelBPE, std::shared_ptr<ByteLevelBPE>>(
      m, "ByteLevelBPE",
      "Byte-level BPE over fragments of one pre-token. Build it from seedcoder.data.tokenizer_tables: "
      "ByteLevelBPE(tables.id_to_bytes, tables.merges, tables.ignore_merges).")
      .def(py::init([](std::vector<std::string> id_to_bytes, const std::vector<std::pair<uint32_t, uint32_t>>& merges,
                       bool ignore_merges) {
             py::gil_scoped_release release;
             return std::make_shared<ByteLevelBPE>(std::move(id_to_bytes), merges, ignore_merges);
           }),
           py::arg("id_to_bytes"), py::arg("merges"), py::arg("ignore_merges") = false)
      .def(
          "encode",
          [](const ByteLevelBPE& bpe, const std::string& data) {
            std::vector<uint32_t> out;
            bpe.encode(data, out);
            return out;
          },
          py::arg("data"), "BPE token ids of `data` (bytes, or str as UTF-8), taken as one pre-token.")
      .def(
          "token_bytes", [](const ByteLevelBPE& bpe, uint32_t id) { return py::bytes(bpe.token_bytes(id)); }, py::arg("id"))
      .def("is_atomic", &ByteLevelBPE::is_atomic, py::arg("id"))
      .def(
          "char_count",
          [](const ByteLevelBPE& bpe, uint32_t id) {
            bpe.token_bytes(id);  // range check
            return bpe.char_counts()[id];
          },
          py::arg("id"))
      .def_property_readonly("vocab_size", &ByteLevelBPE::vocab_size)
      .def_property_readonly("merge_count", &ByteLevelBPE::merge_count)
      .def_property_readonly("ignore_merges", &ByteLevelBPE::ignore_merges);

  py::class_<FimSpec>(m, "FimSpec", "FIM marker ids, rate and split granularity (see csrc/loader/fim.h).")
      .def(py::init([](uint32_t suffix_id, uint32_t prefix_id, uint32_t middle_id, uint32_t eos_id, double rate,
                       bool token_level) { return FimSpec{suffix_id, prefix_id, middle_id, eos_id, rate, token_level}; }),
           py::arg("suffix_id"), py::arg("prefix_id"), py::arg("middle_id"), py::arg("eos_id"), py::arg("rate"),
           py::arg("token_level") = false)
      .def_readwrite("suffix_id", &FimSpec::suffix_id)
      .def_readwrite("prefix_id", &FimSpec::prefix_id)
      .def_readwrite("middle_id", &FimSpec::middle_id)
      .def_readwrite("eos_id", &FimSpec::eos_id)
      .def_readwrite("rate", &FimSpec::rate)
      .def_readwrite("token_level", &FimSpec::token_level)
      .def("__repr__", [](const FimSpec& spec) {
        return "FimSpec(suffix_id=" + std::to_string(spec.suffix_id) + ", prefix_id=" + std::to_string(spec.prefix_id) +
               ", middle_id=" + std::to_string(spec.middle_id) + ", eos_id=" + std::to_string(spec.eos_id) +
               ", rate=" + std::to_string(spec.rate) + ", token_level=" + (spec.token_level ? "True" : "False") + ")";
      });

  m.def(
      "fim_apply_spm",
      [](const std::vector<uint32_t>& tokens, const ByteLevelBPE& bpe, const FimSpec& spec, uint64_t seed, uint64_t epoch,
         uint64_t doc_id) -> std::optional<std::vector<uint32_t>> {
        std::vector<uint32_t> out;
        bool applied;
        {
          py::gil_scoped_release release;
          applied = seedcoder::fim::apply_spm(tokens.data(), tokens.size(), bpe, spec, seed, epoch, doc_id, out);
        }
        if (!applied) return std::nullopt;
        return out;
      },
      py::arg("tokens"), py::arg("bpe"), py::arg("spec"), py::arg("seed"), py::arg("epoch"), py::arg("doc_id"),
      "The SPM sample of one document (a list of ids ending with eos), or None when the document gets no FIM.");
  m.def(
      "fim_plan_spm",
      [](const std::vector<uint32_t>& tokens, const ByteLevelBPE& bpe, const FimSpec& spec, uint64_t seed, uint64_t epoch,
         uint64_t doc_id) {
        const auto plan = seedcoder::fim::plan_spm(tokens.data(), tokens.size(), bpe, spec, seed, epoch, doc_id);
        return std::make_tuple(plan.apply, plan.length, plan.middle_begin, plan.middle_end);
      },
      py::arg("tokens"), py::arg("bpe"), py::arg("spec"), py::arg("seed"), py::arg("epoch"), py::arg("doc_id"),
      "(apply, length, middle_begin, middle_end): where fim_apply_spm cuts, in characters (tokens when token_level) "
      "of the document without its trailing eos.");
  m.def("fim_decision", &seedcoder::fim::fim_decision, py::arg("rate"), py::arg("seed"), py::arg("epoch"), py::arg("doc_id"),
        "Whether (seed, epoch, doc_id) gets FIM at this rate (no range check on rate).");
}
