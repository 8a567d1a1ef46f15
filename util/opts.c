/*
 * opts.c: the option table parser of opts.h.
 */
#include "opts.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const Opt *opts_find(const Opt *opts, int n, const char *key, size_t keylen) {
    for (int i = 0; i < n; i++) {
        if (strlen(opts[i].name) == keylen && strncmp(opts[i].name, key, keylen) == 0) return &opts[i];
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

int opts_set(const Opt *opts, int n, const char *key, const char *value, char *err, size_t errlen) {
    const Opt *o = opts_find(opts, n, key, strlen(key));
    if (!o) {
        snprintf(err, errlen, "unknown option '%s' (see --help)", key);
        return -1;
    }
    char *end = NULL;
    errno = 0;
    switch (o->type) {
    case OPT_INT: {
        // accept "1e9"-style integers too, as users write them in configs
        double d = strtod(value, &end);
        if (end == value || *end != '\0' || errno || d != floor(d)) {
            snprintf(err, errlen, "option '%s': '%s' is not an integer", key, value);
            return -1;
        }
        if (d < o->min || d > o->max) {
            snprintf(err, errlen, "option '%s': %s is out of range [%.0f, %.0f]", key, value, o->min, o->max);
            return -1;
        }
        *(int *)o->ptr = (int)d;
        return 0;
    }
    case OPT_FLOAT: {
        double d = strtod(value, &end);
        if (end == value || *end != '\0' || errno || !isfinite(d)) {
            snprintf(err, errlen, "option '%s': '%s' is not a number", key, value);
            return -1;
        }
        if (d < o->min || d > o->max) {
            snprintf(err, errlen, "option '%s': %s is out of range [%g, %g]", key, value, o->min, o->max);
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
    }
    return -1;
}

int opts_parse_argv(const Opt *opts, int n, int argc, char **argv, int start,
                    const char **pos, int *n_pos, int max_pos, char *err, size_t errlen) {
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
            const Opt *o = opts_find(opts, n, keybuf, strlen(keybuf));
            if (o && o->type == OPT_BOOL && (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0)) {
                value = "1";  // a bare boolean flag means true
            } else {
                if (i + 1 >= argc) {
                    snprintf(err, errlen, "option '--%s' needs a value", keybuf);
                    return -1;
                }
                value = argv[++i];
            }
        }
        if (opts_set(opts, n, keybuf, value, err, errlen) != 0) return -1;
    }
    return 0;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = '\0';
    return s;
}

int opts_parse_command(const Opt *opts, int n, int argc, char **argv, const char *usage) {
    char err[1024];
    int rc = opts_parse_argv(opts, n, argc, argv, 2, NULL, NULL, 0, err, sizeof err);
    if (rc == 1) {
        fputs(usage, stdout);
        opts_print_help(opts, n, stdout);
    } else if (rc != 0) {
        error_message("%s", err);
    }
    return rc;
}

int opts_parse_file(const Opt *opts, int n, const char *path, char *err, size_t errlen) {
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
    }
    fclose(f);
    return 0;
}

static void opt_value_str(const Opt *o, char *buf, size_t len) {
    switch (o->type) {
    case OPT_INT: snprintf(buf, len, "%d", *(int *)o->ptr); break;
    case OPT_FLOAT: snprintf(buf, len, "%g", (double)*(float *)o->ptr); break;
    case OPT_BOOL: snprintf(buf, len, "%s", *(int *)o->ptr ? "true" : "false"); break;
    case OPT_STRING: snprintf(buf, len, "%s", (const char *)o->ptr); break;
    }
}

void opts_print_help(const Opt *opts, int n, FILE *f) {
    static const char *type_names[] = {"INT", "FLOAT", "STR", "BOOL"};
    for (int i = 0; i < n; i++) {
        const Opt *o = &opts[i];
        char def[OPT_STR_MAX + 8], range[96] = "";
        opt_value_str(o, def, sizeof def);
        if (o->type == OPT_INT) snprintf(range, sizeof range, ", range [%.0f, %.0f]", o->min, o->max);
        if (o->type == OPT_FLOAT) snprintf(range, sizeof range, ", range [%g, %g]", o->min, o->max);
        fprintf(f, "  --%-16s %-5s %s (default: %s%s)\n", o->name, type_names[o->type], o->help,
                def[0] ? def : "\"\"", range);
    }
}

void opts_print_values(const Opt *opts, int n, FILE *f) {
    for (int i = 0; i < n; i++) {
        char v[OPT_STR_MAX + 8];
        opt_value_str(&opts[i], v, sizeof v);
        fprintf(f, "  %-16s = %s\n", opts[i].name, v);
    }
}
