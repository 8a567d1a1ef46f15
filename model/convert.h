/*
 * convert.h: change the number of KV heads of a model (MHA -> GQA/MQA by
 * mean-pooling, as Ainslie et al. 2023, or back by repeating). See
 * convert.c for the head mapping.
 */
#ifndef GQA_CONVERT_H
#define GQA_CONVERT_H

#include <stddef.h>
#include <stdint.h>

#include "gpt.h"

typedef enum { CONVERT_MEAN = 0, CONVERT_FIRST = 1, CONVERT_RANDOM = 2, CONVERT_REPEAT = 3 } ConvertMethod;

// The methods' names in ConvertMethod order, NULL-terminated.
extern const char *const convert_method_names[];

// dst = src with G KV heads (dst is initialised here). Reduction methods
// need G to divide src's n_kv_head; repeat needs a multiple of it; G must
// divide n_head. Returns 0, or -1 with err naming the values.
int gpt_convert_kv_heads(const GPT *src, GPT *dst, int G, ConvertMethod method, uint64_t seed, char *err,
                         size_t errlen);

#endif
