/* safetensors.c - mmap a safetensors file and validate its header (see safetensors.h). */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mjson.h"

static const struct {
    const char *name;
    size_t size;
} dtypes[ST_NDTYPES] = {
    [ST_BOOL] = {"BOOL", 1},       [ST_U8] = {"U8", 1},           [ST_I8] = {"I8", 1},
    [ST_F8_E4M3] = {"F8_E4M3", 1}, [ST_F8_E5M2] = {"F8_E5M2", 1}, [ST_I16] = {"I16", 2},
    [ST_U16] = {"U16", 2},         [ST_F16] = {"F16", 2},         [ST_BF16] = {"BF16", 2},
    [ST_I32] = {"I32", 4},         [ST_U32] = {"U32", 4},         [ST_F32] = {"F32", 4},
    [ST_I64] = {"I64", 8},         [ST_U64] = {"U64", 8},         [ST_F64] = {"F64", 8},
};

const char *st_dtype_name(st_dtype d) {
    return (unsigned)d < ST_NDTYPES ? dtypes[d].name : "?";
}

size_t st_dtype_size(st_dtype d) {
    return (unsigned)d < ST_NDTYPES ? dtypes[d].size : 0;
}

const char *st_shape_str(const int64_t *shape, int ndim, char *buf, size_t cap) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, cap - k, "[");
    for (int i = 0; i < ndim && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
    return buf;
}

static int cmp_offset(const void *a, const void *b) {
    const st_tensor *x = *(st_tensor *const *)a, *y = *(st_tensor *const *)b;
    uintptr_t px = (uintptr_t)x->data, py = (uintptr_t)y->data;
    return px < py ? -1 : px > py;
}

/* Parse one header entry; data is the start of the data section of data_len bytes. */
static mg_status parse_entry(const char *path, const mjson *e, const unsigned char *data,
                             uint64_t data_len, st_tensor *t) {
    t->name = e->key;
    if (e->type != MJSON_OBJ)
        return MG_ERRF(MG_EFORMAT, "%s: tensor %s: header entry is not an object", path, t->name);
    const mjson *dt = mjson_get(e, "dtype"), *sh = mjson_get(e, "shape"),
                *off = mjson_get(e, "data_offsets");
    if (!dt || dt->type != MJSON_STR)
        return MG_ERRF(MG_EFORMAT, "%s: tensor %s: dtype missing", path, t->name);
    t->dtype = ST_NDTYPES;
    for (int d = 0; d < ST_NDTYPES; d++)
        if (strcmp(dt->str, dtypes[d].name) == 0) t->dtype = (st_dtype)d;
    if (t->dtype == ST_NDTYPES)
        return MG_ERRF(MG_EFORMAT, "%s: tensor %s: unknown dtype \"%s\"", path, t->name, dt->str);
    if (!sh || sh->type != MJSON_ARR || sh->len > ST_MAX_DIMS)
        return MG_ERRF(MG_EFORMAT, "%s: tensor %s: shape is not a list of at most %d integers",
                       path, t->name, ST_MAX_DIMS);
    /* Element count with overflow checks: a hostile shape must not wrap to a small size. */
    uint64_t count = 1;
    t->ndim = 0;
    for (const mjson *d = sh->kid; d; d = d->next) {
        int64_t v;
        if (!mjson_int(d, &v) || v < 0)
            return MG_ERRF(MG_EFORMAT, "%s: tensor %s: shape has a bad dimension", path, t->name);
        t->shape[t->ndim++] = v;
        if (v && count > UINT64_MAX / 16 / (uint64_t)v)
            return MG_ERRF(MG_EFORMAT, "%s: tensor %s: shape is too large", path, t->name);
        count *= (uint64_t)v;
    }
    int64_t b, en;
    if (!off || off->type != MJSON_ARR || off->len != 2 || !mjson_int(off->kid, &b) ||
        !mjson_int(off->kid->next, &en) || b < 0 || en < b)
        return MG_ERRF(MG_EFORMAT, "%s: tensor %s: data_offsets is not [begin, end]", path,
                       t->name);
    uint64_t want = count * dtypes[t->dtype].size;
    char sbuf[160];
    if ((uint64_t)(en - b) != want)
        return MG_ERRF(
            MG_EFORMAT, "%s: tensor %s: %s %s needs %llu bytes but data_offsets span %lld", path,
            t->name, dtypes[t->dtype].name, st_shape_str(t->shape, t->ndim, sbuf, sizeof(sbuf)),
            (unsigned long long)want, (long long)(en - b));
    if ((uint64_t)en > data_len)
        return MG_ERRF(MG_EFORMAT,
                       "%s: tensor %s: data [%lld, %lld) runs past the end of the file (data "
                       "section is %llu bytes; truncated?)",
                       path, t->name, (long long)b, (long long)en, (unsigned long long)data_len);
    t->data = data + b;
    t->nbytes = (size_t)want;
    if ((uintptr_t)t->data % dtypes[t->dtype].size)
        return MG_ERRF(MG_EFORMAT,
                       "%s: tensor %s: data offset %lld is not aligned to its %zu-byte "
                       "elements",
                       path, t->name, (long long)b, dtypes[t->dtype].size);
    return MG_OK;
}

static mg_status parse_header(st_file *f) {
    const unsigned char *m = f->map;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | m[i];
    if (n > f->map_size - 8)
        return MG_ERRF(MG_EFORMAT,
                       "%s: header length %llu runs past the end of the file (%zu bytes)", f->path,
                       (unsigned long long)n, f->map_size);
    if (n > (100u << 20))
        return MG_ERRF(MG_EFORMAT, "%s: header length %llu exceeds 100 MiB", f->path,
                       (unsigned long long)n);
    mjson_doc *doc;
    mg_status st = mjson_parse((const char *)m + 8, (size_t)n, f->path, &doc);
    if (st) return st;
    f->doc = doc;
    const mjson *root = mjson_root(doc);
    if (root->type != MJSON_OBJ)
        return MG_ERRF(MG_EFORMAT, "%s: header is not a JSON object", f->path);
    f->tensors = calloc(root->len ? root->len : 1, sizeof(st_tensor));
    if (!f->tensors) return MG_ERRF(MG_ENOMEM, "%s: out of memory", f->path);
    const unsigned char *data = m + 8 + n;
    uint64_t data_len = f->map_size - 8 - n;
    for (const mjson *e = root->kid; e; e = e->next) {
        if (strcmp(e->key, "__metadata__") == 0) continue;
        if ((st = parse_entry(f->path, e, data, data_len, &f->tensors[f->n_tensors]))) return st;
        for (int i = 0; i < f->n_tensors; i++)
            if (strcmp(f->tensors[i].name, e->key) == 0)
                return MG_ERRF(MG_EFORMAT, "%s: tensor %s appears twice in the header", f->path,
                               e->key);
        f->n_tensors++;
    }
    /* No two tensors may share bytes. */
    st_tensor **order = malloc(sizeof(*order) * (f->n_tensors ? f->n_tensors : 1));
    if (!order) return MG_ERRF(MG_ENOMEM, "%s: out of memory", f->path);
    for (int i = 0; i < f->n_tensors; i++) order[i] = &f->tensors[i];
    qsort(order, f->n_tensors, sizeof(*order), cmp_offset);
    for (int i = 1; i < f->n_tensors; i++) {
        const st_tensor *a = order[i - 1], *b = order[i];
        if ((const unsigned char *)a->data + a->nbytes > (const unsigned char *)b->data) {
            st = MG_ERRF(MG_EFORMAT, "%s: tensors %s and %s overlap", f->path, a->name, b->name);
            break;
        }
    }
    free(order);
    return st;
}

mg_status st_open(const char *path, st_file **out) {
    *out = NULL;
    st_file *f = calloc(1, sizeof(*f));
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return MG_ERRF(MG_ENOMEM, "%s: out of memory", path);
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        mg_status st = MG_ERRF(errno == ENOENT ? MG_ENOTFOUND : MG_EIO, "%s: cannot open: %s", path,
                               strerror(errno));
        st_close(f);
        return st;
    }
    struct stat sb;
    mg_status st = MG_OK;
    if (fstat(fd, &sb) != 0) {
        st = MG_ERRF(MG_EIO, "%s: cannot stat: %s", path, strerror(errno));
    } else if (sb.st_size < 8) {
        st = MG_ERRF(MG_EFORMAT, "%s: file of %lld bytes is too short for a safetensors header",
                     path, (long long)sb.st_size);
    } else {
        f->map_size = (size_t)sb.st_size;
        f->map = mmap(NULL, f->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (f->map == MAP_FAILED) {
            f->map = NULL;
            st = MG_ERRF(MG_EIO, "%s: cannot map: %s", path, strerror(errno));
        }
    }
    close(fd);
    if (!st) st = parse_header(f);
    if (st) {
        st_close(f);
        return st;
    }
    *out = f;
    return MG_OK;
}

void st_close(st_file *f) {
    if (!f) return;
    if (f->map) munmap(f->map, f->map_size);
    mjson_free(f->doc);
    free(f->tensors);
    free(f->path);
    free(f);
}

const st_tensor *st_find(const st_file *f, const char *name) {
    for (int i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}
