/*
 * opts.h: one table of options, read from the command line (--key=value or
 * --key value) and from config files (key = value lines, # comments).
 *
 * A subcommand describes its options once, as an array of Opt pointing at
 * the fields of its config struct; the same table then parses flags and
 * files, validates ranges and choices, prints --help (grouped, with
 * defaults, ranges and choices taken from the table itself) and prints the
 * resolved configuration. Unknown keys and bad values are errors naming the
 * key; the messages quote the same ranges and choices as --help.
 */
#ifndef GQA_OPTS_H
#define GQA_OPTS_H

#include <stddef.h>
#include <stdio.h>

#define OPT_STR_MAX 512  // bytes of an OPT_STRING buffer, NUL included
#define OPT_LIST_MAX 16  // values of an OPT_INT_LIST or OPT_CHOICE_LIST

typedef enum {
    OPT_INT,          // int*; range [min, max]
    OPT_FLOAT,        // float*; range [min, max]
    OPT_STRING,       // char[OPT_STR_MAX]
    OPT_BOOL,         // int* (0 or 1)
    OPT_CHOICE,       // int*: index into choices
    OPT_INT_LIST,     // OptList*: comma-separated ints, each in [min, max]
    OPT_CHOICE_LIST,  // OptList*: comma-separated indices into choices
} OptType;

// Flags of an option.
enum {
    OPT_REQUIRED = 1,  // must be given; --help shows "required" instead of a default
    OPT_HIDDEN = 2,    // internal: parsed, never listed in --help
    OPT_OPEN = 4,      // OPT_FLOAT: the range excludes both ends, (min, max)
};

typedef struct {
    int n;
    int v[OPT_LIST_MAX];
} OptList;

typedef struct {
    const char *name;             // key, as in the config struct: "n_kv_head"
    OptType type;
    void *ptr;                    // see OptType
    double min, max;              // inclusive range of OPT_INT, OPT_FLOAT, OPT_INT_LIST values
    const char *help;
    const char *const *choices;   // OPT_CHOICE, OPT_CHOICE_LIST: NULL-terminated names
    int flags;                    // OPT_REQUIRED | OPT_HIDDEN
    const char *group;            // --help prints a heading where the group changes (NULL: none)
    const char *meta;             // the value's placeholder in --help: "FILE" (NULL: from the type)
} Opt;

// Set one option from its text value. Returns 0, or -1 with err filled.
int opts_set(const Opt *opts, int n, const char *key, const char *value, char *err, size_t errlen);

// Parse argv[start..argc). Arguments not starting with "--" are positional and
// collected (up to max_pos). Returns 0 on success, 1 if --help/-h was given,
// -1 on error with err filled. `seen`, when not NULL, has n entries and gets
// 1 for each option given (for required options and overrides).
int opts_parse_argv(const Opt *opts, int n, int argc, char **argv, int start, const char **pos, int *n_pos,
                    int max_pos, int *seen, char *err, size_t errlen);

// The flags of a subcommand, argv[2..argc), and an optional positional
// CONFIG_FILE of `key = value` lines when allow_file is set (flags override
// the file), without printing: 0 when parsed, 1 for --help, -1 with err
// filled (a required option missing among them).
int opts_parse(const Opt *opts, int n, int argc, char **argv, int allow_file, char *err, size_t errlen);

// opts_parse, printing what it finds: on --help (1) `usage` and the options
// to stdout, the command then returning 0; on an error (-1) one line with
// error_message, the command returning 1.
int opts_parse_command(const Opt *opts, int n, int argc, char **argv, const char *usage, int allow_file);

// Parse a config file of "key = value" lines. Returns 0 or -1 with err filled
// (the message names the file, the line and the key). `seen` as above.
int opts_parse_file(const Opt *opts, int n, const char *path, int *seen, char *err, size_t errlen);

// --help: one entry per option (hidden ones skipped), grouped, wrapped at
// 100 columns: "--key TYPE  help [default X; range [a, b] | one of a, b]".
void opts_print_help(const Opt *opts, int n, FILE *f);

// "key = value", one per line: the resolved configuration.
void opts_print_values(const Opt *opts, int n, FILE *f);

// The name of choice i of an option's choices ("?" when out of range).
const char *opt_choice_name(const char *const *choices, int i);
// Index of name in choices, or -1.
int opt_choice_index(const char *const *choices, const char *name);

#endif
