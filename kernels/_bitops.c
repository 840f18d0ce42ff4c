/*
 * bitcl.kernels._bitops: the Python entry points of bitops.c.
 *
 * Each function takes the tensors' data pointers as integers and returns the
 * kernel's status (plus the first offending index where there is one);
 * bitcl/kernels/__init__.py checks dtypes, shapes, devices and contiguity
 * before calling, and turns a non-zero status into a bitcl exception.  The GIL
 * is released while a kernel runs.  Built against the stable ABI (3.10+).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#include "bitops.h"

#ifndef BITCL_BUILD_FLAGS
#define BITCL_BUILD_FLAGS ""
#endif

#define PTR(x) ((void *)(uintptr_t)(x))

static PyObject *py_first_nonfinite(PyObject *self, PyObject *args)
{
    unsigned long long x;
    long long n;
    int64_t bad = -1;
    int status;
    (void)self;
    if (!PyArg_ParseTuple(args, "KL", &x, &n))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    status = bitcl_first_nonfinite((const float *)PTR(x), (int64_t)n, &bad);
    Py_END_ALLOW_THREADS
    return Py_BuildValue("(iL)", status, (long long)bad);
}

static PyObject *py_project(PyObject *self, PyObject *args)
{
    unsigned long long latent, codes, frozen;
    long long n;
    int bits, threads, status;
    float scale, inv_scale;
    int64_t bad = -1;
    (void)self;
    if (!PyArg_ParseTuple(args, "KKKLiffi", &latent, &codes, &frozen, &n, &bits, &scale, &inv_scale, &threads))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    status = bitcl_project((float *)PTR(latent), (int32_t *)PTR(codes), (const uint8_t *)PTR(frozen),
                           (int64_t)n, bits, scale, inv_scale, threads, &bad);
    Py_END_ALLOW_THREADS
    return Py_BuildValue("(iL)", status, (long long)bad);
}

static PyObject *py_project_latent(PyObject *self, PyObject *args)
{
    unsigned long long latent, codes, frozen;
    long long n;
    int bits, check_codes, threads, status;
    float scale;
    int64_t bad = -1;
    (void)self;
    if (!PyArg_ParseTuple(args, "KKKLifpi", &latent, &codes, &frozen, &n, &bits, &scale, &check_codes, &threads))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    status = bitcl_project_latent((float *)PTR(latent), (const int32_t *)PTR(codes), (const uint8_t *)PTR(frozen),
                                  (int64_t)n, bits, scale, check_codes, threads, &bad);
    Py_END_ALLOW_THREADS
    return Py_BuildValue("(iL)", status, (long long)bad);
}

static PyObject *py_build_windows(PyObject *self, PyObject *args)
{
    unsigned long long codes, frozen, windows;
    long long n;
    int bits, width, status;
    int64_t bad = -1;
    (void)self;
    if (!PyArg_ParseTuple(args, "KKLiKi", &codes, &frozen, &n, &bits, &windows, &width))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    status = bitcl_build_windows((const int32_t *)PTR(codes), (const uint8_t *)PTR(frozen), (int64_t)n, bits,
                                 PTR(windows), width, &bad);
    Py_END_ALLOW_THREADS
    return Py_BuildValue("(iL)", status, (long long)bad);
}

static PyObject *py_project_windows(PyObject *self, PyObject *args)
{
    unsigned long long latent, windows;
    long long n;
    int width, bits, threads, status;
    float scale;
    int64_t bad = -1;
    (void)self;
    if (!PyArg_ParseTuple(args, "KKiLifi", &latent, &windows, &width, &n, &bits, &scale, &threads))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    status = bitcl_project_windows((float *)PTR(latent), (const void *)PTR(windows), width, (int64_t)n, bits, scale,
                                   threads, &bad);
    Py_END_ALLOW_THREADS
    return Py_BuildValue("(iL)", status, (long long)bad);
}

static PyObject *py_pack(PyObject *self, PyObject *args)
{
    unsigned long long codes, out;
    long long n, out_len;
    int bits, threads, status;
    int64_t bad = -1;
    (void)self;
    if (!PyArg_ParseTuple(args, "KLiKLi", &codes, &n, &bits, &out, &out_len, &threads))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    status = bitcl_pack((const int32_t *)PTR(codes), (int64_t)n, bits, (uint8_t *)PTR(out), (int64_t)out_len,
                        threads, &bad);
    Py_END_ALLOW_THREADS
    return Py_BuildValue("(iL)", status, (long long)bad);
}

static PyObject *py_unpack(PyObject *self, PyObject *args)
{
    unsigned long long packed, codes;
    long long packed_len, n;
    int bits, threads, status;
    (void)self;
    if (!PyArg_ParseTuple(args, "KLLiKi", &packed, &packed_len, &n, &bits, &codes, &threads))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    status = bitcl_unpack((const uint8_t *)PTR(packed), (int64_t)packed_len, (int64_t)n, bits,
                          (int32_t *)PTR(codes), threads);
    Py_END_ALLOW_THREADS
    return Py_BuildValue("(iL)", status, -1LL);
}

static PyObject *py_build_info(PyObject *self, PyObject *args)
{
    (void)self;
    (void)args;
    return Py_BuildValue("{s:O,s:s,s:s}", "openmp", bitcl_openmp() ? Py_True : Py_False, "isa", bitcl_isa(),
                         "flags", BITCL_BUILD_FLAGS);
}

static PyObject *py_set_isa(PyObject *self, PyObject *args)
{
    int avx2;
    (void)self;
    if (!PyArg_ParseTuple(args, "p", &avx2))
        return NULL;
    return PyBool_FromLong(bitcl_set_isa(avx2));
}

static PyMethodDef methods[] = {
    {"first_nonfinite", py_first_nonfinite, METH_VARARGS, "(ptr, n) -> (status, index)"},
    {"project", py_project, METH_VARARGS,
     "(latent, codes, frozen, n, bits, scale, inv_scale, threads) -> (status, index)"},
    {"project_latent", py_project_latent, METH_VARARGS,
     "(latent, codes, frozen, n, bits, scale, check_codes, threads) -> (status, index): codes left unchanged"},
    {"build_windows", py_build_windows, METH_VARARGS,
     "(codes, frozen, n, bits, windows, width) -> (status, index): one window word per weight"},
    {"project_windows", py_project_windows, METH_VARARGS,
     "(latent, windows, width, n, bits, scale, threads) -> (status, index): the latents clamped from window words"},
    {"pack", py_pack, METH_VARARGS, "(codes, n, bits, out, out_len, threads) -> (status, index)"},
    {"unpack", py_unpack, METH_VARARGS, "(packed, packed_len, n, bits, codes, threads) -> (status, -1)"},
    {"build_info", py_build_info, METH_NOARGS, "{'openmp': bool, 'isa': str, 'flags': str}"},
    {"set_isa", py_set_isa, METH_VARARGS, "(avx2: bool) -> bool: force the baseline or the AVX2 loops"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_bitops", "bitcl's C kernels (see bitops.c).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__bitops(void) { return PyModule_Create(&module); }
