/*
 * fuzz_checkpoint.c: libFuzzer harness for the checkpoint reader. Any bytes
 * must give either a loaded model or a one-line error: no crash, no leak,
 * no undefined behaviour. The parsed tokenizer blob is fed on to the
 * vocabulary parser too, as `gqa sample` does.
 */
#include <stdint.h>
#include <stdlib.h>

#include "../../data/tokenizer.h"
#include "../../model/checkpoint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    GPT m;
    uint8_t *vocab;
    size_t vocab_len;
    TrainState ts;
    int has_ts;
    char err[512];
    if (checkpoint_parse("fuzz.bin", data, size, &m, &vocab, &vocab_len, &ts, &has_ts, err, sizeof err) != 0)
        return 0;
    Tokenizer t;
    if (tokenizer_parse(&t, vocab, vocab_len, err, sizeof err) == vocab_len) tokenizer_free(&t);
    free(vocab);
    if (has_ts) train_state_free(&ts);
    gpt_free(&m);
    return 0;
}
