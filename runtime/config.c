/* config.c - the settings table (defaults, YAML, environment, flags) and a small YAML reader. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "log.h"

static void env_name(const char *name, char *out, size_t cap) {
    size_t n = (size_t)snprintf(out, cap, "MAGNETO_");
    for (const char *p = name; *p && n + 1 < cap; p++)
        out[n++] = (*p == '-' || *p == '.') ? '_' : (char)toupper((unsigned char)*p);
    out[n] = 0;
}

static void yaml_name(const mg_cfg_opt *o, char *out, size_t cap) {
    if (o->yaml_key) {
        snprintf(out, cap, "%s", o->yaml_key);
        return;
    }
    size_t n = 0;
    for (const char *p = o->name; *p && n + 1 < cap; p++) out[n++] = *p == '-' ? '_' : *p;
    out[n] = 0;
}

static bool parse_bool(const char *t, bool *v) {
    if (!strcasecmp(t, "true") || !strcmp(t, "1") || !strcasecmp(t, "yes") ||
        !strcasecmp(t, "on")) {
        *v = true;
        return true;
    }
    if (!strcasecmp(t, "false") || !strcmp(t, "0") || !strcasecmp(t, "no") ||
        !strcasecmp(t, "off")) {
        *v = false;
        return true;
    }
    return false;
}

static bool bounded(const mg_cfg_opt *o) {
    return o->min <= o->max;
}

mg_status mg_cfg_set(mg_cfg_opt *o, const char *text, const char *source) {
    char *end;
    switch (o->type) {
    case MG_CFG_INT: {
        errno = 0;
        long long v = strtoll(text, &end, 0);
        if (errno || end == text || *end)
            return MG_ERRF(MG_EINVAL, "%s: %s: '%s' is not an integer", source, o->name, text);
        if (bounded(o) && (v < o->min || v > o->max))
            return MG_ERRF(MG_EINVAL, "%s: %s: %lld is outside [%.17g, %.17g]", source, o->name, v,
                           o->min, o->max);
        *(int64_t *)o->dst = v;
        return MG_OK;
    }
    case MG_CFG_DOUBLE: {
        errno = 0;
        double v = strtod(text, &end);
        if (errno || end == text || *end || !isfinite(v))
            return MG_ERRF(MG_EINVAL, "%s: %s: '%s' is not a number", source, o->name, text);
        if (bounded(o) && (v < o->min || v > o->max))
            return MG_ERRF(MG_EINVAL, "%s: %s: %g is outside [%g, %g]", source, o->name, v, o->min,
                           o->max);
        *(double *)o->dst = v;
        return MG_OK;
    }
    case MG_CFG_BOOL:
        if (!parse_bool(text, (bool *)o->dst))
            return MG_ERRF(MG_EINVAL, "%s: %s: '%s' is not true or false", source, o->name, text);
        return MG_OK;
    case MG_CFG_STR:
    case MG_CFG_YAML: {
        char **s = (char **)o->dst;
        char *copy = strdup(text);
        if (!copy) return MG_ERRF(MG_ENOMEM, "%s: %s: out of memory", source, o->name);
        free(*s);
        *s = copy;
        return MG_OK;
    }
    }
    return MG_ERRF(MG_EINVAL, "%s: bad option type", o->name);
}

void mg_cfg_free(mg_cfg_opt *opts, int n) {
    for (int i = 0; i < n; i++) {
        if (opts[i].type == MG_CFG_STR || opts[i].type == MG_CFG_YAML) {
            char **s = (char **)opts[i].dst;
            free(*s);
            *s = NULL;
        }
    }
}

void mg_cfg_print_help(const mg_cfg_opt *opts, int n, const char *prog, const char *summary,
                       int fd) {
    FILE *f = fdopen(dup(fd), "w");
    if (!f) return;
    fprintf(f, "usage: %s [--option VALUE ...]\n%s%s", prog, summary ? summary : "",
            summary ? "\n\n" : "\n");
    fprintf(f, "Each option is also read from the environment variable shown, and from a YAML "
               "file given by a file option.\n\n");
    static const char *const tn[] = {"INT", "NUM", "BOOL", "STR", "FILE"};
    for (int i = 0; i < n; i++) {
        const mg_cfg_opt *o = &opts[i];
        char env[96], yk[96];
        env_name(o->name, env, sizeof(env));
        yaml_name(o, yk, sizeof(yk));
        fprintf(f, "  --%-28s %-4s %s\n", o->name, tn[o->type], o->help ? o->help : "");
        fprintf(f, "      env %s, yaml %s", env, yk[0] ? yk : "-");
        if (o->def) fprintf(f, ", default %s", o->def);
        if (bounded(o) && (o->type == MG_CFG_INT || o->type == MG_CFG_DOUBLE))
            fprintf(f, ", range [%g, %g]", o->min, o->max);
        fprintf(f, "\n");
    }
    fclose(f);
}

typedef struct {
    mg_cfg_opt *opts;
    int n;
    const char *path;
} yaml_fill;

static mg_status fill_from_yaml(void *ud, const char *key, const char *value, int line) {
    yaml_fill *y = ud;
    for (int i = 0; i < y->n; i++) {
        /* A file does not name another: setting that row would free the path being read. */
        if (y->opts[i].type == MG_CFG_YAML) continue;
        char yk[96];
        yaml_name(&y->opts[i], yk, sizeof(yk));
        if (strcmp(yk, key) == 0) {
            char src[512];
            snprintf(src, sizeof(src), "%s:%d", y->path, line);
            return mg_cfg_set(&y->opts[i], value, src);
        }
    }
    MG_INFO("%s:%d: key '%s' is not used by this program; skipped", y->path, line, key);
    return MG_OK;
}

static mg_cfg_opt *find_flag(mg_cfg_opt *opts, int n, const char *name, size_t len) {
    for (int i = 0; i < n; i++)
        if (strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0) return &opts[i];
    return NULL;
}

/* Walk argv; for each flag call apply(opt, value). Only rows whose type matches `yaml_pass`
 * (YAML rows in the first pass, the rest in the second) are applied. */
static mg_status walk_argv(mg_cfg_opt *opts, int n, int argc, char **argv, bool yaml_pass) {
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (strncmp(arg, "--", 2) != 0)
            return MG_ERRF(MG_EINVAL, "unexpected argument '%s' (options start with --)", arg);
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        mg_cfg_opt *o = find_flag(opts, n, name, len);
        if (!o) return MG_ERRF(MG_EINVAL, "unknown option '--%.*s' (see --help)", (int)len, name);
        const char *val;
        if (eq) {
            val = eq + 1;
        } else if (o->type == MG_CFG_BOOL &&
                   (a + 1 >= argc || strncmp(argv[a + 1], "--", 2) == 0)) {
            val = "true";
        } else {
            if (a + 1 >= argc) return MG_ERRF(MG_EINVAL, "option --%s needs a value", o->name);
            val = argv[++a];
        }
        if ((o->type == MG_CFG_YAML) != yaml_pass) continue;
        char src[160];
        snprintf(src, sizeof(src), "flag --%s", o->name);
        mg_status s = mg_cfg_set(o, val, src);
        if (s) return s;
    }
    return MG_OK;
}

mg_status mg_cfg_parse(mg_cfg_opt *opts, int n, int argc, char **argv, const char *prog,
                       const char *summary) {
    for (int a = 1; a < argc; a++) {
        if (!strcmp(argv[a], "--help") || !strcmp(argv[a], "-h")) {
            mg_cfg_print_help(opts, n, prog, summary, 1);
            return MG_ECANCELED;
        }
    }
    mg_status s;
    for (int i = 0; i < n; i++) {
        if (opts[i].type == MG_CFG_STR || opts[i].type == MG_CFG_YAML) {
            free(*(char **)opts[i].dst); /* a second parse of the same table replaces the first */
            *(char **)opts[i].dst = NULL;
        }
        if (opts[i].def && (s = mg_cfg_set(&opts[i], opts[i].def, "default"))) return s;
    }
    /* YAML files first (from env, then flags), so that env and flags override their keys. */
    for (int i = 0; i < n; i++) {
        if (opts[i].type != MG_CFG_YAML) continue;
        char env[96];
        env_name(opts[i].name, env, sizeof(env));
        const char *v = getenv(env);
        if (v && *v && (s = mg_cfg_set(&opts[i], v, env))) return s;
    }
    if ((s = walk_argv(opts, n, argc, argv, true))) return s;
    for (int i = 0; i < n; i++) {
        if (opts[i].type != MG_CFG_YAML || !*(char **)opts[i].dst) continue;
        yaml_fill y = {opts, n, *(char **)opts[i].dst};
        if ((s = mg_yaml_load(y.path, fill_from_yaml, &y))) return s;
    }
    for (int i = 0; i < n; i++) {
        if (opts[i].type == MG_CFG_YAML) continue;
        char env[96];
        env_name(opts[i].name, env, sizeof(env));
        const char *v = getenv(env);
        if (v && (s = mg_cfg_set(&opts[i], v, env))) return s;
    }
    return walk_argv(opts, n, argc, argv, false);
}

/* ---- YAML subset ---------------------------------------------------------------------------- */

mg_status mg_yaml_load(const char *path, mg_yaml_cb cb, void *ud) {
    FILE *f = fopen(path, "rb");
    if (!f) return MG_ERRF(MG_EIO, "%s: cannot open: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (sz < 0 || sz > (1 << 24)) {
        fclose(f);
        return MG_ERRF(MG_EFORMAT, "%s: not a config file (size %ld)", path, sz);
    }
    char *text = malloc((size_t)sz + 1);
    if (!text) {
        fclose(f);
        return MG_ERRF(MG_ENOMEM, "%s: out of memory", path);
    }
    size_t got = fread(text, 1, (size_t)sz, f);
    fclose(f);
    text[got] = 0;
    mg_status s = mg_yaml_parse(text, path, cb, ud);
    free(text);
    return s;
}

/* A quote opens a quoted scalar only where a scalar starts; inside a plain one (the model's
 * card) it is an ordinary character. */
static bool quote_opens(const char *line, const char *p) {
    return (*p == '"' || *p == '\'') &&
           (p == line || p[-1] == ' ' || p[-1] == '[' || p[-1] == '{' || p[-1] == ',');
}

/* The closing quote of the quoted scalar that opens at p, or NULL: inside double quotes a
 * backslash escapes the next character, inside single quotes '' is a quote. */
static char *quote_end(char *p) {
    char q = *p;
    for (p++; *p; p++) {
        if (q == '"' && *p == '\\') {
            if (!*++p) return NULL;
        } else if (*p == q) {
            if (q == '\'' && p[1] == '\'') {
                p++;
                continue;
            }
            return p;
        }
    }
    return NULL;
}

static size_t utf8_put(char *out, uint32_t c) {
    if (c < 0x80) return out[0] = (char)c, 1;
    if (c < 0x800) return out[0] = (char)(0xC0 | c >> 6), out[1] = (char)(0x80 | (c & 63)), 2;
    if (c < 0x10000) {
        out[0] = (char)(0xE0 | c >> 12), out[1] = (char)(0x80 | (c >> 6 & 63));
        return out[2] = (char)(0x80 | (c & 63)), 3;
    }
    out[0] = (char)(0xF0 | c >> 18), out[1] = (char)(0x80 | (c >> 12 & 63));
    out[2] = (char)(0x80 | (c >> 6 & 63)), out[3] = (char)(0x80 | (c & 63));
    return 4;
}

/* Decode the quoted scalar from its opening quote at s to its closing quote at e (quote_end)
 * into out (cap bytes with the terminator; out may be s itself: the decoded text is never
 * longer). YAML's escapes in double quotes, '' in single quotes. Returns NULL, or why not. */
static const char *quote_decode(char *out, size_t cap, const char *s, const char *e) {
    char q = *s++;
    size_t n = 0;
    while (s < e) {
        char tmp[4];
        const char *src = s;
        size_t len = 1;
        if (q == '\'' && *s == '\'') {
            s += 2;
        } else if (q == '"' && *s == '\\') {
            char c = s[1];
            s += 2;
            /* YAML's one-character escapes (a backslash before a tab is a tab too) */
            static const char from[] = "abt\tnvfre \"/\\", to[] = "\a\b\t\t\n\v\f\r\x1b \"/\\";
            const char *f = c ? strchr(from, c) : NULL;
            char m = f ? to[f - from] : 0;
            if (c == '0') return "\\0 (NUL) in a quoted value";
            if (m) {
                tmp[0] = m, src = tmp;
            } else if (c == 'x' || c == 'u' || c == 'U' || c == 'N' || c == '_' || c == 'L' ||
                       c == 'P') {
                uint32_t cp = 0;
                int digits = c == 'x' ? 2 : c == 'u' ? 4 : c == 'U' ? 8 : 0;
                for (int i = 0; i < digits; i++, s++) {
                    int d = isdigit((unsigned char)*s) ? *s - '0'
                            : *s >= 'a' && *s <= 'f'   ? *s - 'a' + 10
                            : *s >= 'A' && *s <= 'F'   ? *s - 'A' + 10
                                                       : -1;
                    if (s >= e || d < 0) return "bad hex digits in a \\x, \\u or \\U escape";
                    cp = cp * 16 + (uint32_t)d;
                }
                if (c == 'N') cp = 0x85;
                if (c == '_') cp = 0xA0;
                if (c == 'L') cp = 0x2028;
                if (c == 'P') cp = 0x2029;
                if (cp == 0) return "\\0 (NUL) in a quoted value";
                if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
                    return "escape names no Unicode character";
                len = utf8_put(tmp, cp), src = tmp;
            } else {
                return "unknown escape in a double-quoted value";
            }
        } else {
            s++;
        }
        if (n + len >= cap) return "quoted value too long";
        memmove(out + n, src, len); /* in place, out + n never passes src */
        n += len;
    }
    out[n] = 0;
    return NULL;
}

/* Strip a trailing comment (a '#' after whitespace, outside quotes) and trailing spaces. */
static void strip_comment(char *s) {
    for (char *p = s; *p; p++) {
        if (quote_opens(s, p)) {
            char *e = quote_end(p);
            if (!e) break; /* unterminated: the parser reports it */
            p = e;
        } else if (*p == '#' && (p == s || isspace((unsigned char)p[-1]))) {
            *p = 0;
            break;
        }
    }
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
}

/* Unquote a scalar in place; returns NULL, or why not (an unterminated quote, text after the
 * closing quote, a bad escape). */
static const char *unquote(char *v) {
    if (v[0] != '"' && v[0] != '\'') return NULL;
    char *e = quote_end(v);
    if (!e) return "unterminated quote";
    if (e[1]) return "text after a closing quote";
    return quote_decode(v, strlen(v) + 1, v, e);
}

#define YAML_DEPTH 16

/* A plain null (null, Null, NULL, ~): the key is present without a value, as files dumped from
 * TensorRT-LLM's settings write unset fields; it is not reported, so the setting keeps its
 * default instead of failing to parse "null". */
static bool yaml_null(const char *v) {
    return !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") || !strcmp(v, "NULL");
}

/* Copy the flow scalar at *pp (quoted, or plain up to ',' or the closing bracket) into out,
 * unquoted and trimmed, and advance *pp past it. Returns false on an unterminated quote or a
 * scalar that does not fit. A flow list ("[1, 2]") is copied whole, as block values keep it. */
static bool flow_scalar(char **pp, char *out, size_t cap, bool *quoted) {
    char *p = *pp;
    size_t n = 0;
    *quoted = false;
    if (*p == '"' || *p == '\'') {
        char *e = quote_end(p);
        if (!e || quote_decode(out, cap, p, e)) return false;
        p = e + 1;
        *quoted = true;
        *pp = p;
        return true;
    } else if (*p == '[') {
        int nest = 0;
        char q = 0;
        for (; *p; p++) {
            if (n + 1 >= cap) return false;
            out[n++] = *p;
            if (q) {
                if (q == '"' && *p == '\\' && p[1]) { /* an escaped character, copied as is */
                    if (n + 1 >= cap) return false;
                    out[n++] = *++p;
                } else if (*p == q) {
                    q = 0;
                }
            } else if (*p == '"' || *p == '\'') {
                q = *p;
            } else if (*p == '[') {
                nest++;
            } else if (*p == ']' && --nest == 0) {
                p++;
                break;
            }
        }
        if (nest) return false;
    } else {
        while (*p && *p != ',' && *p != '}' && !(*p == ':' && (p[1] == ' ' || p[1] == ','))) {
            if (n + 1 >= cap) return false;
            out[n++] = *p++;
        }
        while (n && out[n - 1] == ' ') n--;
    }
    out[n] = 0;
    *pp = p;
    return true;
}

/* A flow map on one line, {a: 1, b: {c: 2}, d: [1, 2]}, as TensorRT-LLM configs often write
 * them: each scalar leaf goes to cb as prefix.key. *pp points at '{' and is advanced past the
 * matching '}'. */
static mg_status flow_map(char **pp, const char *prefix, int depth, const char *name, int line,
                          mg_yaml_cb cb, void *ud) {
    if (depth >= YAML_DEPTH) return MG_ERRF(MG_EFORMAT, "%s:%d: nested too deep", name, line);
    char *p = *pp + 1;
    for (;;) {
        while (*p == ' ') p++;
        if (*p == '}') break;
        char key[256], val[2048], full[512];
        bool quoted;
        if (!*p || !flow_scalar(&p, key, sizeof(key), &quoted) || !key[0])
            return MG_ERRF(MG_EFORMAT,
                           "%s:%d: flow map: expected a key (a map must close on its "
                           "line)",
                           name, line);
        while (*p == ' ') p++;
        if (*p != ':')
            return MG_ERRF(MG_EFORMAT, "%s:%d: flow map: expected ':' after key '%s'", name, line,
                           key);
        p++;
        while (*p == ' ') p++;
        if ((size_t)snprintf(full, sizeof(full), "%s.%s", prefix, key) >= sizeof(full))
            return MG_ERRF(MG_EFORMAT, "%s:%d: key too long", name, line);
        mg_status s;
        if (*p == '{') {
            if ((s = flow_map(&p, full, depth + 1, name, line, cb, ud))) return s;
        } else {
            if (!flow_scalar(&p, val, sizeof(val), &quoted))
                return MG_ERRF(MG_EFORMAT, "%s:%d: flow map: bad value of '%s'", name, line, key);
            if ((quoted || (val[0] && !yaml_null(val))) && (s = cb(ud, full, val, line))) return s;
        }
        while (*p == ' ') p++;
        if (*p == ',') {
            p++;
        } else if (*p != '}') {
            return MG_ERRF(MG_EFORMAT, "%s:%d: flow map: expected ',' or '}' after '%s'", name,
                           line, key);
        }
    }
    *pp = p + 1;
    return MG_OK;
}

mg_status mg_yaml_parse(const char *text, const char *name, mg_yaml_cb cb, void *ud) {
    char *copy = strdup(text);
    if (!copy) return MG_ERRF(MG_ENOMEM, "%s: out of memory", name);
    int indent[YAML_DEPTH];
    char *keys[YAML_DEPTH];
    int depth = 0;
    char list_key[512] = "";
    char list_val[2048] = "";
    int list_indent = -1, list_line = 0;
    bool seen_key = false;
    mg_status s = MG_OK;
    int line = 0;
    char *save = NULL;
    /* strtok_r would merge blank lines; count them by splitting on '\n' by hand. */
    for (char *ln = copy; ln && !s;) {
        char *nl = strchr(ln, '\n');
        if (nl) *nl = 0;
        line++;
        char *cur = ln;
        ln = nl ? nl + 1 : NULL;
        size_t cl = strlen(cur);
        if (cl && cur[cl - 1] == '\r') cur[cl - 1] = 0;
        strip_comment(cur);
        int ind = 0;
        while (cur[ind] == ' ') ind++;
        if (cur[ind] == '\t') {
            s = MG_ERRF(MG_EFORMAT, "%s:%d: tab in indentation", name, line);
            break;
        }
        char *body = cur + ind;
        if (!*body) continue;
        /* The document start marker may follow a comment header (a licence, say). */
        if (!strcmp(body, "---") && !seen_key) continue;
        if (body[0] == '-' && (body[1] == ' ' || body[1] == 0)) {
            /* Block list item: gather the items of the current key as "a,b,c". */
            if (list_indent < 0 || !list_key[0]) {
                s = MG_ERRF(MG_EFORMAT, "%s:%d: list item without a key", name, line);
                break;
            }
            char *item = body + 1;
            while (*item == ' ') item++;
            const char *why = unquote(item);
            if (why) {
                s = MG_ERRF(MG_EFORMAT, "%s:%d: %s", name, line, why);
                break;
            }
            size_t l = strlen(list_val);
            if ((size_t)snprintf(list_val + l, sizeof(list_val) - l, "%s%s", l ? "," : "", item) >=
                sizeof(list_val) - l) {
                /* A cut list would be a wrong value, not a short one. */
                s = MG_ERRF(MG_EFORMAT, "%s:%d: list of %s longer than %zu bytes", name, line,
                            list_key, sizeof(list_val) - 1);
                break;
            }
            continue;
        }
        if (list_key[0]) {
            if (list_val[0]) s = cb(ud, list_key, list_val, list_line);
            list_key[0] = list_val[0] = 0;
            list_indent = -1;
            if (s) break;
        }
        char *colon = NULL;
        {
            for (char *p = body; *p; p++) {
                if (quote_opens(body, p)) {
                    char *e = quote_end(p);
                    if (!e) break; /* unquote reports it */
                    p = e;
                } else if (*p == ':' && (p[1] == ' ' || p[1] == 0)) {
                    colon = p;
                    break;
                }
            }
        }
        if (!colon || colon == body) {
            s = MG_ERRF(MG_EFORMAT, "%s:%d: expected 'key: value'", name, line);
            break;
        }
        *colon = 0;
        seen_key = true;
        char *key = body;
        char *val = colon + 1;
        while (*val == ' ') val++;
        const char *why = unquote(key);
        if (why) {
            s = MG_ERRF(MG_EFORMAT, "%s:%d: %s in key", name, line, why);
            break;
        }
        if (val[0] == '&' || val[0] == '*' || val[0] == '|' || val[0] == '>' || val[0] == '!') {
            s = MG_ERRF(MG_EFORMAT, "%s:%d: anchors, tags and block scalars are not supported",
                        name, line);
            break;
        }
        while (depth > 0 && indent[depth - 1] >= ind) depth--;
        if (depth == YAML_DEPTH) {
            s = MG_ERRF(MG_EFORMAT, "%s:%d: nested too deep", name, line);
            break;
        }
        indent[depth] = ind;
        keys[depth] = key;
        char full[512];
        size_t fl = 0;
        full[0] = 0;
        for (int d = 0; d <= depth; d++)
            fl += (size_t)snprintf(full + fl, fl < sizeof(full) ? sizeof(full) - fl : 0, "%s%s",
                                   d ? "." : "", keys[d]);
        if (fl >= sizeof(full)) {
            s = MG_ERRF(MG_EFORMAT, "%s:%d: key too long", name, line);
            break;
        }
        if (!*val) {
            /* A map or a block list follows. */
            depth++;
            snprintf(list_key, sizeof(list_key), "%s", full);
            list_indent = ind;
            list_line = line;
            continue;
        }
        if (val[0] == '{') {
            char *p = val;
            if (!(s = flow_map(&p, full, depth + 1, name, line, cb, ud)) && *p)
                s = MG_ERRF(MG_EFORMAT, "%s:%d: text after the flow map", name, line);
            continue;
        }
        if (yaml_null(val)) continue;
        if ((why = unquote(val))) {
            s = MG_ERRF(MG_EFORMAT, "%s:%d: %s", name, line, why);
            break;
        }
        s = cb(ud, full, val, line);
    }
    if (!s && list_key[0] && list_val[0]) s = cb(ud, list_key, list_val, list_line);
    (void)save;
    free(copy);
    return s;
}
