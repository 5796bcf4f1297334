/* mapfile.h — read-only memory maps of model files.
 *
 * Weights are used in place from the map, so a model never costs more
 * resident memory than the pages the forward pass touches. The map is
 * private and read-only: nothing can write through it.
 */
#ifndef INF_MAPFILE_H
#define INF_MAPFILE_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct {
    const uint8_t *data; /* NULL for an empty file */
    size_t size;
    char path[1024];
} inf_mapfile;

/* Maps `path`. Errors name the path and the system's reason. */
inf_status inf_map_open(inf_mapfile *m, const char *path, inf_error *err);
void inf_map_close(inf_mapfile *m);

/* write(2) until all n bytes are out (retrying EINTR and short writes).
 * Returns 0, or -1 with errno set. */
int inf_write_all(int fd, const void *buf, size_t n);
/* fsync a directory, or the directory holding `path`, so that a rename or
 * a create inside it survives a crash. Returns 0, or -1 with errno set
 * (EINVAL from filesystems that cannot sync directories counts as 0). */
int inf_fsync_dir(const char *dir);
int inf_fsync_parent(const char *path);

/* Reads a whole (small) file into a NUL-terminated malloc'd buffer; caller
 * frees. Refuses files larger than max_bytes. */
inf_status inf_read_file(const char *path, size_t max_bytes, char **out, size_t *len,
                         inf_error *err);

#endif
