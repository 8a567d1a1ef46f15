/*
 * opts.h: one table of options, read from the command line (--key=value or
 * --key value) and from config files (key = value lines, # comments).
 *
 * A subcommand describes its options once, as an array of Opt pointing at
 * the fields of its config struct; the same table then parses flags and
 * files, prints --help with defaults and ranges, and prints the resolved
 * configuration. Unknown keys and bad values are errors naming the key.
 */
#ifndef GQA_OPTS_H
#define GQA_OPTS_H

#include <stddef.h>
#include <stdio.h>

#define OPT_STR_MAX 512

typedef enum { OPT_INT, OPT_FLOAT, OPT_STRING, OPT_BOOL } OptType;

typedef struct {
    const char *name;  // key, as in the config struct: "n_kv_head"
    OptType type;
    void *ptr;         // int* (OPT_INT, OPT_BOOL), float*, or char[OPT_STR_MAX]
    double min, max;   // inclusive range for numbers (ignored for strings/bools)
    const char *help;
} Opt;

// Set one option from its text value. Returns 0, or -1 with err filled.
int opts_set(const Opt *opts, int n, const char *key, const char *value, char *err, size_t errlen);

// Parse argv[start..argc). Arguments not starting with "--" are positional and
// collected (up to max_pos). Returns 0 on success, 1 if --help/-h was given,
// -1 on error with err filled.
int opts_parse_argv(const Opt *opts, int n, int argc, char **argv, int start,
                    const char **pos, int *n_pos, int max_pos, char *err, size_t errlen);

// The flags of a subcommand, argv[2..argc) (no positional arguments): 0 when
// parsed; 1 when --help was given, after printing `usage` and the options
// to stdout (the command then returns 0); -1 on an error, printed with
// error_message (the command then returns 1).
int opts_parse_command(const Opt *opts, int n, int argc, char **argv, const char *usage);

// Parse a config file of "key = value" lines. Returns 0 or -1 with err filled
// (the message names the file, the line and the key).
int opts_parse_file(const Opt *opts, int n, const char *path, char *err, size_t errlen);

// "--key <type> help (default: X, range [a, b])", one per line.
void opts_print_help(const Opt *opts, int n, FILE *f);

// "key = value", one per line: the resolved configuration.
void opts_print_values(const Opt *opts, int n, FILE *f);

#endif
