/*
 * prepare.h: `gqa prepare`, text file in, token files out (nanoGPT's
 * data/shakespeare_char/prepare.py):
 *
 *   gqa prepare --input FILE --out_dir DIR [--val_fraction 0.1]
 *
 * reads FILE as UTF-8, builds the character vocabulary (data/tokenizer.h),
 * encodes the whole text and writes DIR/train.bin (the first
 * int(n * (1 - val_fraction)) tokens), DIR/val.bin (the rest) and
 * DIR/vocab.bin, creating DIR (mkdir -p) if needed. Wiring into the gqa
 * binary's command table is gqa.c's business.
 */
#ifndef GQA_PREPARE_H
#define GQA_PREPARE_H

// argv[1] is "prepare"; flags are parsed from argv[2]. Returns 0, or 1 after
// printing one line "error: ..." to stderr (missing --input or --out_dir,
// unreadable, empty or invalid UTF-8 input, val_fraction outside (0, 1), a
// split leaving train or val with fewer than 2 tokens, a failed write).
int cmd_prepare(int argc, char **argv);

#endif
