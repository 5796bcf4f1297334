#include "testutil.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *tu_asset(char *buf, size_t cap, const char *rel) {
    const char *root = getenv("INF_ASSETS");
    snprintf(buf, cap, "%s/%s", root && *root ? root : "../shared/assets", rel);
    return buf;
}

const char *tu_source(char *buf, size_t cap, const char *rel) {
    const char *root = getenv("INF_SOURCE_ROOT");
    snprintf(buf, cap, "%s/%s", root && *root ? root : ".", rel);
    return buf;
}

const char *tu_smollm2(void) {
    const char *p = getenv("INF_SMOLLM2");
    if (!p || !*p) return NULL;
    return access(p, R_OK) == 0 ? p : NULL;
}

/* Temporary directories are removed when the process that made them exits
 * (each Criterion test runs in its own process), so a failing test leaves
 * nothing behind either. Children forked by a test (crash tests) exit
 * without touching them: only the creating pid cleans up. */
#define TU_MAX_TMP 64
static char tmp_dirs[TU_MAX_TMP][512];
static int n_tmp;
static pid_t tmp_owner;

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *f) {
    (void)sb, (void)flag, (void)f;
    remove(p);
    return 0;
}

static void rm_tmp_dirs(void) {
    if (getpid() != tmp_owner || getenv("INF_KEEP_TMP")) return;
    for (int i = 0; i < n_tmp; i++) nftw(tmp_dirs[i], rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    n_tmp = 0;
}

const char *tu_tmpdir(char *buf, size_t cap) {
    const char *t = getenv("TMPDIR");
    snprintf(buf, cap, "%s/inf-test-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(buf)) return NULL;
    if (tmp_owner != getpid()) { /* first in this process (or a fork's copy of the list) */
        n_tmp = 0;
        tmp_owner = getpid();
        atexit(rm_tmp_dirs);
    }
    if (n_tmp < TU_MAX_TMP && strlen(buf) < sizeof tmp_dirs[0]) snprintf(tmp_dirs[n_tmp++], sizeof tmp_dirs[0], "%s", buf);
    return buf;
}

int tu_write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, len, f);
    int rc = fclose(f);
    return (w == len && rc == 0) ? 0 : -1;
}

char *tu_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) != 0) { fclose(f); return NULL; }
    long n = ftell(f);
    if (n < 0) { fclose(f); return NULL; }
    rewind(f);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) { free(b); b = NULL; }
    fclose(f);
    if (b) { b[n] = '\0'; if (len) *len = (size_t)n; }
    return b;
}
