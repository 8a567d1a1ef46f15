/*
 * opts.c: the option table parser of opts.h: values, ranges and choices,
 * command lines and config files, --help and the resolved configuration.
 */
#include "opts.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../util/util.h"

#define HELP_WIDTH 100  // --help lines fit this many columns
#define HELP_INDENT 24  // where the description column starts

static const Opt *opts_find(const Opt *opts, int n, const char *key) {
    for (int i = 0; i < n; i++)
        if (!strcmp(opts[i].name, key)) return &opts[i];
    return NULL;
}

const char *opt_choice_name(const char *const *choices, int i) {
    for (int k = 0; choices && choices[k]; k++)
        if (k == i) return choices[k];
    return "?";
}

int opt_choice_index(const char *const *choices, const char *name) {
    for (int k = 0; choices && choices[k]; k++)
        if (!strcmp(choices[k], name)) return k;
    return -1;
}

// "f32, bf16, f16" into buf.
static const char *choices_str(const char *const *choices, char *buf, size_t len) {
    size_t k = 0;
    buf[0] = '\0';
    for (int i = 0; choices && choices[i] && k < len; i++)
        k += (size_t)snprintf(buf + k, len - k, "%s%s", i ? ", " : "", choices[i]);
    return buf;
}

// "[1, 65536]" or "(0, 1)", as --help and the error messages both say it.
static const char *range_str(const Opt *o, char *buf, size_t len) {
    const int open = o->type == OPT_FLOAT && (o->flags & OPT_OPEN);
    if (o->type == OPT_FLOAT) snprintf(buf, len, "%c%g, %g%c", open ? '(' : '[', o->min, o->max, open ? ')' : ']');
    else snprintf(buf, len, "[%.0f, %.0f]", o->min, o->max);
    return buf;
}

// The option whose name is closest to an unknown key: a prefix either way,
// or the same words in another order ("dtype" -> "kv_dtype").
static const char *suggest(const Opt *opts, int n, const char *key) {
    for (int i = 0; i < n; i++) {
        if (opts[i].flags & OPT_HIDDEN) continue;
        const char *name = opts[i].name;
        const size_t kl = strlen(key), nl = strlen(name);
        if (kl >= 3 && nl >= 3 && (!strncmp(name, key, kl < nl ? kl : nl) || strstr(name, key) || strstr(key, name)))
            return name;
    }
    return NULL;
}

static int parse_bool(const char *s, int *out) {
    if (!strcmp(s, "1") || !strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "yes")) {
        *out = 1;
        return 0;
    }
    if (!strcmp(s, "0") || !strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "no")) {
        *out = 0;
        return 0;
    }
    return -1;
}

// One integer of an OPT_INT or OPT_INT_LIST, checked against the range.
// "1e9"-style integers are accepted, as users write them in configs.
static int parse_int(const Opt *o, const char *value, int *out, char *err, size_t errlen) {
    char *end = NULL, r[64];
    errno = 0;
    double d = strtod(value, &end);
    if (end == value || *end != '\0' || errno || d != floor(d)) {
        snprintf(err, errlen, "option '%s': '%s' is not an integer", o->name, value);
        return -1;
    }
    if (d < o->min || d > o->max) {
        snprintf(err, errlen, "option '%s': %s is out of range %s", o->name, value, range_str(o, r, sizeof r));
        return -1;
    }
    *out = (int)d;
    return 0;
}

static int parse_choice(const Opt *o, const char *value, int *out, char *err, size_t errlen) {
    char c[256];
    *out = opt_choice_index(o->choices, value);
    if (*out >= 0) return 0;
    snprintf(err, errlen, "option '%s': '%s' is not one of %s", o->name, value, choices_str(o->choices, c, sizeof c));
    return -1;
}

// A comma-separated list of ints or choices.
static int parse_list(const Opt *o, const char *value, OptList *out, char *err, size_t errlen) {
    char buf[OPT_STR_MAX];
    if (strlen(value) >= sizeof buf) {
        snprintf(err, errlen, "option '%s': value is longer than %zu bytes", o->name, sizeof buf - 1);
        return -1;
    }
    strcpy(buf, value);
    OptList l = {0};
    for (char *p = buf, *next; p; p = next) {
        next = strchr(p, ',');
        if (next) *next++ = '\0';
        if (*p == '\0') {
            snprintf(err, errlen, "option '%s': '%s' has an empty item (give a comma-separated list)", o->name,
                     value);
            return -1;
        }
        if (l.n == OPT_LIST_MAX) {
            snprintf(err, errlen, "option '%s': more than %d values", o->name, OPT_LIST_MAX);
            return -1;
        }
        int rc = o->type == OPT_INT_LIST ? parse_int(o, p, &l.v[l.n], err, errlen)
                                         : parse_choice(o, p, &l.v[l.n], err, errlen);
        if (rc != 0) return -1;
        l.n++;
    }
    *out = l;
    return 0;
}

int opts_set(const Opt *opts, int n, const char *key, const char *value, char *err, size_t errlen) {
    const Opt *o = opts_find(opts, n, key);
    if (!o) {
        const char *s = suggest(opts, n, key);
        if (s) snprintf(err, errlen, "unknown option '%s' (did you mean '--%s'? see --help)", key, s);
        else snprintf(err, errlen, "unknown option '%s' (see --help)", key);
        return -1;
    }
    char *end = NULL, r[64];
    errno = 0;
    switch (o->type) {
    case OPT_INT: return parse_int(o, value, (int *)o->ptr, err, errlen);
    case OPT_FLOAT: {
        double d = strtod(value, &end);
        if (end == value || *end != '\0' || errno || !isfinite(d)) {
            snprintf(err, errlen, "option '%s': '%s' is not a number", key, value);
            return -1;
        }
        const int open = (o->flags & OPT_OPEN) != 0;
        if (open ? !(d > o->min && d < o->max) : !(d >= o->min && d <= o->max)) {
            snprintf(err, errlen, "option '%s': %s is out of range %s", key, value, range_str(o, r, sizeof r));
            return -1;
        }
        *(float *)o->ptr = (float)d;
        return 0;
    }
    case OPT_BOOL:
        if (parse_bool(value, (int *)o->ptr) != 0) {
            snprintf(err, errlen, "option '%s': '%s' is not a boolean (use 1/0, true/false)", key, value);
            return -1;
        }
        return 0;
    case OPT_STRING:
        if (strlen(value) >= OPT_STR_MAX) {
            snprintf(err, errlen, "option '%s': value is longer than %d bytes", key, OPT_STR_MAX - 1);
            return -1;
        }
        strcpy((char *)o->ptr, value);
        return 0;
    case OPT_CHOICE: return parse_choice(o, value, (int *)o->ptr, err, errlen);
    case OPT_INT_LIST:
    case OPT_CHOICE_LIST: return parse_list(o, value, (OptList *)o->ptr, err, errlen);
    }
    return -1;
}

int opts_parse_argv(const Opt *opts, int n, int argc, char **argv, int start, const char **pos, int *n_pos,
                    int max_pos, int *seen, char *err, size_t errlen) {
    if (n_pos) *n_pos = 0;
    for (int i = start; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return 1;
        if (strncmp(a, "--", 2) != 0) {
            if (!n_pos || *n_pos >= max_pos) {
                snprintf(err, errlen, "unexpected argument '%s' (options are --key=value)", a);
                return -1;
            }
            pos[(*n_pos)++] = a;
            continue;
        }
        const char *key = a + 2;
        const char *eq = strchr(key, '=');
        char keybuf[128];
        const char *value;
        if (eq) {
            size_t kl = (size_t)(eq - key);
            if (kl >= sizeof keybuf) kl = sizeof keybuf - 1;
            memcpy(keybuf, key, kl);
            keybuf[kl] = '\0';
            value = eq + 1;
        } else {
            snprintf(keybuf, sizeof keybuf, "%s", key);
            const Opt *o = opts_find(opts, n, keybuf);
            if (o && o->type == OPT_BOOL && (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0)) {
                value = "1";  // a bare boolean flag means true
            } else {
                if (o && i + 1 >= argc) {
                    snprintf(err, errlen, "option '--%s' needs a value", keybuf);
                    return -1;
                }
                value = i + 1 < argc ? argv[++i] : "";
            }
        }
        if (opts_set(opts, n, keybuf, value, err, errlen) != 0) return -1;
        if (seen) seen[opts_find(opts, n, keybuf) - opts] = 1;
    }
    return 0;
}

static const char *opt_meta(const Opt *o) {
    static const char *meta[] = {"N", "X", "STR", "BOOL", "NAME", "N,N,..", "NAME,.."};
    return o->meta ? o->meta : meta[o->type];
}

int opts_parse(const Opt *opts, int n, int argc, char **argv, int allow_file, char *err, size_t errlen) {
    const char *pos[1];
    int npos = 0, *seen = calloc_check((size_t)n, sizeof(int));
    // flags are parsed twice when a config file is given: first to find it
    // and --help, then again after the file so that flags override it
    int rc = opts_parse_argv(opts, n, argc, argv, 2, pos, &npos, allow_file, seen, err, errlen);
    if (rc == 0 && npos == 1 && (rc = opts_parse_file(opts, n, pos[0], seen, err, errlen)) == 0)
        rc = opts_parse_argv(opts, n, argc, argv, 2, pos, &npos, 1, seen, err, errlen);
    for (int i = 0; rc == 0 && i < n; i++)
        if ((opts[i].flags & OPT_REQUIRED) && !seen[i]) {
            snprintf(err, errlen, "missing --%s %s (required; see --help)", opts[i].name, opt_meta(&opts[i]));
            rc = -1;
        }
    free(seen);
    return rc;
}

int opts_parse_command(const Opt *opts, int n, int argc, char **argv, const char *usage, int allow_file) {
    char err[1024];
    const int rc = opts_parse(opts, n, argc, argv, allow_file, err, sizeof err);
    if (rc == 1) {
        fputs(usage, stdout);
        opts_print_help(opts, n, stdout);
    } else if (rc != 0) {
        error_message("%s", err);
    }
    return rc;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = '\0';
    return s;
}

int opts_parse_file(const Opt *opts, int n, const char *path, int *seen, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot open config file '%s': %s", path, strerror(errno));
        return -1;
    }
    char line[1024];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            snprintf(err, errlen, "%s:%d: line is longer than %zu bytes", path, lineno, sizeof line - 2);
            fclose(f);
            return -1;
        }
        char *hash = strchr(line, '#');
        if (hash) *hash = '\0';
        char *s = trim(line);
        if (*s == '\0') continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, errlen, "%s:%d: expected 'key = value', got '%s'", path, lineno, s);
            fclose(f);
            return -1;
        }
        *eq = '\0';
        char *key = trim(s), *value = trim(eq + 1);
        // values may be quoted, as in nanoGPT's python configs
        size_t vl = strlen(value);
        if (vl >= 2 && (value[0] == '\'' || value[0] == '"') && value[vl - 1] == value[0]) {
            value[vl - 1] = '\0';
            value++;
        }
        char inner[512];
        if (opts_set(opts, n, key, value, inner, sizeof inner) != 0) {
            snprintf(err, errlen, "%s:%d: %s", path, lineno, inner);
            fclose(f);
            return -1;
        }
        if (seen) seen[opts_find(opts, n, key) - opts] = 1;
    }
    fclose(f);
    return 0;
}

// ----------------------------------------------------------------------------
// printing

// A string as a C literal: "\n" for a newline, so --help stays one line.
static void escape(const char *s, char *buf, size_t len) {
    size_t k = 0;
    if (len < 8) return;
    buf[k++] = '"';
    for (; *s && k + 6 < len; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\n') buf[k++] = '\\', buf[k++] = 'n';
        else if (c == '\t') buf[k++] = '\\', buf[k++] = 't';
        else if (c == '"' || c == '\\') buf[k++] = '\\', buf[k++] = (char)c;
        else if (c < 0x20) k += (size_t)snprintf(buf + k, len - k, "\\x%02x", c);
        else buf[k++] = (char)c;
    }
    buf[k++] = '"';
    buf[k] = '\0';
}

static void opt_value_str(const Opt *o, char *buf, size_t len) {
    switch (o->type) {
    case OPT_INT: snprintf(buf, len, "%d", *(int *)o->ptr); break;
    case OPT_FLOAT: snprintf(buf, len, "%g", (double)*(float *)o->ptr); break;
    case OPT_BOOL: snprintf(buf, len, "%s", *(int *)o->ptr ? "true" : "false"); break;
    case OPT_STRING: snprintf(buf, len, "%s", (const char *)o->ptr); break;
    case OPT_CHOICE: snprintf(buf, len, "%s", opt_choice_name(o->choices, *(int *)o->ptr)); break;
    case OPT_INT_LIST:
    case OPT_CHOICE_LIST: {
        const OptList *l = o->ptr;
        size_t k = 0;
        buf[0] = '\0';
        for (int i = 0; i < l->n && k < len; i++) {
            if (o->type == OPT_INT_LIST) k += (size_t)snprintf(buf + k, len - k, "%s%d", i ? "," : "", l->v[i]);
            else k += (size_t)snprintf(buf + k, len - k, "%s%s", i ? "," : "", opt_choice_name(o->choices, l->v[i]));
        }
        break;
    }
    }
}

// Words of text after `col` columns already printed, wrapped at HELP_WIDTH
// with HELP_INDENT columns of indent on every further line.
static void print_wrapped(FILE *f, const char *text, int col) {
    const char *p = text;
    while (*p) {
        while (*p == ' ') p++;
        const char *w = p;
        while (*p && *p != ' ') p++;
        const int wl = (int)(p - w);
        if (wl == 0) break;
        if (col > HELP_INDENT && col + 1 + wl > HELP_WIDTH) {
            fprintf(f, "\n%*s", HELP_INDENT, "");
            col = HELP_INDENT;
        } else if (col > HELP_INDENT) {
            fputc(' ', f);
            col++;
        }
        fprintf(f, "%.*s", wl, w);
        col += wl;
    }
    fputc('\n', f);
}

void opts_print_help(const Opt *opts, int n, FILE *f) {
    const char *group = NULL;
    for (int i = 0; i < n; i++) {
        const Opt *o = &opts[i];
        if (o->flags & OPT_HIDDEN) continue;
        if (!o->group && i == 0) fprintf(f, "\noptions:\n");
        if (o->group && (!group || strcmp(group, o->group))) fprintf(f, "\n%s:\n", o->group);
        group = o->group;
        char head[128], text[2048], v[OPT_STR_MAX + 8], e[2 * OPT_STR_MAX + 8], extra[512] = "", c[256], r[64];
        const int hl = snprintf(head, sizeof head, "  --%s %s", o->name, opt_meta(o));
        opt_value_str(o, v, sizeof v);
        if (o->type == OPT_STRING) {
            if (v[0]) escape(v, e, sizeof e);
            else strcpy(e, "none");
        } else {
            snprintf(e, sizeof e, "%s", v[0] ? v : "none");
        }
        if (o->type == OPT_INT || o->type == OPT_FLOAT || o->type == OPT_INT_LIST)
            snprintf(extra, sizeof extra, "; range %s%s", range_str(o, r, sizeof r),
                     o->type == OPT_INT_LIST ? " each" : "");
        if (o->type == OPT_CHOICE || o->type == OPT_CHOICE_LIST)
            snprintf(extra, sizeof extra, "; one of %s", choices_str(o->choices, c, sizeof c));
        if (o->flags & OPT_REQUIRED) snprintf(text, sizeof text, "%s (required%s)", o->help, extra);
        else snprintf(text, sizeof text, "%s (default: %s%s)", o->help, e, extra);
        fputs(head, f);
        int col = hl;
        if (col < HELP_INDENT - 1) {
            fprintf(f, "%*s", HELP_INDENT - 1 - col, "");
            col = HELP_INDENT - 1;
        } else {
            fprintf(f, "\n%*s", HELP_INDENT - 1, "");
            col = HELP_INDENT - 1;
        }
        fputc(' ', f);
        // the first word goes right here; print_wrapped wraps the rest
        const char *t = text;
        while (*t == ' ') t++;
        int wl = 0;
        while (t[wl] && t[wl] != ' ') wl++;
        fprintf(f, "%.*s", wl, t);
        print_wrapped(f, t + wl, col + 1 + wl);
    }
}

void opts_print_values(const Opt *opts, int n, FILE *f) {
    for (int i = 0; i < n; i++) {
        if (opts[i].flags & OPT_HIDDEN) continue;
        char v[OPT_STR_MAX + 8], e[2 * OPT_STR_MAX + 8];
        opt_value_str(&opts[i], v, sizeof v);
        int control = 0;  // a newline in a value would break the one-line-per-key listing
        for (const char *p = v; *p; p++) control |= (unsigned char)*p < 0x20;
        if (control) escape(v, e, sizeof e);
        else snprintf(e, sizeof e, "%s", v);
        fprintf(f, "  %-16s = %s\n", opts[i].name, e);
    }
}
