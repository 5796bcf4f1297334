/* testutil.h — small helpers shared by the test suites. */
#ifndef INF_TESTUTIL_H
#define INF_TESTUTIL_H

#include <stddef.h>

/* Path of a file under the shared assets (INF_ASSETS), in a static buffer
 * per call site's own buffer `buf`. */
const char *tu_asset(char *buf, size_t cap, const char *rel);
/* Path of the SmolLM2 GGUF (INF_SMOLLM2) or NULL when it is not present. */
const char *tu_smollm2(void);
/* Path under the source tree (INF_SOURCE_ROOT). */
const char *tu_source(char *buf, size_t cap, const char *rel);
/* A fresh empty directory under $TMPDIR (or /tmp); caller removes it. */
const char *tu_tmpdir(char *buf, size_t cap);
/* Writes len bytes to path; returns 0 on success. */
int tu_write_file(const char *path, const void *data, size_t len);
/* Reads a whole file (malloc'd, NUL-terminated); NULL on failure. */
char *tu_read_file(const char *path, size_t *len);

#endif
