/* A stand-in for libonnxruntime.so with the C API entry points of an ORT that
 * serves API versions 1 to 3: OrtGetApiBase returns {GetApi, GetVersionString};
 * GetApi returns a table of 125 distinct functions (the length of version 3's
 * OrtApi) for versions 1..3 and NULL otherwise. Function api_N sits in slot N,
 * so a reader of the table can be checked against the symbol names, and the
 * entries of later versions (AddSessionConfigEntry, RunWithBinding, RunAsync)
 * must be reported absent.
 *
 * tests/fixtures/capi-fake-ort-api3.so is this file built with
 *   gcc -O2 -shared -fPIC -o tests/fixtures/capi-fake-ort-api3.so tests/c/fake_ortapi.c
 * test_ortapi.py reads it, and in a live test builds the source at each -O level
 * (GetApi's machine code differs: branches, cmov, spills to the stack at -O0).
 */
#include <stddef.h>
#include <stdint.h>

typedef void (*api_function)(void);

/* each function stores its own number: identical bodies would be folded into one */
volatile int last_called;

#define API(n) static void api_##n(void) { last_called = n; }
#define API10(t) API(t##0) API(t##1) API(t##2) API(t##3) API(t##4) API(t##5) API(t##6) API(t##7) API(t##8) API(t##9)
#define SLOT10(t) api_##t##0, api_##t##1, api_##t##2, api_##t##3, api_##t##4, \
                  api_##t##5, api_##t##6, api_##t##7, api_##t##8, api_##t##9,

API(0) API(1) API(2) API(3) API(4) API(5) API(6) API(7) API(8) API(9)
API10(1) API10(2) API10(3) API10(4) API10(5) API10(6) API10(7) API10(8) API10(9)
API10(10) API10(11) API(120) API(121) API(122) API(123) API(124)

static const api_function api_table[125] = {
    api_0, api_1, api_2, api_3, api_4, api_5, api_6, api_7, api_8, api_9,
    SLOT10(1) SLOT10(2) SLOT10(3) SLOT10(4) SLOT10(5) SLOT10(6) SLOT10(7) SLOT10(8) SLOT10(9)
    SLOT10(10) SLOT10(11) api_120, api_121, api_122, api_123, api_124,
};

static const api_function *get_api(uint32_t version) {
    if (version >= 1 && version <= 3)
        return api_table;
    return NULL;
}

static const char *get_version_string(void) { return "0.0.3-fake"; }

struct api_base {
    const api_function *(*get_api)(uint32_t version);
    const char *(*get_version_string)(void);
};

static const struct api_base base = {get_api, get_version_string};

const struct api_base *OrtGetApiBase(void) { return &base; }
