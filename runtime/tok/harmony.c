/* harmony.c - rendering chat requests in the harmony format and parsing model output.
 *
 * Rendering builds a list of segments, each a special token or a piece of text, in the order
 * and with the piece boundaries of openai-harmony's renderer (role, recipient, channel, content
 * type and content are encoded separately there, so they are here): harmony_render joins them
 * as text, harmony_render_ids encodes each text piece as ordinary text. JSON Schema parameters of
 * function tools become the TypeScript-like declarations of the format (json_schema_to_ts).
 *
 * Parsing is a small state machine over token ids: EXPECT_START -> HEADER (role, channel,
 * recipient, content type, read at <|message|>) -> CONTENT (text through a tok_stream, so a
 * character split over tokens comes out whole) -> back at <|end|>, or done at <|return|> or
 * <|call|>. */
#include "harmony.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef MG_TOK_HAVE_JANSSON
#include <jansson.h>
#endif

/* ---------------------------------------------------------------- growable string */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_addn(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (c < b->n + n + 1) c *= 2;
        char *q = realloc(b->p, c);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q, b->cap = c;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_add(sbuf *b, const char *s) {
    sb_addn(b, s, strlen(s));
}

static void sb_addf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_addf(sbuf *b, const char *fmt, ...) {
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof small) {
        sb_addn(b, small, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->oom = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb_addn(b, big, (size_t)n);
    free(big);
}

/* ---------------------------------------------------------------- segments */

typedef struct seg {
    uint32_t special; /* 0: text */
    size_t off, len;  /* into the segment text buffer */
} seg;

typedef struct segs {
    seg *v;
    size_t n, cap;
    sbuf text;
    int oom;
} segs;

static void seg_push(segs *s, uint32_t special, const char *text, size_t len) {
    if (s->n == s->cap) {
        size_t c = s->cap ? s->cap * 2 : 32;
        seg *q = realloc(s->v, c * sizeof *q);
        if (!q) {
            s->oom = 1;
            return;
        }
        s->v = q, s->cap = c;
    }
    size_t off = s->text.n;
    if (text) sb_addn(&s->text, text, len);
    s->v[s->n++] = (seg){special, off, len};
}

static void seg_special(segs *s, uint32_t id) {
    seg_push(s, id, NULL, 0);
}

static void seg_text(segs *s, const char *text) {
    if (text && *text) seg_push(s, 0, text, strlen(text));
}

static void seg_textb(segs *s, const sbuf *b) {
    if (b->n) seg_push(s, 0, b->p, b->n);
}

static const char *special_text(uint32_t id) {
    switch (id) {
    case TOK_START:
        return "<|start|>";
    case TOK_END:
        return "<|end|>";
    case TOK_MESSAGE:
        return "<|message|>";
    case TOK_CHANNEL:
        return "<|channel|>";
    case TOK_CONSTRAIN:
        return "<|constrain|>";
    case TOK_RETURN:
        return "<|return|>";
    case TOK_CALL:
        return "<|call|>";
    default:
        return "";
    }
}

/* ---------------------------------------------------------------- JSON Schema -> TypeScript */

#ifdef MG_TOK_HAVE_JANSSON

static int is_enum(json_t *schema) {
    json_t *e = json_object_get(schema, "enum");
    return json_is_array(e) && json_array_size(e) > 0;
}

/* "default: ..." as the format writes it: a string default of a non-enum schema is quoted, an
 * enum's string default is not, anything else is compact JSON. */
static void add_default(sbuf *b, json_t *schema, json_t *def) {
    if (json_is_string(def)) {
        if (!is_enum(schema))
            sb_addf(b, "default: \"%s\"", json_string_value(def));
        else
            sb_addf(b, "default: %s", json_string_value(def));
        return;
    }
    char *d = json_dumps(def, JSON_COMPACT | JSON_ENCODE_ANY);
    sb_addf(b, "default: %s", d ? d : "null");
    free(d);
}

static int is_nullable(json_t *schema) {
    return json_is_true(json_object_get(schema, "nullable"));
}

static void schema_to_ts(sbuf *out, json_t *schema, const char *indent);

/* A rendered type, with " | null" when the schema is nullable and says no null itself. */
static void typed(sbuf *out, json_t *schema, const char *indent) {
    sbuf t = {0};
    schema_to_ts(&t, schema, indent);
    if (t.p) sb_add(out, t.p);
    if (is_nullable(schema) && !(t.p && strstr(t.p, "null"))) sb_add(out, " | null");
    if (t.oom) out->oom = 1;
    free(t.p);
}

static void one_of_variants(sbuf *out, json_t *arr, const char *indent) {
    char sub[256];
    snprintf(sub, sizeof sub, "%s   ", indent);
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) {
        sb_addf(out, "\n%s | ", indent);
        typed(out, v, sub);
        sbuf c = {0};
        const char *desc = json_string_value(json_object_get(v, "description"));
        json_t *def = json_object_get(v, "default");
        if (desc) sb_add(&c, desc);
        if (def) {
            if (c.n) sb_add(&c, " ");
            add_default(&c, v, def);
        }
        if (c.n) sb_addf(out, " // %s", c.p);
        free(c.p);
    }
}

static void object_to_ts(sbuf *out, json_t *schema, const char *indent) {
    const char *odesc = json_string_value(json_object_get(schema, "description"));
    if (odesc) sb_addf(out, "%s// %s\n", indent, odesc);
    sb_add(out, "{\n");
    json_t *props = json_object_get(schema, "properties"),
           *req = json_object_get(schema, "required");
    const char *key;
    json_t *val;
    char sub[256];
    snprintf(sub, sizeof sub, "%s    ", indent);
    json_object_foreach(props, key, val) {
        int required = 0;
        size_t i;
        json_t *r;
        json_array_foreach(req, i, r) {
            if (json_is_string(r) && strcmp(json_string_value(r), key) == 0) required = 1;
        }
        const char *title = json_string_value(json_object_get(val, "title"));
        const char *desc = json_string_value(json_object_get(val, "description"));
        json_t *one_of = json_object_get(val, "oneOf"), *def = json_object_get(val, "default");
        if (title) sb_addf(out, "%s// %s\n%s//\n", indent, title, indent);
        if (!one_of && desc) sb_addf(out, "%s// %s\n", indent, desc);
        json_t *ex = json_object_get(val, "examples");
        if (json_is_array(ex) && json_array_size(ex) > 0) {
            sb_addf(out, "%s// Examples:\n", indent);
            json_t *e;
            json_array_foreach(ex, i, e) {
                if (json_is_string(e))
                    sb_addf(out, "%s// - \"%s\"\n", indent, json_string_value(e));
            }
        }
        if (json_is_array(one_of)) {
            /* Property-level oneOf: description above unless the first variant repeats it. */
            json_t *first = json_array_get(one_of, 0);
            const char *fdesc = json_string_value(json_object_get(first, "description"));
            int above = desc && !(fdesc && strcmp(desc, fdesc) == 0);
            if (above) sb_addf(out, "%s// %s\n", indent, desc);
            if (def) {
                sb_addf(out, "%s// ", indent);
                add_default(out, val, def);
                sb_add(out, "\n");
            }
            sb_addf(out, "%s%s%s:\n", indent, key, required ? "" : "?");
            char vind[256];
            snprintf(vind, sizeof vind, "%s   ", indent);
            json_t *v;
            json_array_foreach(one_of, i, v) {
                sb_addf(out, "%s | ", indent);
                typed(out, v, vind);
                sbuf c = {0};
                const char *vdesc = json_string_value(json_object_get(v, "description"));
                if (!(i == 0 && above) && vdesc && !(desc && strcmp(vdesc, desc) == 0))
                    sb_add(&c, vdesc);
                json_t *vdef = json_object_get(v, "default");
                if (vdef) {
                    if (c.n) sb_add(&c, " ");
                    add_default(&c, v, vdef);
                }
                if (c.n) sb_addf(out, " // %s", c.p);
                free(c.p);
                sb_add(out, "\n");
            }
            sb_addf(out, "%s,\n", indent);
            continue;
        }
        sb_addf(out, "%s%s%s: ", indent, key, required ? "" : "?");
        typed(out, val, sub);
        sb_add(out, ",");
        if (def) {
            sb_add(out, " // ");
            add_default(out, val, def);
        }
        sb_add(out, "\n");
    }
    sb_addf(out, "%s}", indent);
}

static void schema_to_ts(sbuf *out, json_t *schema, const char *indent) {
    json_t *one_of = json_object_get(schema, "oneOf");
    if (json_is_array(one_of)) {
        one_of_variants(out, one_of, indent);
        return;
    }
    json_t *type = json_object_get(schema, "type");
    if (json_is_array(type)) {
        size_t i, k = 0;
        json_t *t;
        json_array_foreach(type, i, t) {
            if (!json_is_string(t)) continue;
            const char *s = json_string_value(t);
            sb_add(out, k++ ? " | " : "");
            sb_add(out, strcmp(s, "integer") == 0 ? "number" : s);
        }
        if (k) return;
    }
    const char *ty = json_string_value(type);
    if (!ty) {
        sb_add(out, "any");
    } else if (strcmp(ty, "object") == 0) {
        object_to_ts(out, schema, indent);
    } else if (strcmp(ty, "string") == 0) {
        json_t *e = json_object_get(schema, "enum");
        size_t i, k = 0;
        json_t *v;
        json_array_foreach(e, i, v) {
            if (json_is_string(v)) sb_addf(out, "%s\"%s\"", k++ ? " | " : "", json_string_value(v));
        }
        if (!k) sb_add(out, "string");
    } else if (strcmp(ty, "number") == 0 || strcmp(ty, "integer") == 0) {
        sb_add(out, "number");
    } else if (strcmp(ty, "boolean") == 0) {
        sb_add(out, "boolean");
    } else if (strcmp(ty, "array") == 0) {
        json_t *items = json_object_get(schema, "items");
        if (items) {
            schema_to_ts(out, items, indent);
            sb_add(out, "[]");
        } else {
            sb_add(out, "Array<any>");
        }
    } else {
        sb_add(out, "any");
    }
}

#endif

/* Appends "// line" for each line of text (Rust's str::lines: a final newline adds none). */
static void comment_lines(sbuf *b, const char *text) {
    const char *p = text;
    while (p && *p) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        size_t m = n && p[n - 1] == '\r' ? n - 1 : n;
        sb_add(b, "// ");
        sb_addn(b, p, m);
        sb_add(b, "\n");
        p = e ? e + 1 : NULL;
    }
}

static mg_status tools_section(sbuf *b, const harmony_tool *tools, size_t n) {
    sb_add(b, "# Tools\n\n## functions\n\nnamespace functions {\n\n");
    for (size_t i = 0; i < n; i++) {
        const harmony_tool *t = &tools[i];
        if (!t->name || !*t->name)
            return MG_ERRF(MG_EINVAL, "tools[%zu]: the function has no name", i);
        if (t->description) comment_lines(b, t->description);
        if (!t->parameters_json) {
            sb_addf(b, "type %s = () => any;\n\n", t->name);
            continue;
        }
#ifdef MG_TOK_HAVE_JANSSON
        json_error_t err;
        json_t *schema = json_loads(t->parameters_json, 0, &err);
        if (!json_is_object(schema)) {
            json_decref(schema);
            return MG_ERRF(MG_EINVAL, "tools[%zu] (%s): parameters are not a JSON object: %s", i,
                           t->name, schema ? "" : err.text);
        }
        sb_addf(b, "type %s = (_: ", t->name);
        schema_to_ts(b, schema, "");
        sb_add(b, ") => any;\n\n");
        json_decref(schema);
#else
        return MG_ERRF(MG_EUNSUPPORTED,
                       "tools[%zu] (%s): rendering parameter schemas needs jansson, which this "
                       "build lacks",
                       i, t->name);
#endif
    }
    sb_add(b, "} // namespace functions");
    return MG_OK;
}

/* ---------------------------------------------------------------- rendering */

static void message(segs *s, const char *header, uint32_t channel_tok, const char *channel,
                    const char *content, uint32_t end) {
    seg_special(s, TOK_START);
    seg_text(s, header);
    if (channel) {
        seg_special(s, channel_tok);
        seg_text(s, channel);
    }
    seg_special(s, TOK_MESSAGE);
    seg_text(s, content);
    seg_special(s, end);
}

static mg_status build(const harmony_request *r, segs *s) {
    if (!r || (r->n_msgs && !r->msgs) || (r->n_tools && !r->tools))
        return MG_ERRF(MG_EINVAL, "harmony_render: NULL argument");
    bool tools = r->n_tools > 0;
    static const char *effort[] = {"medium", "low", "high"};
    if ((unsigned)r->effort > HARMONY_EFFORT_HIGH)
        return MG_ERRF(MG_EINVAL, "harmony_render: bad reasoning effort %d", (int)r->effort);

    /* System message: identity and dates, reasoning, channels. */
    sbuf sys = {0};
    sb_add(&sys, r->model_identity ? r->model_identity
                                   : "You are ChatGPT, a large language model trained by OpenAI.");
    sb_addf(&sys, "\nKnowledge cutoff: %s", r->knowledge_cutoff ? r->knowledge_cutoff : "2024-06");
    if (r->current_date) sb_addf(&sys, "\nCurrent date: %s", r->current_date);
    sb_addf(&sys, "\n\nReasoning: %s\n\n", effort[r->effort]);
    sb_add(&sys, tools ? "# Valid channels: analysis, commentary, final."
                       : "# Valid channels: analysis, final.");
    sb_add(&sys, " Channel must be included for every message.");
    if (tools)
        sb_add(&sys, "\nCalls to these tools must go to the commentary channel: 'functions'.");
    seg_special(s, TOK_START);
    seg_text(s, "system");
    seg_special(s, TOK_MESSAGE);
    seg_textb(s, &sys);
    seg_special(s, TOK_END);
    int oom = sys.oom;
    free(sys.p);

    /* Developer message: the system/developer turns as instructions, then the tools. */
    sbuf dev = {0};
    int have_instr = 0;
    for (size_t i = 0; i < r->n_msgs; i++) {
        const harmony_msg *m = &r->msgs[i];
        if (m->role != HARMONY_SYSTEM || !m->content || !*m->content) continue;
        sb_add(&dev, have_instr ? "\n\n" : "# Instructions\n\n");
        sb_add(&dev, m->content);
        have_instr = 1;
    }
    mg_status st = MG_OK;
    if (tools) {
        if (have_instr) sb_add(&dev, "\n\n");
        st = tools_section(&dev, r->tools, r->n_tools);
    }
    if (st == MG_OK && (have_instr || tools)) {
        seg_special(s, TOK_START);
        seg_text(s, "developer");
        seg_special(s, TOK_MESSAGE);
        seg_textb(s, &dev);
        seg_special(s, TOK_END);
    }
    oom |= dev.oom;
    free(dev.p);
    if (st) return st;

    /* Analysis is kept only for tool-calling turns after the last final answer: the format drops
     * earlier chain of thought once a final answer exists, and keeps it between tool calls. */
    size_t last_final = 0;
    int have_final = 0;
    for (size_t i = 0; i < r->n_msgs; i++)
        if (r->msgs[i].role == HARMONY_ASSISTANT && r->msgs[i].content && *r->msgs[i].content &&
            !r->msgs[i].tool_name)
            last_final = i, have_final = 1;

    for (size_t i = 0; i < r->n_msgs; i++) {
        const harmony_msg *m = &r->msgs[i];
        switch (m->role) {
        case HARMONY_SYSTEM:
            break;
        case HARMONY_USER:
            message(s, "user", 0, NULL, m->content ? m->content : "", TOK_END);
            break;
        case HARMONY_ASSISTANT:
            if (m->reasoning && *m->reasoning && m->tool_name && (!have_final || i > last_final))
                message(s, "assistant", TOK_CHANNEL, "analysis", m->reasoning, TOK_END);
            /* Text beside a tool call is a preamble (commentary); alone, the final answer. */
            if (m->content && *m->content)
                message(s, "assistant", TOK_CHANNEL, m->tool_name ? "commentary" : "final",
                        m->content, TOK_END);
            if (m->tool_name) {
                /* The model's own form: recipient after the channel, then <|constrain|>json. */
                sbuf ch = {0};
                sb_addf(&ch, "commentary to=functions.%s ", m->tool_name);
                seg_special(s, TOK_START);
                seg_text(s, "assistant");
                seg_special(s, TOK_CHANNEL);
                seg_textb(s, &ch);
                seg_special(s, TOK_CONSTRAIN);
                seg_text(s, "json");
                seg_special(s, TOK_MESSAGE);
                seg_text(s, m->tool_args ? m->tool_args : "{}");
                seg_special(s, TOK_CALL);
                oom |= ch.oom;
                free(ch.p);
            }
            break;
        case HARMONY_TOOL: {
            if (!m->name || !*m->name)
                return MG_ERRF(MG_EINVAL, "messages[%zu]: a tool result needs the function name",
                               i);
            sbuf h = {0};
            sb_addf(&h, "functions.%s to=assistant", m->name);
            seg_special(s, TOK_START);
            seg_textb(s, &h);
            seg_special(s, TOK_CHANNEL);
            seg_text(s, "commentary");
            seg_special(s, TOK_MESSAGE);
            seg_text(s, m->content ? m->content : "");
            seg_special(s, TOK_END);
            oom |= h.oom;
            free(h.p);
            break;
        }
        default:
            return MG_ERRF(MG_EINVAL, "messages[%zu]: unknown role %d", i, (int)m->role);
        }
    }
    seg_special(s, TOK_START);
    seg_text(s, "assistant");
    if (oom || s->oom || s->text.oom) return MG_ERRF(MG_ENOMEM, "harmony_render: out of memory");
    return MG_OK;
}

static void segs_free(segs *s) {
    free(s->v);
    free(s->text.p);
}

mg_status harmony_render(const harmony_request *r, char **out, size_t *len, size_t *cap) {
    if (!out || !len || !cap) return MG_ERRF(MG_EINVAL, "harmony_render: NULL argument");
    segs s = {0};
    mg_status st = build(r, &s);
    if (st == MG_OK) {
        sbuf b = {*out, *len, *cap, 0};
        if (!b.p) sb_addn(&b, "", 0);
        for (size_t i = 0; i < s.n; i++) {
            if (s.v[i].special)
                sb_add(&b, special_text(s.v[i].special));
            else
                sb_addn(&b, s.text.p + s.v[i].off, s.v[i].len);
        }
        *out = b.p, *cap = b.cap;
        if (b.oom)
            st = MG_ERRF(MG_ENOMEM, "harmony_render: out of memory");
        else
            *len = b.n;
    }
    segs_free(&s);
    return st;
}

mg_status harmony_render_ids(const tok_t *t, const harmony_request *r, uint32_t **ids, size_t *n,
                             size_t *cap) {
    if (!t || !ids || !n || !cap) return MG_ERRF(MG_EINVAL, "harmony_render_ids: NULL argument");
    segs s = {0};
    mg_status st = build(r, &s);
    for (size_t i = 0; st == MG_OK && i < s.n; i++) {
        if (s.v[i].special) {
            if (*n == *cap) {
                size_t c = *cap ? *cap * 2 : 256;
                uint32_t *q = realloc(*ids, c * sizeof *q);
                if (!q) {
                    st = MG_ERRF(MG_ENOMEM, "harmony_render_ids: out of memory");
                    break;
                }
                *ids = q, *cap = c;
            }
            (*ids)[(*n)++] = s.v[i].special;
        } else {
            st = tok_encode(t, s.text.p + s.v[i].off, s.v[i].len, TOK_SPECIAL_TEXT, ids, n, cap);
        }
    }
    segs_free(&s);
    return st;
}

bool harmony_is_stop(uint32_t id) {
    return id == TOK_RETURN || id == TOK_CALL;
}

/* ---------------------------------------------------------------- parsing */

enum { P_EXPECT_START, P_HEADER, P_CONTENT, P_DONE };

typedef struct tool_call {
    char *name;
    sbuf args;
} tool_call;

struct harmony_parser {
    const tok_t *t;
    int state;
    sbuf header;        /* bytes of the header so far */
    harmony_kind kind;  /* where the current message's text goes */
    tok_stream *stream; /* UTF-8 reassembly of the current message */
    sbuf delta;         /* the last event's text */
    sbuf scratch;       /* tok_stream output before it is copied to delta and the totals */
    sbuf reasoning, content;
    tool_call *tools;
    int ntools, captools;
    char *name_buf;
};

harmony_parser *harmony_parser_create(const tok_t *t) {
    if (!t) return NULL;
    harmony_parser *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->t = t;
    p->state = P_HEADER;
    p->stream = tok_stream_create(t);
    if (!p->stream) {
        free(p);
        return NULL;
    }
    return p;
}

void harmony_parser_destroy(harmony_parser *p) {
    if (!p) return;
    tok_stream_destroy(p->stream);
    free(p->header.p);
    free(p->delta.p);
    free(p->scratch.p);
    free(p->reasoning.p);
    free(p->content.p);
    for (int i = 0; i < p->ntools; i++) {
        free(p->tools[i].name);
        free(p->tools[i].args.p);
    }
    free(p->tools);
    free(p);
}

/* Read the header (e.g. "assistant<|channel|>commentary to=functions.get_weather
 * <|constrain|>json"): the channel follows <|channel|> up to a space or '<'; of the remaining
 * space-separated words, "to=X" is the recipient (which may stand in the role part or the
 * channel part); the role and the content type ("<|constrain|>json") are not needed. */
static mg_status read_header(harmony_parser *p) {
    char *h = p->header.p ? p->header.p : (char *)"";
    char channel[64] = "", recipient[256] = "";
    char *c = strstr(h, "<|channel|>");
    if (c) {
        char *v = c + strlen("<|channel|>");
        size_t n = strcspn(v, " \t\n<");
        if (n == 0 || n >= sizeof channel)
            return MG_ERRF(MG_EPROTO, "harmony: header \"%s\": bad channel", h);
        memcpy(channel, v, n);
        channel[n] = 0;
        memmove(c, v + n, strlen(v + n) + 1); /* cut "<|channel|>NAME" out */
    }
    char *save = NULL;
    for (char *w = strtok_r(h, " \t\n", &save); w; w = strtok_r(NULL, " \t\n", &save)) {
        char *con = strstr(w, "<|constrain|>");
        if (con) *con = 0; /* "to=x<|constrain|>json": the type is not needed here */
        if (strncmp(w, "to=", 3) == 0) snprintf(recipient, sizeof recipient, "%s", w + 3);
    }
    p->header.n = 0;
    if (strncmp(recipient, "functions.", 10) == 0) {
        if (p->ntools == p->captools) {
            int c2 = p->captools ? p->captools * 2 : 4;
            tool_call *q = realloc(p->tools, (size_t)c2 * sizeof *q);
            if (!q) return MG_ERRF(MG_ENOMEM, "harmony: out of memory");
            p->tools = q, p->captools = c2;
        }
        tool_call *tc = &p->tools[p->ntools++];
        memset(tc, 0, sizeof *tc);
        tc->name = strdup(recipient + 10);
        if (!tc->name) return MG_ERRF(MG_ENOMEM, "harmony: out of memory");
        sb_addn(&tc->args, "", 0);
        p->kind = HARMONY_TOOL_ARGS;
    } else if (strcmp(channel, "analysis") == 0 || recipient[0]) {
        /* Built-in tool calls (browser, python) belong to the chain of thought. */
        p->kind = HARMONY_REASONING;
    } else {
        p->kind = HARMONY_CONTENT; /* final, or a commentary preamble meant for the user */
    }
    return MG_OK;
}

/* Append decoded text to the current message's totals and the event. */
static void add_text(harmony_parser *p, const char *s, size_t n, harmony_event *ev) {
    if (!n) return;
    sb_addn(&p->delta, s, n);
    if (p->kind == HARMONY_REASONING)
        sb_addn(&p->reasoning, s, n);
    else if (p->kind == HARMONY_CONTENT)
        sb_addn(&p->content, s, n);
    else if (p->kind == HARMONY_TOOL_ARGS && p->ntools)
        sb_addn(&p->tools[p->ntools - 1].args, s, n);
    ev->kind = p->kind;
}

/* End of a message: a character left incomplete comes out as U+FFFD. */
static mg_status end_message(harmony_parser *p, harmony_event *ev) {
    char *tail = NULL;
    size_t n = 0, cap = 0;
    mg_status st = tok_stream_finish(p->stream, &tail, &n, &cap);
    if (st == MG_OK) add_text(p, tail, n, ev);
    free(tail);
    return st;
}

mg_status harmony_parser_feed(harmony_parser *p, uint32_t id, harmony_event *ev) {
    if (!p || !ev) return MG_ERRF(MG_EINVAL, "harmony_parser_feed: NULL argument");
    memset(ev, 0, sizeof *ev);
    ev->tool_index = p->ntools - 1;
    p->delta.n = 0;
    sb_addn(&p->delta, "", 0);
    mg_status st = MG_OK;
    size_t plen;
    const char *piece = tok_piece(p->t, id, &plen);
    if (!piece) return MG_ERRF(MG_EINVAL, "harmony: token %u is not in the vocabulary", id);

    if (harmony_is_stop(id)) {
        if (p->state == P_CONTENT) st = end_message(p, ev);
        ev->stop = true;
        p->state = P_DONE;
    } else {
        switch (p->state) {
        case P_DONE:
        case P_EXPECT_START:
            if (id == TOK_START) {
                p->state = P_HEADER;
                p->header.n = 0;
            } else {
                st = MG_ERRF(MG_EPROTO, "harmony: token %u where <|start|> is due", id);
            }
            break;
        case P_HEADER:
            if (id == TOK_MESSAGE) {
                st = read_header(p);
                if (st == MG_OK) {
                    p->state = P_CONTENT;
                    if (p->kind == HARMONY_TOOL_ARGS) {
                        ev->tool_begin = true;
                        ev->kind = HARMONY_TOOL_ARGS;
                        ev->tool_index = p->ntools - 1;
                        ev->tool_name = p->tools[p->ntools - 1].name;
                    }
                } else {
                    p->state = P_EXPECT_START; /* skip this message */
                }
            } else if (id == TOK_START) {
                p->header.n = 0; /* a header restarted: keep the new one */
            } else if (id == TOK_END) {
                st = MG_ERRF(MG_EPROTO, "harmony: <|end|> inside a message header");
                p->state = P_EXPECT_START;
            } else {
                sb_addn(&p->header, piece, plen);
                if (p->header.n > 4096) {
                    st = MG_ERRF(MG_EPROTO, "harmony: message header longer than 4096 bytes");
                    p->state = P_EXPECT_START;
                }
            }
            break;
        case P_CONTENT:
            if (id == TOK_END) {
                st = end_message(p, ev);
                p->state = P_EXPECT_START;
            } else if (id == TOK_START) {
                /* <|start|> without <|end|>: close the message and read the next header. */
                st = end_message(p, ev);
                p->state = P_HEADER;
                p->header.n = 0;
            } else if (tok_is_special(p->t, id)) {
                st = MG_ERRF(MG_EPROTO, "harmony: special token %.*s inside message content",
                             (int)plen, piece);
            } else {
                char *d = p->scratch.p;
                size_t dn = 0, dc = p->scratch.cap;
                st = tok_stream_feed(p->stream, id, &d, &dn, &dc);
                p->scratch.p = d, p->scratch.cap = dc;
                if (st == MG_OK) add_text(p, d, dn, ev);
            }
            break;
        }
    }
    ev->text = p->delta.p ? p->delta.p : "";
    ev->len = p->delta.n;
    if (ev->kind == HARMONY_TOOL_ARGS) ev->tool_index = p->ntools - 1;
    if (ev->kind == HARMONY_TOOL_ARGS && !ev->tool_name)
        ev->tool_name = p->tools[p->ntools - 1].name;
    if (p->delta.oom || p->reasoning.oom || p->content.oom)
        return MG_ERRF(MG_ENOMEM, "harmony: out of memory");
    return st;
}

const char *harmony_parser_reasoning(const harmony_parser *p) {
    return p && p->reasoning.p ? p->reasoning.p : "";
}

const char *harmony_parser_content(const harmony_parser *p) {
    return p && p->content.p ? p->content.p : "";
}

int harmony_parser_tool_count(const harmony_parser *p) {
    return p ? p->ntools : 0;
}

const char *harmony_parser_tool_name(const harmony_parser *p, int i) {
    return p && i >= 0 && i < p->ntools ? p->tools[i].name : NULL;
}

const char *harmony_parser_tool_args(const harmony_parser *p, int i) {
    return p && i >= 0 && i < p->ntools ? (p->tools[i].args.p ? p->tools[i].args.p : "") : NULL;
}
