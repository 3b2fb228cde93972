/* openai.c - OpenAI request parsing and validation, error bodies, response and SSE writers.
 * See openai.h. The validation follows what OpenAI and vLLM answer: a field of the wrong type is
 * 400 invalid_type naming the field, a value out of range is 400 invalid_value, a missing
 * required field is 400 missing_required_parameter. Unknown fields are ignored, as vLLM does, so
 * that clients sending extensions (logprobs, nvext keys we do not know) still work. */
#include "openai.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* ---- buffer ---- */

void oai_buf_free(oai_buf *b) {
    if (!b) return;
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

mg_status oai_buf_reserve(oai_buf *b, size_t n) {
    if (b->len + n + 1 <= b->cap) return MG_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return MG_ERRF(MG_ENOMEM, "buffer of %zu bytes", cap);
    b->p = p;
    b->cap = cap;
    return MG_OK;
}

mg_status oai_buf_put(oai_buf *b, const char *s, size_t n) {
    if (oai_buf_reserve(b, n)) return MG_ENOMEM;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
    return MG_OK;
}

mg_status oai_buf_puts(oai_buf *b, const char *s) {
    return oai_buf_put(b, s, strlen(s));
}

mg_status oai_buf_printf(oai_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char tmp[256];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return MG_ERRF(MG_EINVAL, "format");
    if ((size_t)n < sizeof tmp) return oai_buf_put(b, tmp, (size_t)n);
    if (oai_buf_reserve(b, (size_t)n)) return MG_ENOMEM;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return MG_OK;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when invalid or truncated. */
static size_t utf8_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    size_t need;
    unsigned min;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF)
        need = 2, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF)
        need = 3, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4)
        need = 4, min = 0x10000;
    else
        return 0;
    if (n < need) return 0;
    unsigned cp = c & (0x3F >> (need - 1));
    for (size_t i = 1; i < need; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return need;
}

mg_status oai_buf_json_str(oai_buf *b, const char *s, size_t n) {
    /* Worst case 6 bytes per input byte (\u00XX); reserve once so the loop only stores. */
    if (oai_buf_reserve(b, n * 6)) return MG_ENOMEM;
    static const char hex[] = "0123456789abcdef";
    char *o = b->p + b->len;
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = u[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            *o++ = (char)c;
            i++;
            continue;
        }
        if (c >= 0x80) {
            size_t k = utf8_len(u + i, n - i);
            if (k == 0) { /* U+FFFD keeps the body valid JSON whatever the bytes were */
                memcpy(o, "\xEF\xBF\xBD", 3);
                o += 3;
                i++;
            } else {
                memcpy(o, u + i, k);
                o += k;
                i += k;
            }
            continue;
        }
        *o++ = '\\';
        switch (c) {
        case '"':
            *o++ = '"';
            break;
        case '\\':
            *o++ = '\\';
            break;
        case '\n':
            *o++ = 'n';
            break;
        case '\r':
            *o++ = 'r';
            break;
        case '\t':
            *o++ = 't';
            break;
        case '\b':
            *o++ = 'b';
            break;
        case '\f':
            *o++ = 'f';
            break;
        default:
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
        i++;
    }
    b->len = (size_t)(o - b->p);
    b->p[b->len] = 0;
    return MG_OK;
}

/* ---- errors ---- */

mg_status oai_fail(oai_error *e, int http_status, const char *type, const char *code,
                   const char *param, const char *fmt, ...) {
    e->status = http_status;
    e->type = type;
    e->code = code;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return MG_EINVAL;
}

mg_status oai_error_json(const oai_error *e, oai_buf *b) {
    mg_status s = oai_buf_puts(b, "{\"error\":{\"message\":\"");
    s |= oai_buf_json_str(b, e->message, strlen(e->message));
    s |= oai_buf_puts(b, "\",\"type\":\"");
    s |= oai_buf_puts(b, e->type ? e->type : "invalid_request_error");
    s |= oai_buf_puts(b, "\",\"param\":");
    if (e->param[0]) {
        s |= oai_buf_puts(b, "\"");
        s |= oai_buf_json_str(b, e->param, strlen(e->param));
        s |= oai_buf_puts(b, "\"");
    } else {
        s |= oai_buf_puts(b, "null");
    }
    s |= oai_buf_puts(b, ",\"code\":");
    if (e->code)
        s |= oai_buf_printf(b, "\"%s\"", e->code);
    else
        s |= oai_buf_puts(b, "null");
    s |= oai_buf_puts(b, "}}");
    return s ? MG_ENOMEM : MG_OK;
}

/* ---- parsing ---- */

static const char *json_kind(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "unknown";
}

static mg_status bad_type(oai_error *e, const char *param, const json_t *v, const char *want) {
    return oai_fail(e, 400, "invalid_request_error", "invalid_type", param,
                    "Invalid type for '%s': expected %s, but got %s instead.", param, want,
                    json_kind(v));
}

#define BAD_VALUE(e, param, ...)                                                                   \
    oai_fail((e), 400, "invalid_request_error", "invalid_value", (param), __VA_ARGS__)

/* Optional number field: absent or null leaves *out. */
static mg_status get_number(json_t *o, const char *key, const char *param, double lo, double hi,
                            double *out, oai_error *e) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return MG_OK;
    if (!json_is_number(v)) return bad_type(e, param, v, "a number");
    double d = json_number_value(v);
    if (!(d >= lo && d <= hi))
        return BAD_VALUE(e, param, "Invalid value for '%s': %g is out of range [%g, %g].", param, d,
                         lo, hi);
    *out = d;
    return MG_OK;
}

static mg_status get_int(json_t *o, const char *key, const char *param, int64_t lo, int64_t hi,
                         int64_t *out, oai_error *e) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return MG_OK;
    int64_t x;
    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
               fabs(json_real_value(v)) < 9e15) {
        x = (int64_t)json_real_value(v); /* 5.0 is an integer to Python-based servers too */
    } else {
        return bad_type(e, param, v, "an integer");
    }
    if (x < lo || x > hi)
        return BAD_VALUE(e, param, "Invalid value for '%s': %lld is out of range [%lld, %lld].",
                         param, (long long)x, (long long)lo, (long long)hi);
    *out = x;
    return MG_OK;
}

static mg_status get_bool(json_t *o, const char *key, const char *param, bool *out, oai_error *e) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return MG_OK;
    if (!json_is_boolean(v)) return bad_type(e, param, v, "a boolean");
    *out = json_is_true(v);
    return MG_OK;
}

static mg_status get_string(json_t *o, const char *key, const char *param, const char **out,
                            oai_error *e) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return MG_OK;
    if (!json_is_string(v)) return bad_type(e, param, v, "a string");
    *out = json_string_value(v);
    return MG_OK;
}

/* Text of a message content: a string or an array of text parts. Only validates. */
static mg_status check_content(json_t *c, const char *param, bool may_be_null, oai_error *e) {
    if (!c || json_is_null(c)) {
        if (may_be_null) return MG_OK;
        return oai_fail(e, 400, "invalid_request_error", "missing_required_parameter", param,
                        "Missing required parameter: '%s'.", param);
    }
    if (json_is_string(c)) return MG_OK;
    if (!json_is_array(c)) return bad_type(e, param, c, "a string or an array of content parts");
    size_t i;
    json_t *part;
    char p[160];
    json_array_foreach(c, i, part) {
        snprintf(p, sizeof p, "%s[%zu]", param, i);
        if (!json_is_object(part)) return bad_type(e, p, part, "an object");
        json_t *t = json_object_get(part, "type");
        if (!json_is_string(t) || strcmp(json_string_value(t), "text") != 0)
            return BAD_VALUE(e, p,
                             "Invalid value for '%s.type': only 'text' content parts are "
                             "supported.",
                             p);
        json_t *x = json_object_get(part, "text");
        snprintf(p, sizeof p, "%s[%zu].text", param, i);
        if (!json_is_string(x)) return bad_type(e, p, x ? x : json_null(), "a string");
    }
    return MG_OK;
}

static mg_status parse_messages(oai_request *r, oai_error *e) {
    json_t *m = json_object_get(r->root, "messages");
    if (!m || json_is_null(m))
        return oai_fail(e, 400, "invalid_request_error", "missing_required_parameter", "messages",
                        "Missing required parameter: 'messages'.");
    if (!json_is_array(m)) return bad_type(e, "messages", m, "an array");
    if (json_array_size(m) == 0)
        return BAD_VALUE(e, "messages",
                         "Invalid 'messages': empty array. Expected an array with minimum length "
                         "1.");
    size_t i;
    json_t *msg;
    char p[96];
    json_array_foreach(m, i, msg) {
        snprintf(p, sizeof p, "messages[%zu]", i);
        if (!json_is_object(msg)) return bad_type(e, p, msg, "an object");
        json_t *role = json_object_get(msg, "role");
        snprintf(p, sizeof p, "messages[%zu].role", i);
        if (!role)
            return oai_fail(e, 400, "invalid_request_error", "missing_required_parameter", p,
                            "Missing required parameter: '%s'.", p);
        if (!json_is_string(role)) return bad_type(e, p, role, "a string");
        const char *rs = json_string_value(role);
        bool assistant = strcmp(rs, "assistant") == 0;
        if (!assistant && strcmp(rs, "system") && strcmp(rs, "developer") && strcmp(rs, "user") &&
            strcmp(rs, "tool"))
            return BAD_VALUE(e, p,
                             "Invalid value: '%s'. Supported values are: 'system', 'developer', "
                             "'user', 'assistant', and 'tool'.",
                             rs);
        snprintf(p, sizeof p, "messages[%zu].content", i);
        json_t *tc = json_object_get(msg, "tool_calls");
        /* An assistant turn may carry only tool calls (content null). */
        if (check_content(json_object_get(msg, "content"), p, assistant, e)) return MG_EINVAL;
        json_t *rc = json_object_get(msg, "reasoning_content");
        snprintf(p, sizeof p, "messages[%zu].reasoning_content", i);
        if (rc && !json_is_null(rc) && !json_is_string(rc)) return bad_type(e, p, rc, "a string");
        if (tc && !json_is_null(tc)) {
            snprintf(p, sizeof p, "messages[%zu].tool_calls", i);
            if (!json_is_array(tc)) return bad_type(e, p, tc, "an array");
            size_t j;
            json_t *call;
            json_array_foreach(tc, j, call) {
                snprintf(p, sizeof p, "messages[%zu].tool_calls[%zu].function", i, j);
                json_t *fn = json_is_object(call) ? json_object_get(call, "function") : NULL;
                if (!json_is_object(fn))
                    return bad_type(e, p, fn ? fn : (call ? call : json_null()), "an object");
                json_t *name = json_object_get(fn, "name");
                snprintf(p, sizeof p, "messages[%zu].tool_calls[%zu].function.name", i, j);
                if (!json_is_string(name))
                    return bad_type(e, p, name ? name : json_null(), "a string");
            }
        }
    }
    r->messages = m;
    return MG_OK;
}

static mg_status parse_prompt(oai_request *r, uint32_t vocab, oai_error *e) {
    json_t *p = json_object_get(r->root, "prompt");
    if (!p || json_is_null(p))
        return oai_fail(e, 400, "invalid_request_error", "missing_required_parameter", "prompt",
                        "Missing required parameter: 'prompt'.");
    /* A batch of one ([["..."]] or [[1,2]]) is the same as its element; larger batches need n
     * choices per prompt, which we do not serve. */
    if (json_is_array(p) && json_array_size(p) == 1 &&
        (json_is_string(json_array_get(p, 0)) || json_is_array(json_array_get(p, 0))))
        p = json_array_get(p, 0);
    if (json_is_string(p)) {
        r->prompt_text = json_string_value(p);
        r->prompt_len = json_string_length(p);
        if (r->prompt_len == 0)
            return BAD_VALUE(e, "prompt", "Invalid 'prompt': the prompt is empty.");
        return MG_OK;
    }
    if (!json_is_array(p)) return bad_type(e, "prompt", p, "a string or an array of token ids");
    size_t n = json_array_size(p);
    if (n == 0) return BAD_VALUE(e, "prompt", "Invalid 'prompt': empty array.");
    r->prompt_ids = malloc(n * sizeof *r->prompt_ids);
    if (!r->prompt_ids) return oai_fail(e, 500, "internal_error", NULL, NULL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(p, i);
        char param[48];
        snprintf(param, sizeof param, "prompt[%zu]", i);
        if (json_is_string(v))
            return BAD_VALUE(e, "prompt",
                             "Invalid 'prompt': batches of several prompts are not supported.");
        if (!json_is_integer(v)) return bad_type(e, param, v, "an integer token id");
        json_int_t id = json_integer_value(v);
        if (id < 0 || (vocab && id >= (json_int_t)vocab))
            return BAD_VALUE(e, param, "Invalid token id %lld in '%s': the vocabulary has %u ids.",
                             (long long)id, param, vocab);
        r->prompt_ids[i] = (uint32_t)id;
    }
    r->n_prompt_ids = n;
    return MG_OK;
}

static mg_status parse_stop(oai_request *r, oai_error *e) {
    json_t *s = json_object_get(r->root, "stop");
    if (!s || json_is_null(s)) return MG_OK;
    if (json_is_string(s)) {
        if (json_string_length(s) == 0) return MG_OK;
        r->stop[0] = json_string_value(s);
        r->stop_len[0] = json_string_length(s);
        r->n_stop = 1;
        return MG_OK;
    }
    if (!json_is_array(s)) return bad_type(e, "stop", s, "a string or an array of strings");
    if (json_array_size(s) > OAI_MAX_STOP)
        return BAD_VALUE(e, "stop", "Invalid 'stop': at most %d stop sequences are allowed.",
                         OAI_MAX_STOP);
    size_t i;
    json_t *v;
    json_array_foreach(s, i, v) {
        char p[32];
        snprintf(p, sizeof p, "stop[%zu]", i);
        if (!json_is_string(v)) return bad_type(e, p, v, "a string");
        if (json_string_length(v) == 0) continue;
        r->stop[r->n_stop] = json_string_value(v);
        r->stop_len[r->n_stop] = json_string_length(v);
        r->n_stop++;
    }
    return MG_OK;
}

static mg_status parse_tools(oai_request *r, oai_error *e) {
    json_t *t = json_object_get(r->root, "tools");
    if (t && !json_is_null(t)) {
        if (!json_is_array(t)) return bad_type(e, "tools", t, "an array");
        size_t i;
        json_t *tool;
        char p[64];
        json_array_foreach(t, i, tool) {
            snprintf(p, sizeof p, "tools[%zu]", i);
            if (!json_is_object(tool)) return bad_type(e, p, tool, "an object");
            json_t *type = json_object_get(tool, "type");
            snprintf(p, sizeof p, "tools[%zu].type", i);
            if (!json_is_string(type) || strcmp(json_string_value(type), "function") != 0)
                return BAD_VALUE(e, p, "Invalid value for '%s': only 'function' is supported.", p);
            json_t *fn = json_object_get(tool, "function");
            snprintf(p, sizeof p, "tools[%zu].function", i);
            if (!json_is_object(fn)) return bad_type(e, p, fn ? fn : json_null(), "an object");
            json_t *name = json_object_get(fn, "name");
            snprintf(p, sizeof p, "tools[%zu].function.name", i);
            if (!json_is_string(name) || json_string_length(name) == 0)
                return bad_type(e, p, name ? name : json_null(), "a non-empty string");
            json_t *params = json_object_get(fn, "parameters");
            snprintf(p, sizeof p, "tools[%zu].function.parameters", i);
            if (params && !json_is_null(params) && !json_is_object(params))
                return bad_type(e, p, params, "an object");
            json_t *desc = json_object_get(fn, "description");
            snprintf(p, sizeof p, "tools[%zu].function.description", i);
            if (desc && !json_is_null(desc) && !json_is_string(desc))
                return bad_type(e, p, desc, "a string");
        }
        if (json_array_size(t) > 0) r->tools = t;
    }
    json_t *c = json_object_get(r->root, "tool_choice");
    if (!c || json_is_null(c)) return MG_OK;
    if (json_is_string(c)) {
        const char *v = json_string_value(c);
        if (strcmp(v, "none") && strcmp(v, "auto") && strcmp(v, "required"))
            return BAD_VALUE(e, "tool_choice",
                             "Invalid value: '%s'. Supported values are: 'none', 'auto', and "
                             "'required'.",
                             v);
        if (strcmp(v, "required") == 0 && !r->tools)
            return BAD_VALUE(e, "tool_choice",
                             "Invalid value for 'tool_choice': 'required' needs 'tools'.");
        r->tool_choice = v;
        return MG_OK;
    }
    if (!json_is_object(c)) return bad_type(e, "tool_choice", c, "a string or an object");
    json_t *fn = json_object_get(c, "function");
    json_t *name = json_is_object(fn) ? json_object_get(fn, "name") : NULL;
    if (!json_is_string(name))
        return bad_type(e, "tool_choice.function.name", name ? name : json_null(), "a string");
    const char *nm = json_string_value(name);
    bool found = false;
    size_t i;
    json_t *tool;
    if (r->tools) {
        json_array_foreach(r->tools, i, tool) {
            json_t *n2 = json_object_get(json_object_get(tool, "function"), "name");
            if (strcmp(json_string_value(n2), nm) == 0) found = true;
        }
    }
    if (!found)
        return BAD_VALUE(e, "tool_choice.function.name",
                         "Invalid 'tool_choice': no tool named '%s' in 'tools'.", nm);
    r->tool_choice = nm;
    r->tool_choice_named = true;
    return MG_OK;
}

mg_status oai_parse(oai_endpoint ep, const char *body, size_t len, uint32_t vocab, oai_request *r,
                    oai_error *e) {
    memset(r, 0, sizeof *r);
    r->endpoint = ep;
    r->max_tokens = -1;
    r->temperature = 1.0;
    r->top_p = 1.0;
    json_error_t je;
    r->root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!r->root) {
        oai_fail(e, 400, "invalid_request_error", "invalid_json", NULL,
                 "We could not parse the JSON body of your request: %s (line %d, column %d).",
                 je.text, je.line, je.column);
        return MG_EINVAL;
    }
    mg_status st = MG_EINVAL;
    if (!json_is_object(r->root)) {
        oai_fail(e, 400, "invalid_request_error", "invalid_json", NULL,
                 "The body of your request must be a JSON object, not %s.", json_kind(r->root));
        goto fail;
    }
    json_t *root = r->root;
    json_t *model = json_object_get(root, "model");
    if (!model || json_is_null(model)) {
        oai_fail(e, 400, "invalid_request_error", "missing_required_parameter", "model",
                 "Missing required parameter: 'model'.");
        goto fail;
    }
    if (!json_is_string(model)) {
        bad_type(e, "model", model, "a string");
        goto fail;
    }
    r->model = json_string_value(model);

    if (ep == OAI_CHAT ? parse_messages(r, e) : parse_prompt(r, vocab, e)) goto fail;

    int64_t mt = -1, mct = -1, n = 1;
    if (get_int(root, "max_tokens", "max_tokens", 1, INT32_MAX, &mt, e)) goto fail;
    if (get_int(root, "max_completion_tokens", "max_completion_tokens", 1, INT32_MAX, &mct, e))
        goto fail;
    r->max_tokens = mct >= 0 ? mct : mt;
    if (get_int(root, "min_tokens", "min_tokens", 0, INT32_MAX, &r->min_tokens, e)) goto fail;
    if (get_bool(root, "ignore_eos", "ignore_eos", &r->ignore_eos, e)) goto fail;
    json_t *nv = json_object_get(root, "nvext");
    if (nv && !json_is_null(nv)) {
        if (!json_is_object(nv)) {
            bad_type(e, "nvext", nv, "an object");
            goto fail;
        }
        if (get_bool(nv, "ignore_eos", "nvext.ignore_eos", &r->ignore_eos, e)) goto fail;
        if (get_int(nv, "min_tokens", "nvext.min_tokens", 0, INT32_MAX, &r->min_tokens, e))
            goto fail;
        int64_t nmt = -1;
        if (get_int(nv, "max_tokens", "nvext.max_tokens", 1, INT32_MAX, &nmt, e)) goto fail;
        if (nmt > 0 && r->max_tokens < 0) r->max_tokens = nmt;
    }
    if (r->max_tokens > 0 && r->min_tokens > r->max_tokens) {
        BAD_VALUE(e, "min_tokens",
                  "Invalid value for 'min_tokens': %lld is greater than max_tokens (%lld).",
                  (long long)r->min_tokens, (long long)r->max_tokens);
        goto fail;
    }
    if (get_number(root, "temperature", "temperature", 0, 2, &r->temperature, e)) goto fail;
    if (get_number(root, "top_p", "top_p", 0, 1, &r->top_p, e)) goto fail;
    if (json_is_number(json_object_get(root, "top_p")) && r->top_p <= 0) {
        BAD_VALUE(e, "top_p", "Invalid value for 'top_p': must be in (0, 1], got %g.", r->top_p);
        goto fail;
    }
    if (get_int(root, "top_k", "top_k", -1, INT32_MAX, &r->top_k, e)) goto fail;
    json_t *seed = json_object_get(root, "seed");
    if (seed && !json_is_null(seed)) {
        if (!json_is_integer(seed)) {
            bad_type(e, "seed", seed, "an integer");
            goto fail;
        }
        r->has_seed = true;
        r->seed = (uint64_t)json_integer_value(seed);
    }
    if (parse_stop(r, e)) goto fail;
    json_t *sti = json_object_get(root, "stop_token_ids");
    if (sti && !json_is_null(sti)) {
        if (!json_is_array(sti) || json_array_size(sti) > OAI_MAX_STOP) {
            bad_type(e, "stop_token_ids", sti, "an array of at most 16 token ids");
            goto fail;
        }
        size_t i;
        json_t *v;
        json_array_foreach(sti, i, v) {
            json_int_t id = json_is_integer(v) ? json_integer_value(v) : -1;
            if (id < 0 || (vocab && id >= (json_int_t)vocab)) {
                BAD_VALUE(e, "stop_token_ids", "Invalid token id in 'stop_token_ids'.");
                goto fail;
            }
            r->stop_token_ids[r->n_stop_token_ids++] = (uint32_t)id;
        }
    }
    if (get_int(root, "n", "n", 1, 128, &n, e)) goto fail;
    if (n != 1) {
        BAD_VALUE(e, "n", "Invalid value for 'n': only n=1 is supported, got %lld.", (long long)n);
        goto fail;
    }
    if (get_bool(root, "stream", "stream", &r->stream, e)) goto fail;
    json_t *so = json_object_get(root, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so)) {
            bad_type(e, "stream_options", so, "an object");
            goto fail;
        }
        if (!r->stream) {
            BAD_VALUE(e, "stream_options",
                      "The 'stream_options' parameter is only allowed when 'stream' is enabled.");
            goto fail;
        }
        if (get_bool(so, "include_usage", "stream_options.include_usage", &r->include_usage, e))
            goto fail;
    }
    if (get_string(root, "reasoning_effort", "reasoning_effort", &r->reasoning_effort, e))
        goto fail;
    if (r->reasoning_effort && strcmp(r->reasoning_effort, "low") &&
        strcmp(r->reasoning_effort, "medium") && strcmp(r->reasoning_effort, "high")) {
        BAD_VALUE(e, "reasoning_effort",
                  "Invalid value: '%s'. Supported values are: 'low', 'medium', and 'high'.",
                  r->reasoning_effort);
        goto fail;
    }
    if (ep == OAI_CHAT && parse_tools(r, e)) goto fail;
    if (get_string(root, "user", "user", &r->user, e)) goto fail;
    if (get_bool(root, "echo", "echo", &r->echo, e)) goto fail;
    if (r->echo) {
        BAD_VALUE(e, "echo", "Invalid value for 'echo': echo=true is not supported.");
        goto fail;
    }
    return MG_OK;
fail:
    oai_request_free(r);
    return st;
}

void oai_request_free(oai_request *r) {
    if (!r) return;
    free(r->prompt_ids);
    if (r->root) json_decref(r->root);
    memset(r, 0, sizeof *r);
    r->max_tokens = -1;
}

/* ---- responses ---- */

const char *oai_finish_str(oai_finish f) {
    switch (f) {
    case OAI_FINISH_STOP:
        return "stop";
    case OAI_FINISH_LENGTH:
        return "length";
    case OAI_FINISH_TOOL_CALLS:
        return "tool_calls";
    default:
        return NULL;
    }
}

void oai_make_id(oai_endpoint ep, char out[48]) {
    unsigned char r[12];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        /* getrandom on Linux does not fail for 12 bytes once the pool is ready; fall back to a
         * counter mixed with the time rather than leave the id unset. */
        static unsigned long ctr;
        unsigned long x = __atomic_add_fetch(&ctr, 1, __ATOMIC_RELAXED) * 0x9E3779B97F4A7C15UL;
        memcpy(r, &x, 8);
        memset(r + 8, 0, 4);
    }
    int n = snprintf(out, 48, "%s", ep == OAI_CHAT ? "chatcmpl-" : "cmpl-");
    for (int i = 0; i < 12; i++) n += snprintf(out + n, 48 - n, "%02x", r[i]);
}

mg_status oai_sse_head_init(oai_sse_head *h, oai_endpoint ep, const char *id, int64_t created,
                            const char *model) {
    memset(h, 0, sizeof *h);
    h->endpoint = ep;
    mg_status s = oai_buf_puts(&h->head, "data: {\"id\":\"");
    s |= oai_buf_json_str(&h->head, id, strlen(id));
    s |= oai_buf_printf(&h->head, "\",\"object\":\"%s\",\"created\":%lld,\"model\":\"",
                        ep == OAI_CHAT ? "chat.completion.chunk" : "text_completion",
                        (long long)created);
    s |= oai_buf_json_str(&h->head, model, strlen(model));
    s |= oai_buf_puts(&h->head, "\",\"choices\":[");
    return s ? MG_ENOMEM : MG_OK;
}

void oai_sse_head_free(oai_sse_head *h) {
    if (h) oai_buf_free(&h->head);
}

#define PUT_LIT(b, lit) oai_buf_put((b), (lit), sizeof(lit) - 1)

mg_status oai_sse_role(const oai_sse_head *h, oai_buf *out) {
    mg_status s = oai_buf_put(out, h->head.p, h->head.len);
    s |= PUT_LIT(out, "{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
                      "\"logprobs\":null,\"finish_reason\":null}]}\n\n");
    return s ? MG_ENOMEM : MG_OK;
}

mg_status oai_sse_text(const oai_sse_head *h, oai_field f, const char *text, size_t len,
                       oai_buf *out) {
    mg_status s = oai_buf_put(out, h->head.p, h->head.len);
    if (h->endpoint == OAI_COMPLETIONS)
        s |= PUT_LIT(out, "{\"index\":0,\"text\":\"");
    else if (f == OAI_REASONING)
        s |= PUT_LIT(out, "{\"index\":0,\"delta\":{\"reasoning_content\":\"");
    else
        s |= PUT_LIT(out, "{\"index\":0,\"delta\":{\"content\":\"");
    s |= oai_buf_json_str(out, text, len);
    if (h->endpoint == OAI_COMPLETIONS)
        s |= PUT_LIT(out, "\",\"logprobs\":null,\"finish_reason\":null}]}\n\n");
    else
        s |= PUT_LIT(out, "\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n");
    return s ? MG_ENOMEM : MG_OK;
}

mg_status oai_sse_tool_call(const oai_sse_head *h, int index, const char *id, const char *name,
                            const char *args, size_t args_len, oai_buf *out) {
    mg_status s = oai_buf_put(out, h->head.p, h->head.len);
    s |= oai_buf_printf(out, "{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":%d,", index);
    if (id) {
        s |= oai_buf_printf(out, "\"id\":\"%s\",\"type\":\"function\",\"function\":{\"name\":\"",
                            id);
        s |= oai_buf_json_str(out, name, strlen(name));
        s |= PUT_LIT(out, "\",\"arguments\":\"");
    } else {
        s |= PUT_LIT(out, "\"function\":{\"arguments\":\"");
    }
    s |= oai_buf_json_str(out, args ? args : "", args ? args_len : 0);
    s |= PUT_LIT(out, "\"}}]},\"logprobs\":null,\"finish_reason\":null}]}\n\n");
    return s ? MG_ENOMEM : MG_OK;
}

mg_status oai_sse_finish(const oai_sse_head *h, oai_finish f, oai_buf *out) {
    mg_status s = oai_buf_put(out, h->head.p, h->head.len);
    if (h->endpoint == OAI_COMPLETIONS)
        s |= oai_buf_printf(out,
                            "{\"index\":0,\"text\":\"\",\"logprobs\":null,\"finish_reason\":\"%s\"}"
                            "]}\n\n",
                            oai_finish_str(f) ? oai_finish_str(f) : "stop");
    else
        s |= oai_buf_printf(out,
                            "{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"%s\"}"
                            "]}\n\n",
                            oai_finish_str(f) ? oai_finish_str(f) : "stop");
    return s ? MG_ENOMEM : MG_OK;
}

static mg_status usage_json(const oai_usage *u, oai_buf *out) {
    mg_status s = oai_buf_printf(out,
                                 "{\"prompt_tokens\":%u,\"completion_tokens\":%u,"
                                 "\"total_tokens\":%u",
                                 u->prompt_tokens, u->completion_tokens,
                                 u->prompt_tokens + u->completion_tokens);
    if (u->cached_tokens)
        s |= oai_buf_printf(out, ",\"prompt_tokens_details\":{\"cached_tokens\":%u}",
                            u->cached_tokens);
    s |= PUT_LIT(out, "}");
    return s ? MG_ENOMEM : MG_OK;
}

mg_status oai_sse_usage(const oai_sse_head *h, const oai_usage *u, oai_buf *out) {
    mg_status s = oai_buf_put(out, h->head.p, h->head.len);
    s |= PUT_LIT(out, "],\"usage\":");
    s |= usage_json(u, out);
    s |= PUT_LIT(out, "}\n\n");
    return s ? MG_ENOMEM : MG_OK;
}

mg_status oai_sse_error(const oai_error *e, oai_buf *out) {
    mg_status s = PUT_LIT(out, "data: ");
    s |= oai_error_json(e, out);
    s |= PUT_LIT(out, "\n\n");
    return s ? MG_ENOMEM : MG_OK;
}

mg_status oai_sse_done(oai_buf *out) {
    return PUT_LIT(out, "data: [DONE]\n\n");
}

static void put_jstr(oai_buf *out, mg_status *s, const char *p, size_t n) {
    *s |= PUT_LIT(out, "\"");
    *s |= oai_buf_json_str(out, p, n);
    *s |= PUT_LIT(out, "\"");
}

mg_status oai_response_json(oai_endpoint ep, const char *id, int64_t created, const char *model,
                            const char *content, size_t content_len, const char *reasoning,
                            size_t reasoning_len, const oai_tool_call *calls, int n_calls,
                            oai_finish f, const oai_usage *u, oai_buf *out) {
    mg_status s = PUT_LIT(out, "{\"id\":");
    put_jstr(out, &s, id, strlen(id));
    s |= oai_buf_printf(out, ",\"object\":\"%s\",\"created\":%lld,\"model\":",
                        ep == OAI_CHAT ? "chat.completion" : "text_completion", (long long)created);
    put_jstr(out, &s, model, strlen(model));
    s |= PUT_LIT(out, ",\"choices\":[{\"index\":0,");
    if (ep == OAI_COMPLETIONS) {
        s |= PUT_LIT(out, "\"text\":");
        put_jstr(out, &s, content ? content : "", content ? content_len : 0);
        s |= PUT_LIT(out, ",\"logprobs\":null");
    } else {
        s |= PUT_LIT(out, "\"message\":{\"role\":\"assistant\",\"content\":");
        if (content)
            put_jstr(out, &s, content, content_len);
        else
            s |= PUT_LIT(out, "null");
        if (reasoning) {
            s |= PUT_LIT(out, ",\"reasoning_content\":");
            put_jstr(out, &s, reasoning, reasoning_len);
        }
        if (n_calls > 0) {
            s |= PUT_LIT(out, ",\"tool_calls\":[");
            for (int i = 0; i < n_calls; i++) {
                if (i) s |= PUT_LIT(out, ",");
                s |= oai_buf_printf(out,
                                    "{\"id\":\"%s\",\"type\":\"function\",\"function\":{"
                                    "\"name\":",
                                    calls[i].id);
                put_jstr(out, &s, calls[i].name, strlen(calls[i].name));
                s |= PUT_LIT(out, ",\"arguments\":");
                put_jstr(out, &s, calls[i].args.p ? calls[i].args.p : "", calls[i].args.len);
                s |= PUT_LIT(out, "}}");
            }
            s |= PUT_LIT(out, "]");
        }
        s |= PUT_LIT(out, "},\"logprobs\":null");
    }
    s |= oai_buf_printf(out, ",\"finish_reason\":\"%s\"}],\"usage\":",
                        oai_finish_str(f) ? oai_finish_str(f) : "stop");
    s |= usage_json(u, out);
    s |= PUT_LIT(out, "}");
    return s ? MG_ENOMEM : MG_OK;
}
