/* safetensors.h - one safetensors file, mapped read-only and checked.
 *
 * Layout: an 8-byte little-endian header length N, N bytes of JSON header
 * {"__metadata__": {...}, "name": {"dtype": "BF16", "shape": [..], "data_offsets": [b, e]}, ...},
 * then the data section; offsets are relative to its start. st_open validates everything a
 * reader could trip on before any tensor is touched: N against the file size, the JSON, dtype
 * names, shape × element size against the offsets, offsets inside the data section, no overlap,
 * alignment to the element size, names valid UTF-8. Errors name the file and tensor.
 *
 * Ownership: st_file owns the mapping; tensor data pointers stay valid until st_close. Read-only
 * after opening, so any thread may read it. */
#ifndef MG_SAFETENSORS_H
#define MG_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define ST_MAX_DIMS 8

typedef enum st_dtype {
    ST_BOOL,
    ST_U8,
    ST_I8,
    ST_F8_E4M3,
    ST_F8_E5M2,
    ST_I16,
    ST_U16,
    ST_F16,
    ST_BF16,
    ST_I32,
    ST_U32,
    ST_F32,
    ST_I64,
    ST_U64,
    ST_F64,
    ST_NDTYPES
} st_dtype;

typedef struct st_tensor {
    const char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data; /* inside the mapping */
    size_t nbytes;
} st_tensor;

typedef struct st_file {
    char *path;
    int n_tensors;
    st_tensor *tensors;
    /* private */
    void *map;
    size_t map_size;
    void *doc;
} st_file;

mg_status st_open(const char *path, st_file **out);
void st_close(st_file *f);
const st_tensor *st_find(const st_file *f, const char *name);

const char *st_dtype_name(st_dtype d); /* "BF16" */
size_t st_dtype_size(st_dtype d);
/* "[201088, 64]" into buf. */
const char *st_shape_str(const int64_t *shape, int ndim, char *buf, size_t cap);

#endif
