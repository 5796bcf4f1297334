/* kvstore.h — the worker's encrypted, crash-safe session KV store.
 *
 * A session's attention cache (worker/kv.h) survives between requests here,
 * encrypted under the 32-byte key the client sends inside each sealed
 * request. The worker keeps no key after a request; without the key the
 * files are opaque.
 *
 * ON DISK (INFEMERAL_KV_DIR = the `dir` given to kvs_open)
 *
 *   dir/<session id: 32 lowercase hex>/      mode 0700
 *     manifest            the committed state: which segments, how many
 *                         positions of each, len, last_step, dims, a random
 *                         128-bit manifest id
 *     seg-<16 hex>        one commit's new positions [from, len) for ALL
 *                         layers: per layer K rows then V rows, f32
 *     lock                flock(2) target: commits and deletions of this
 *                         session hold it exclusively; loads never take it
 *     .tmp-<16 hex>       a file being written (garbage if its writer died)
 *
 *   Every file = 40-byte clear header (magic "INFKVSEG"/"INFKVMAN", u32
 *   version 1, u32 0, 96-bit nonce, u32 0, u64 plaintext length), then the
 *   AES-256-GCM ciphertext, then the 16-byte tag. The nonce is fresh from
 *   RAND_bytes for every file. The AAD is a label, the session id, the
 *   file's own final name and the clear header, so a file renamed, copied
 *   into another session or given another position fails authentication.
 *   Integers are little-endian; floats are the host's IEEE binary32 (the
 *   build refuses big-endian hosts).
 *
 *   Why f32 and not f16: a reloaded session must continue bit for bit like
 *   one that never left memory (the split run must equal the local run token
 *   for token); f16 would halve the bytes but change the numbers. The tests
 *   check bit-exact reload.
 *
 * COMMIT (kvs_commit), in this order:
 *   1. take the session lock (flock, blocking); read and authenticate the
 *      current manifest with the caller's key: a wrong key stops here and
 *      nothing is written;
 *   2. write the new positions [from, len) as a segment: .tmp file, fsync,
 *      rename to seg-<id>, fsync the directory;
 *   3. write the new manifest (the kept prefix of the old segment list, the
 *      last one possibly used only in part — truncation never rewrites data —
 *      plus the new segment): .tmp file, fsync, rename over `manifest`
 *      = THE COMMIT POINT, fsync the directory;
 *   4. delete segments the new manifest does not reference and dead .tmp
 *      files; release the lock.
 *   Only the old prefix is reused when the on-disk manifest is the one this
 *   store last loaded or committed for the session; otherwise (another
 *   process committed meanwhile, or the cache forgot) the commit writes all
 *   of [0, len) from the caller's kv as one segment, so the result is
 *   exactly the caller's state. The same full write compacts a session that
 *   would exceed max_segments segments.
 *
 * WHAT IT SURVIVES, AND THE TEST THAT SHOWS IT (tests/test_kvstore.c)
 *   - SIGKILL at any instant of a commit: rename(2) is atomic, so a reader
 *     sees the old manifest or the new one, and a manifest only names
 *     segments that were complete and renamed before it. Test
 *     `crash_sigkill_leaves_old_or_new_state`: a child commits in a loop
 *     and is killed at 50 random moments; each time a fresh store loads
 *     exactly the last state the child reported or the next one. Test `crash_at_every_step` kills a commit at each of its
 *     file-system steps in turn (first commit, append, truncation,
 *     compaction) with the same check. Power loss: the fsyncs above order
 *     the writes the same way (not testable here).
 *   - Two processes (workers on one network volume) committing one session:
 *     the lock serializes commits, the last complete commit wins, and a
 *     load that raced a commit's clean-up retries on the new manifest.
 *     Test `two_processes_one_session`. Where flock is not supported
 *     (ENOLCK/EOPNOTSUPP/ENOSYS) commits run unlocked: still never a torn
 *     or mixed file, and clean-up then only deletes garbage older than
 *     10 minutes so it cannot delete a racing writer's new segment (this
 *     fallback is not exercised by the tests; gc may then remove a session
 *     mid-commit if its last commit is older than the TTL).
 *   - Tampering, a wrong key, files swapped between sessions or names:
 *     INF_E_AUTH, nothing modified. Tests `wrong_key_is_auth_and_changes_nothing`,
 *     `tamper_segment_is_auth`, `tamper_manifest_is_auth`, `swapped_files_are_auth`.
 *   Not detected: rolling a whole session back to an older complete
 *   (manifest + segments) snapshot; the handler's step check covers that.
 *
 * CACHE: up to cache_sessions decrypted states live in memory, keyed by
 * session id and manifest id. A load always reads and authenticates the
 * small manifest with the caller's key (tens of bytes per segment: that
 * proves the key and that no other process committed since) but reads no
 * segment when the manifest id matches the cached one. An inode/mtime check
 * alone was rejected: on coarse-timestamp network filesystems a reused inode
 * could serve a stale state. Entries also carry HMAC-SHA256(key, session id)
 * and are only served when it matches. Evicted entries are wiped with
 * OPENSSL_cleanse.
 *
 * GC: kvs_gc removes sessions whose manifest mtime (= the commit time: the
 * rename keeps the .tmp file's mtime) is older than ttl_seconds. It takes the
 * session lock without waiting and skips a session whose lock is held, so it
 * never removes a session being committed; a committer that waited on a lock
 * file gc then deleted notices (the path no longer names its inode) and
 * starts over.
 *
 * OWNERSHIP: kvs_load fills a fresh inf_kv the caller frees with
 * inf_kv_free. The store never keeps the caller's key or kv.
 *
 * THREAD-SAFETY: all calls may run concurrently from many threads, for
 * different sessions. For ONE session the caller must serialize
 * load -> truncate/append -> commit (the handler holds a per-session mutex):
 * the incremental commit trusts that the kv it is given descends from this
 * store's last load/commit of that session. (Concurrent calls on one session
 * still never tear a file, they may only interleave states.)
 */
#ifndef INF_KVSTORE_H
#define INF_KVSTORE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "kv.h"
#include "model.h"
#include "status.h"

#define KVS_SESSION_ID_LEN 32 /* lowercase hex characters */
#define KVS_KEY_LEN 32

typedef struct kvs_store kvs_store;

typedef struct {
    long ttl_seconds;         /* gc age limit; default 3600 */
    int cache_sessions;       /* hot sessions kept decrypted; default 8; 0 = no cache */
    size_t max_session_bytes; /* plaintext K+V bytes of one session; default 4 GiB */
    int max_segments;         /* compaction threshold; default 64 */
} kvs_options;

/* Fills *o with the defaults above. */
void kvs_options_init(kvs_options *o);

/* Opens (creating it 0700 if missing) the store directory. opts may be
 * NULL (defaults). *out is NULL on failure. */
inf_status kvs_open(kvs_store **out, const char *dir, const kvs_options *opts, inf_error *err);
/* Wipes and frees the cache. NULL is fine. */
void kvs_close(kvs_store *s);

/* Loads the committed state of `session_id` into a fresh *out (whose
 * max_len is max_len) and its step into *last_step (may be NULL).
 * INF_E_NOTFOUND: no such session. INF_E_AUTH: wrong key or any stored
 * byte altered (nothing is modified). INF_E_SHAPE: stored layers/kv_dim
 * differ from cfg. INF_E_RANGE: more positions than max_len or over
 * max_session_bytes. INF_E_FORMAT: a segment the manifest names is gone
 * (deleted by hand). On failure *out is zeroed (inf_kv_free-safe). */
inf_status kvs_load(kvs_store *s, const char *session_id, const uint8_t key[KVS_KEY_LEN],
                    const inf_model_config *cfg, int max_len, inf_kv *out, uint64_t *last_step,
                    inf_error *err);

/* kvs_load without the copy, for the request path: on a cache hit *out
 * BORROWS the cache's arrays (O(1) instead of O(context) per request).
 * Every kv from kvs_checkout (hit or not) must be handed back with
 * kvs_release, never inf_kv_free. Between the two the caller may truncate,
 * extend and kvs_commit it as usual; a commit then records the state
 * without copying rows, and kvs_release returns the arrays to the cache as
 * that state. Released without a successful commit, the cache entry is
 * dropped (the next load reads the disk). Call kvs_release before kvs_close. */
inf_status kvs_checkout(kvs_store *s, const char *session_id, const uint8_t key[KVS_KEY_LEN],
                        const inf_model_config *cfg, int max_len, inf_kv *out, uint64_t *last_step,
                        inf_error *err);
/* Ends a kvs_checkout: gives the arrays back to the cache or wipes
 * (OPENSSL_cleanse) and frees them. Leaves *kv zeroed. Also accepts a kv
 * that did not come from the store (a new session's): wiped and freed. */
void kvs_release(kvs_store *s, const char *session_id, inf_kv *kv);

/* Makes kv's state [0, kv->len) durable as the session's state, with
 * last_step = step. Steps only grow: when the stored step is already >= step
 * (a late or replayed request, possibly on another worker) the commit is
 * refused with INF_E_STALE and nothing is written, checked under the
 * session's file lock. kv is what the caller loaded (or started empty),
 * truncated to `from` and extended: only [from, len) is new. Atomic with
 * respect to crashes and to other processes (see above). A wrong key for an
 * existing session: INF_E_AUTH and nothing is written. An INF_E_IO after the
 * commit point (a failing directory fsync) leaves the old or the new state,
 * as a crash would. */
inf_status kvs_commit(kvs_store *s, const char *session_id, const uint8_t key[KVS_KEY_LEN],
                      const inf_kv *kv, int from, uint64_t step, inf_error *err);

/* Deletes the session (waits for a commit in progress). Absent: INF_OK. */
inf_status kvs_forget(kvs_store *s, const char *session_id, inf_error *err);

/* Removes sessions whose last commit is older than ttl_seconds at `now`
 * (and dead .tmp files of live sessions). *removed (may be NULL) counts
 * removed sessions. Sessions being committed are skipped. */
inf_status kvs_gc(kvs_store *s, time_t now, int *removed, inf_error *err);

typedef struct {
    uint64_t cache_hits, cache_misses; /* kvs_load, kvs_checkout */
    uint64_t lends; /* kvs_checkout hits served without a copy */
    uint64_t manifests_read, segments_read, segment_bytes_read;
    uint64_t segments_written, segment_bytes_written;
    uint64_t full_writes; /* commits that wrote all of [0, len) (compaction or unknown base) */
} kvs_stats;

void kvs_get_stats(kvs_store *s, kvs_stats *out);

/* Testing only: from now on the calling process SIGKILLs itself at the
 * n-th file-system step (each write, fsync, rename, unlink) of this module;
 * 0 turns it off. Process-wide; never call it in the worker. */
void kvs_debug_crash_at(long n);

#endif
