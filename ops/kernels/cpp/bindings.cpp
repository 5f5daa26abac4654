// The Python module of the C++ CPU kernels: one extension built from gaunt_cpp.cpp, so2_cpp.cpp
// and this file (the only one that needs pybind11's headers). See build.py.

#include <torch/extension.h>

#include "cpu_kernels.h"

// Other Python threads may run meanwhile: the kernels touch no Python object.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("gaunt_product", &gaunt_product, "Gaunt sphere-grid products (CPU)", py::call_guard<py::gil_scoped_release>());
  m.def("so2_forward", &so2_forward, "SO(2) convolution (CPU)", py::call_guard<py::gil_scoped_release>());
  m.def("so2_backward", &so2_backward, "its gradients (CPU)", py::call_guard<py::gil_scoped_release>());
}
