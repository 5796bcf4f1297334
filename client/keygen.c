/* keygen.c — see keygen.h. */
#include "keygen.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "crypto.h"
#include "status.h"

static void keygen_usage(FILE *f) {
    fprintf(f,
            "usage: infemeral keygen --out DIR\n"
            "  writes DIR/worker.key (private, mode 0600; an existing one is never replaced)\n"
            "  and DIR/worker.pub (public); prints the public key and its fingerprint.\n"
            "  The worker reads the private key from INFEMERAL_WORKER_KEY (the file's text)\n"
            "  or INFEMERAL_WORKER_KEY_FILE (its path); clients pin worker.pub (--worker-pub).\n");
}

int cmd_keygen(int argc, char **argv) {
    const char *out = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            keygen_usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--out")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "infemeral keygen: --out needs a directory\n");
                return 2;
            }
            out = argv[++i];
            continue;
        }
        fprintf(stderr, "infemeral keygen: unknown option '%s'\n", a);
        keygen_usage(stderr);
        return 2;
    }
    if (!out || !*out) {
        fprintf(stderr, "infemeral keygen: --out DIR is required\n");
        keygen_usage(stderr);
        return 2;
    }
    if (mkdir(out, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "infemeral keygen: %s: cannot create the directory: %s\n", out, strerror(errno));
        return 1;
    }
    inf_error err = {{0}};
    keys_pair kp;
    char fpr[KEYS_FPR_LEN], pub[KEYS_B64_LEN + 1];
    inf_status st = keys_generate(&kp, &err);
    if (st == INF_OK) st = keys_write(out, &kp, &err);
    if (st == INF_OK) st = keys_fingerprint(&kp.pub, fpr, &err);
    if (st == INF_OK) keys_public_base64(&kp.pub, pub);
    keys_wipe(&kp);
    if (st != INF_OK) {
        fprintf(stderr, "infemeral keygen: %s\n", err.msg);
        return 1;
    }
    printf("public key: %s\nfingerprint: %s\n", pub, fpr);
    fprintf(stderr, "wrote %s/worker.key (secret, mode 0600) and %s/worker.pub\n", out, out);
    return fflush(stdout) == 0 ? 0 : 1;
}
