/*
 * translate: translates one WAV file with the kompakt C API.
 *
 *   translate MODEL.kpk FILE.wav [LANG [MAX_TOKENS [BEAMS]]]
 *
 * Streams the translation to stdout as it is decoded, then prints two
 * summary lines and one line per segment (a file over 30 s is cut at
 * pauses into segments):
 *
 *   token_ids: [id,id,...]
 *   text: <final translation, newlines replaced by spaces>
 *   segment 1: <start s> <end s> [id,id,...] <its text, newlines replaced>
 */
#include <stdio.h>
#include <stdlib.h>

#include "kompakt.h"

static bool print_piece(const char *piece, void *user_data) {
    size_t *n_pieces = (size_t *)user_data;
    ++*n_pieces;
    fputs(piece, stdout);
    fflush(stdout);
    return true;
}

static int fail(const char *what, kpk_status status) {
    fprintf(stderr, "translate: %s: %s: %s\n", what, kpk_status_name(status), kpk_last_error());
    return 1;
}

int main(int argc, char **argv) {
    kpk_model *model = NULL;
    kpk_session *session = NULL;
    kpk_model_info info;
    kpk_translate_params params;
    kpk_result result;
    kpk_status status;
    const char *text = NULL;
    const char *c;
    size_t n_pieces = 0;
    size_t n_segments = 0;
    kpk_segment segment;
    size_t i, k;

    if (argc < 3 || argc > 6) {
        fprintf(stderr, "usage: %s MODEL.kpk FILE.wav [LANG [MAX_TOKENS [BEAMS]]]\n", argv[0]);
        return 2;
    }
    if (kpk_abi_version() != KPK_ABI_VERSION) {
        fprintf(stderr, "translate: library ABI %u, header ABI %u\n",
                (unsigned)kpk_abi_version(), (unsigned)KPK_ABI_VERSION);
        return 1;
    }

    status = kpk_model_load(argv[1], NULL, &model);
    if (status != KPK_STATUS_OK) {
        return fail("loading the model", status);
    }
    info.struct_size = sizeof info;
    status = kpk_model_get_info(model, &info);
    if (status != KPK_STATUS_OK) {
        kpk_model_free(model);
        return fail("model info", status);
    }
    fprintf(stderr, "model %s (%s): %llu parameters, %llu bytes, size bin %d, languages %s\n",
            info.name, info.architecture, (unsigned long long)info.n_params,
            (unsigned long long)info.storage_bytes, (int)info.size_bin, info.languages);

    status = kpk_session_new(model, NULL, &session);
    /* The session holds its own reference: the model handle is not needed any more. */
    kpk_model_free(model);
    if (status != KPK_STATUS_OK) {
        return fail("creating a session", status);
    }

    params = kpk_translate_default_params();
    if (argc > 3) {
        params.language = argv[3];
    }
    if (argc > 4) {
        params.max_tokens = atoi(argv[4]);
    }
    if (argc > 5) {
        params.beams = atoi(argv[5]);
    }
    params.on_text = print_piece;
    params.user_data = &n_pieces;

    status = kpk_translate_wav(session, argv[2], &params, &text);
    putchar('\n');
    if (status != KPK_STATUS_OK) {
        kpk_session_free(session);
        return fail("translating", status);
    }

    result.struct_size = sizeof result;
    status = kpk_session_last_result(session, &result);
    if (status != KPK_STATUS_OK) {
        kpk_session_free(session);
        return fail("reading the result", status);
    }
    fprintf(stderr, "%lu pieces streamed, %lu tokens\n", (unsigned long)n_pieces,
            (unsigned long)result.n_tokens);
    fputs("token_ids: [", stdout);
    for (i = 0; i < result.n_tokens; ++i) {
        printf(i ? ",%lu" : "%lu", (unsigned long)result.token_ids[i]);
    }
    fputs("]\ntext: ", stdout);
    for (c = text; *c; ++c) {
        putchar(*c == '\n' ? ' ' : *c);
    }
    putchar('\n');

    status = kpk_session_segment_count(session, &n_segments);
    for (k = 0; status == KPK_STATUS_OK && k < n_segments; ++k) {
        segment.struct_size = sizeof segment;
        status = kpk_session_segment(session, k, &segment);
        if (status != KPK_STATUS_OK) {
            break;
        }
        printf("segment %lu: %.3f %.3f [", (unsigned long)(k + 1), segment.start_s, segment.end_s);
        for (i = 0; i < segment.n_tokens; ++i) {
            printf(i ? ",%lu" : "%lu", (unsigned long)segment.token_ids[i]);
        }
        fputs("] ", stdout);
        for (c = segment.text; *c; ++c) {
            putchar(*c == '\n' ? ' ' : *c);
        }
        putchar('\n');
    }
    if (status != KPK_STATUS_OK) {
        kpk_session_free(session);
        return fail("reading the segments", status);
    }

    kpk_session_free(session);
    return 0;
}
