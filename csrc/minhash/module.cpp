// seedcoder._minhash: Python bindings of minhash.h with the plain CPython API (no torch, no numpy headers: arrays
// come in through the buffer protocol), so near dedup imports fast in every worker process. The public API with
// argument checking is seedcoder/curate/near_dedup.py; these functions check what could corrupt memory (types,
// buffer sizes) and release the GIL for all the work.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cmath>
#include <new>
#include <string>
#include <vector>

#include "minhash.h"

namespace mh = seedcoder::minhash;

namespace {

// A contiguous buffer of `itemsize`-byte items, released on scope exit.
class Buffer {
 public:
  Buffer(PyObject* object, const char* name, Py_ssize_t itemsize, bool writable) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(object, &view_, flags) != 0) return;
    acquired_ = true;
    if (view_.itemsize != itemsize) {
      PyErr_Format(PyExc_TypeError, "%s: expected %zd-byte items, got %zd-byte items", name, itemsize, view_.itemsize);
      return;
    }
    ok_ = true;
  }
  ~Buffer() {
    if (acquired_) PyBuffer_Release(&view_);
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  bool ok() const { return ok_; }
  Py_ssize_t items() const { return view_.len / view_.itemsize; }
  template <typename T>
  T* data() const { return static_cast<T*>(view_.buf); }

 private:
  Py_buffer view_{};
  bool acquired_ = false;
  bool ok_ = false;
};

bool text_view(PyObject* item, const char* argument, Py_ssize_t index, mh::TextView* out) {
  if (!PyUnicode_Check(item)) {
    if (index >= 0) {
      PyErr_Format(PyExc_TypeError, "%s[%zd] must be str, got %s", argument, index, Py_TYPE(item)->tp_name);
    } else {
      PyErr_Format(PyExc_TypeError, "%s must be str, got %s", argument, Py_TYPE(item)->tp_name);
    }
    return false;
  }
#if PY_VERSION_HEX < 0x030C0000
  if (PyUnicode_READY(item) != 0) return false;
#endif
  out->data = PyUnicode_DATA(item);
  out->length = static_cast<size_t>(PyUnicode_GET_LENGTH(item));
  out->width = PyUnicode_KIND(item);
  return true;
}

// Strong references to the texts for as long as the GIL is released: another thread may change the list meanwhile.
class HeldTexts {
 public:
  ~HeldTexts() {
    for (PyObject* item : items_) Py_DECREF(item);
  }
  bool add(PyObject* item, Py_ssize_t index) {
    mh::TextView view;
    if (!text_view(item, "texts", index, &view)) return false;
    items_.push_back(Py_NewRef(item));
    views_.push_back(view);
    return true;
  }
  const std::vector<mh::TextView>& views() const { return views_; }

 private:
  std::vector<PyObject*> items_;
  std::vector<mh::TextView> views_;
};

PyObject* py_signatures(PyObject*, PyObject* args) {
  PyObject *texts, *a_object, *b_object, *out_object;
  Py_ssize_t ngram;
  if (!PyArg_ParseTuple(args, "OnOOO:signatures", &texts, &ngram, &a_object, &b_object, &out_object)) return nullptr;
  if (ngram < 1) return PyErr_Format(PyExc_ValueError, "ngram must be >= 1, got %zd", ngram);
  if (PyUnicode_Check(texts) || PyBytes_Check(texts)) {
    return PyErr_Format(PyExc_TypeError, "texts must be a sequence of str, got a single %s", Py_TYPE(texts)->tp_name);
  }
  HeldTexts held;
  {
    PyObject* sequence = PySequence_Fast(texts, "texts must be a sequence of str");
    if (sequence == nullptr) return nullptr;
    const Py_ssize_t count = PySequence_Fast_GET_SIZE(sequence);
    PyObject** items = PySequence_Fast_ITEMS(sequence);
    bool ok = true;
    for (Py_ssize_t i = 0; i < count && ok; ++i) ok = held.add(items[i], i);
    Py_DECREF(sequence);
    if (!ok) return nullptr;
  }
  const auto count = static_cast<Py_ssize_t>(held.views().size());
  Buffer a(a_object, "a", 4, false), b(b_object, "b", 4, false), out(out_object, "out", 4, true);
  if (!a.ok() || !b.ok() || !out.ok()) return nullptr;
  const Py_ssize_t num_perm = a.items();
  if (num_perm < 1 || b.items() != num_perm) {
    return PyErr_Format(PyExc_ValueError, "a and b must hold the same number (>= 1) of values, got %zd and %zd",
                        num_perm, b.items());
  }
  if (out.items() != count * num_perm) {
    return PyErr_Format(PyExc_ValueError, "out must hold %zd x %zd values, got %zd", count, num_perm, out.items());
  }
  bool out_of_memory = false;
  Py_BEGIN_ALLOW_THREADS
  try {
    mh::signatures(held.views().data(), held.views().size(), static_cast<size_t>(ngram), a.data<uint32_t>(),
                   b.data<uint32_t>(), static_cast<size_t>(num_perm), out.data<uint32_t>());
  } catch (const std::bad_alloc&) {
    out_of_memory = true;
  }
  Py_END_ALLOW_THREADS
  if (out_of_memory) return PyErr_NoMemory();
  Py_RETURN_NONE;
}

PyObject* py_shingles(PyObject*, PyObject* args) {
  PyObject* text;
  Py_ssize_t ngram;
  if (!PyArg_ParseTuple(args, "On:shingles", &text, &ngram)) return nullptr;
  if (ngram < 1) return PyErr_Format(PyExc_ValueError, "ngram must be >= 1, got %zd", ngram);
  mh::TextView view;
  if (!text_view(text, "text", -1, &view)) return nullptr;
  std::vector<std::string> shingles;
  try {
    shingles = mh::shingles(view, static_cast<size_t>(ngram));
  } catch (const std::bad_alloc&) {
    return PyErr_NoMemory();
  }
  PyObject* list = PyList_New(static_cast<Py_ssize_t>(shingles.size()));
  if (list == nullptr) return nullptr;
  for (size_t i = 0; i < shingles.size(); ++i) {
    PyObject* item = PyBytes_FromStringAndSize(shingles[i].data(), static_cast<Py_ssize_t>(shingles[i].size()));
    if (item == nullptr) {
      Py_DECREF(list);
      return nullptr;
    }
    PyList_SET_ITEM(list, static_cast<Py_ssize_t>(i), item);
  }
  return list;
}

PyObject* py_murmur3_32(PyObject*, PyObject* args) {
  Py_buffer data;
  unsigned long seed = 0;
  if (!PyArg_ParseTuple(args, "y*|k:murmur3_32", &data, &seed)) return nullptr;
  const uint32_t h = mh::murmur3_32(static_cast<const uint8_t*>(data.buf), static_cast<size_t>(data.len),
                                    static_cast<uint32_t>(seed));
  PyBuffer_Release(&data);
  return PyLong_FromUnsignedLong(h);
}

PyObject* py_cluster(PyObject*, PyObject* args) {
  PyObject *signatures_object, *out_object;
  Py_ssize_t num_perm, bands, rows;
  int verify;
  double threshold;
  if (!PyArg_ParseTuple(args, "OnnnpdO:cluster", &signatures_object, &num_perm, &bands, &rows, &verify, &threshold,
                        &out_object)) {
    return nullptr;
  }
  if (num_perm < 1 || bands < 1 || rows < 1 || bands * rows > num_perm) {
    return PyErr_Format(PyExc_ValueError, "need bands >= 1, rows >= 1, bands * rows <= num_perm; got %zd x %zd, %zd",
                        bands, rows, num_perm);
  }
  if (verify && !(threshold > 0.0 && threshold <= 1.0)) {
    return PyErr_Format(PyExc_ValueError, "threshold must be in (0, 1], got %R", PyTuple_GET_ITEM(args, 5));
  }
  Buffer signatures(signatures_object, "signatures", 4, false), out(out_object, "out", 8, true);
  if (!signatures.ok() || !out.ok()) return nullptr;
  if (signatures.items() % num_perm != 0 || signatures.items() / num_perm != out.items()) {
    return PyErr_Format(PyExc_ValueError, "signatures hold %zd values: not %zd rows of %zd", signatures.items(),
                        out.items(), num_perm);
  }
  bool out_of_memory = false;
  Py_BEGIN_ALLOW_THREADS
  try {
    mh::cluster(signatures.data<uint32_t>(), static_cast<size_t>(out.items()), static_cast<size_t>(num_perm),
                static_cast<size_t>(bands), static_cast<size_t>(rows), verify != 0, threshold, out.data<int64_t>());
  } catch (const std::bad_alloc&) {
    out_of_memory = true;
  }
  Py_END_ALLOW_THREADS
  if (out_of_memory) return PyErr_NoMemory();
  Py_RETURN_NONE;
}

PyObject* py_simd_path(PyObject*, PyObject*) { return PyUnicode_FromString(mh::simd_path()); }

PyObject* py_force_generic(PyObject*, PyObject* args) {
  int generic;
  if (!PyArg_ParseTuple(args, "p:force_generic", &generic)) return nullptr;
  mh::force_generic(generic != 0);
  return PyUnicode_FromString(mh::simd_path());
}

PyMethodDef kMethods[] = {
    {"signatures", py_signatures, METH_VARARGS,
     "signatures(texts, ngram, a, b, out): fill out (uint32, len(texts) x len(a)) with the MinHash signatures."},
    {"shingles", py_shingles, METH_VARARGS, "shingles(text, ngram) -> list[bytes]: the shingles, in text order."},
    {"murmur3_32", py_murmur3_32, METH_VARARGS, "murmur3_32(data: bytes, seed=0) -> int: MurmurHash3_x86_32."},
    {"cluster", py_cluster, METH_VARARGS,
     "cluster(signatures, num_perm, bands, rows, verify, threshold, out): fill out (int64) with each row's cluster "
     "representative (lowest row index)."},
    {"simd_path", py_simd_path, METH_NOARGS, "simd_path() -> 'avx2' or 'generic': the signature kernel in use."},
    {"force_generic", py_force_generic, METH_VARARGS,
     "force_generic(flag) -> str: use the generic kernel even where AVX2 exists (tests); returns the path in use."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "seedcoder._minhash",
                       "MinHash signatures and LSH clustering (C++); use seedcoder.curate.near_dedup.", -1, kMethods,
                       nullptr, nullptr, nullptr, nullptr};

}  // namespace

PyMODINIT_FUNC PyInit__minhash() { return PyModule_Create(&kModule); }
