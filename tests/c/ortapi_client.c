/* A C client of ONNX Runtime's C API, as non-Python clients use it: OrtGetApiBase()->GetApi(),
 * then the OrtApi table's functions. No onnxruntime_c_api.h here: the table is an array of
 * function pointers, reached by index (the struct's declaration order) and cast to each
 * function's signature.
 *
 *   ortapi_client LIB MODEL RUNS [THREADS]   create a session on MODEL (input "x", output "y",
 *                                            float [N, N]) and run it RUNS times; print each run's
 *                                            own latency: "run <i> <begin_ns> <end_ns>" (CLOCK_MONOTONIC)
 *   ortapi_client LIB --calls N              call SetIntraOpNumThreads N times and print
 *                                            "calls <N> <ns per call>" (the cost of probing a call)
 *
 * Build: gcc -O2 -o ortapi_client ortapi_client.c -ldl
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef struct OrtStatus OrtStatus;
typedef void *OrtApiFunction;
typedef struct {
    const OrtApiFunction *(*GetApi)(uint32_t version);
    const char *(*GetVersionString)(void);
} OrtApiBase;

/* indices in struct OrtApi (onnxruntime_c_api.h), all from API version 1 but AddSessionConfigEntry (5) */
enum {
    GET_ERROR_MESSAGE = 2,
    CREATE_ENV = 3,
    CREATE_SESSION = 7,
    RUN = 9,
    CREATE_SESSION_OPTIONS = 10,
    SET_INTRA_OP_NUM_THREADS = 24,
    CREATE_TENSOR_WITH_DATA_AS_ORT_VALUE = 49,
    CREATE_CPU_MEMORY_INFO = 69,
    RELEASE_ENV = 92,
    RELEASE_MEMORY_INFO = 94,
    RELEASE_SESSION = 95,
    RELEASE_VALUE = 96,
    RELEASE_SESSION_OPTIONS = 100,
    ADD_SESSION_CONFIG_ENTRY = 130,
};
#define API_VERSION 5
#define ORT_LOGGING_LEVEL_WARNING 2
#define ORT_ARENA_ALLOCATOR 1
#define ORT_MEM_TYPE_DEFAULT 0
#define TENSOR_FLOAT 1

static const OrtApiFunction *api;

static void check(OrtStatus *status, const char *what) {
    if (status == NULL)
        return;
    const char *(*message)(const OrtStatus *) = (const char *(*)(const OrtStatus *))api[GET_ERROR_MESSAGE];
    fprintf(stderr, "ortapi_client: %s failed: %s\n", what, message(status));
    exit(1);
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void *create_session_options(int threads) {
    void *options = NULL;
    check(((OrtStatus * (*)(void **)) api[CREATE_SESSION_OPTIONS])(&options), "CreateSessionOptions");
    check(((OrtStatus * (*)(void *, int)) api[SET_INTRA_OP_NUM_THREADS])(options, threads), "SetIntraOpNumThreads");
    return options;
}

static int count_calls(long calls) {
    void *options = create_session_options(1);
    OrtStatus *(*set_threads)(void *, int) = (OrtStatus * (*)(void *, int)) api[SET_INTRA_OP_NUM_THREADS];
    uint64_t begin = now_ns();
    for (long i = 0; i < calls; i++)
        check(set_threads(options, 1), "SetIntraOpNumThreads");
    uint64_t end = now_ns();
    printf("calls %ld %.1f\n", calls, (double)(end - begin) / (double)calls);
    ((void (*)(void *))api[RELEASE_SESSION_OPTIONS])(options);
    return 0;
}

static int run_model(const char *model, long runs, int threads) {
    void *env = NULL, *session = NULL, *memory_info = NULL, *input = NULL;
    check(((OrtStatus * (*)(int, const char *, void **)) api[CREATE_ENV])(ORT_LOGGING_LEVEL_WARNING, "ortapi_client", &env),
          "CreateEnv");
    void *options = create_session_options(threads);
    check(((OrtStatus * (*)(void *, const char *, const char *)) api[ADD_SESSION_CONFIG_ENTRY])(
              options, "session.intra_op.allow_spinning", "0"),
          "AddSessionConfigEntry");
    check(((OrtStatus * (*)(void *, const char *, void *, void **)) api[CREATE_SESSION])(env, model, options, &session),
          "CreateSession");
    check(((OrtStatus * (*)(int, int, void **)) api[CREATE_CPU_MEMORY_INFO])(ORT_ARENA_ALLOCATOR, ORT_MEM_TYPE_DEFAULT,
                                                                          &memory_info),
          "CreateCpuMemoryInfo");

    const int64_t side = 256;
    const int64_t shape[2] = {side, side};
    float *data = malloc(sizeof(float) * side * side);
    for (int64_t i = 0; i < side * side; i++)
        data[i] = (float)(i % 7) * 0.25f;
    check(((OrtStatus * (*)(void *, void *, size_t, const int64_t *, size_t, int, void **))
               api[CREATE_TENSOR_WITH_DATA_AS_ORT_VALUE])(memory_info, data, sizeof(float) * side * side, shape, 2,
                                                         TENSOR_FLOAT, &input),
          "CreateTensorWithDataAsOrtValue");

    OrtStatus *(*run)(void *, const void *, const char *const *, const void *const *, size_t, const char *const *,
                      size_t, void **) =
        (OrtStatus * (*)(void *, const void *, const char *const *, const void *const *, size_t, const char *const *,
                         size_t, void **)) api[RUN];
    void (*release_value)(void *) = (void (*)(void *))api[RELEASE_VALUE];
    const char *input_names[1] = {"x"}, *output_names[1] = {"y"};
    const void *inputs[1] = {input};
    for (long i = 0; i < runs; i++) {
        void *output = NULL;
        uint64_t begin = now_ns();
        check(run(session, NULL, input_names, inputs, 1, output_names, 1, &output), "Run");
        uint64_t end = now_ns();
        printf("run %ld %llu %llu\n", i, (unsigned long long)begin, (unsigned long long)end);
        release_value(output);
    }
    fflush(stdout);
    release_value(input);
    ((void (*)(void *))api[RELEASE_MEMORY_INFO])(memory_info);
    ((void (*)(void *))api[RELEASE_SESSION])(session);
    ((void (*)(void *))api[RELEASE_SESSION_OPTIONS])(options);
    ((void (*)(void *))api[RELEASE_ENV])(env);
    free(data);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s LIB MODEL RUNS [THREADS] | %s LIB --calls N\n", argv[0], argv[0]);
        return 2;
    }
    void *library = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (library == NULL) {
        fprintf(stderr, "ortapi_client: %s\n", dlerror());
        return 1;
    }
    const OrtApiBase *(*get_api_base)(void) = (const OrtApiBase *(*)(void))dlsym(library, "OrtGetApiBase");
    if (get_api_base == NULL || (api = get_api_base()->GetApi(API_VERSION)) == NULL) {
        fprintf(stderr, "ortapi_client: %s serves no OrtApi version %d\n", argv[1], API_VERSION);
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argv[2][0] == '-' && argv[2][1] == '-')
        return count_calls(atol(argv[3]));
    return run_model(argv[2], atol(argv[3]), argc > 4 ? atoi(argv[4]) : 1);
}
