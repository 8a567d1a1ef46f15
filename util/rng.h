/*
 * rng.h: small deterministic random numbers. Each consumer owns its state
 * (a uint64_t), so weight init, batches, dropout and sampling never disturb
 * each other's streams.
 *
 * rng_hash is counter-based: the same (key, index) always gives the same
 * number, whatever the thread that asks. Dropout masks use it, so forward
 * and backward regenerate identical masks without storing them.
 */
#ifndef GQA_RNG_H
#define GQA_RNG_H

#include <math.h>
#include <stdint.h>

// splitmix64 finaliser: a strong 64-bit mix.
static inline uint64_t rng_mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// Next 64 random bits; advances *state.
static inline uint64_t rng_u64(uint64_t *state) {
    *state += 0x9E3779B97F4A7C15ull;
    return rng_mix64(*state);
}

// Uniform in [0, 1) with 24 bits: exactly representable as float.
static inline float rng_uniform(uint64_t *state) {
    return (float)(rng_u64(state) >> 40) * (1.0f / 16777216.0f);
}

// Standard normal (Box-Muller; one value per call, the pair's twin dropped).
static inline float rng_normal(uint64_t *state) {
    float u1 = rng_uniform(state), u2 = rng_uniform(state);
    if (u1 < 1e-12f) u1 = 1e-12f;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.28318530717958647692f * u2);
}

// Uniform in [0, 1) from a key and an index, stateless.
static inline float rng_hash_uniform(uint64_t key, uint64_t index) {
    return (float)(rng_mix64(key ^ rng_mix64(index)) >> 40) * (1.0f / 16777216.0f);
}

#endif
