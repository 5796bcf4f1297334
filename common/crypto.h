/* crypto.h — the worker's key pair, per-session keys and the AEAD of the
 * wire (DESIGN.md, "Crypto"; the byte-level spec is docs/wire.md).
 *
 *   keys_   the worker's static X25519 key pair: generate, write, read (key
 *           files and the INFEMERAL_WORKER_KEY / _FILE environment), and
 *           the public key's fingerprint. The client pins the public key.
 *   seal_   per session: X25519(ephemeral, worker) -> HKDF-SHA256
 *           (salt = 16-byte session id) -> one AES-256 key per direction;
 *           AES-256-GCM with nonce = be32(direction) || be64(step) and a
 *           16-byte tag appended to the ciphertext.
 *
 * Everything goes through OpenSSL 3 EVP (X25519, HKDF, SHA-256, AES-GCM,
 * RAND_bytes); nothing here is home-made crypto.
 *
 * Nonce discipline (why GCM is safe here): a key is used by one direction of
 * one session only (the session id salts HKDF, the direction is the HKDF
 * info). Within it the nonce is the step. The client gives every request it
 * seals a new step (a retry too); the worker refuses a step at or below the
 * last one it committed for the session, and seals at most one reply per
 * step. So no (key, nonce) pair is ever used for two different messages.
 *
 * Secrets: private keys and session keys live in plain structs so callers
 * own them on the stack; wipe them with keys_wipe / seal_keys_wipe
 * (OPENSSL_cleanse). Nothing here logs or prints, and no error message ever
 * contains key bytes or file contents.
 *
 * Thread-safety: no shared state; every function may run concurrently on
 * different arguments.
 */
#ifndef INF_CRYPTO_H
#define INF_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define KEYS_BYTES 32        /* raw X25519 private or public key */
#define KEYS_B64_LEN 44      /* base64 of 32 bytes, without NUL */
#define KEYS_FPR_LEN 33      /* fingerprint: 32 hex characters + NUL */
#define KEYS_FILE_MAX 4096   /* key files longer than this are refused unread */

#define KEYS_ENV_KEY "INFEMERAL_WORKER_KEY"
#define KEYS_ENV_KEY_FILE "INFEMERAL_WORKER_KEY_FILE"

typedef struct {
    uint8_t b[KEYS_BYTES];
} keys_public;

/* A key pair; pub is always the public key of priv. */
typedef struct {
    uint8_t priv[KEYS_BYTES];
    keys_public pub;
} keys_pair;

/* ---- the worker's key pair ------------------------------------------------- */

/* A fresh X25519 key pair (EVP_PKEY_keygen). Also used for the client's
 * per-session ephemeral key. */
inf_status keys_generate(keys_pair *kp, inf_error *err);

/* The pair of a raw private key (computes the public half). */
inf_status keys_from_raw_private(const uint8_t priv[KEYS_BYTES], keys_pair *kp, inf_error *err);

/* OPENSSL_cleanse on the whole pair. */
void keys_wipe(keys_pair *kp);

/* Writes DIR/worker.key (base64 of the 32 raw private bytes + "\n";
 * O_CREAT|O_EXCL, mode exactly 0600, fsync'ed) and then DIR/worker.pub
 * (base64 of the public key + "\n", mode 0644, written to a temporary file
 * and renamed, fsync'ed). An existing worker.key is refused — a worker key
 * is never overwritten (every client pinned its public key). If writing the
 * public key fails, the new worker.key is removed again, so a retry starts
 * clean. DIR must exist. */
inf_status keys_write(const char *dir, const keys_pair *kp, inf_error *err);

/* Reads a private key file strictly: exactly 44 base64 characters (32 bytes)
 * and an optional "\n". Refuses a file that is not regular or that grants any
 * permission to group or others (the message says to run chmod 600). */
inf_status keys_read_private(const char *path, keys_pair *kp, inf_error *err);

/* The same format from text (e.g. an environment variable): 44 base64
 * characters, optionally followed by one "\n". `what` names the source in
 * messages (NULL: "private key"). */
inf_status keys_from_base64_private(const char *text, const char *what, keys_pair *kp, inf_error *err);

/* The worker's key from the environment: INFEMERAL_WORKER_KEY (the base64
 * text) if set and non-empty, else the file named by
 * INFEMERAL_WORKER_KEY_FILE (read with keys_read_private). Neither set ->
 * INF_E_NOTFOUND naming both variables and `infemeral keygen`. */
inf_status keys_worker_from_env(keys_pair *kp, inf_error *err);

/* Reads a public key file (worker.pub; what the client pins): 44 base64
 * characters (32 bytes) and an optional "\n". No permission check. */
inf_status keys_read_public(const char *path, keys_public *pub, inf_error *err);
/* The same from text. */
inf_status keys_public_from_base64(const char *text, keys_public *pub, inf_error *err);

/* Base64 of the public key into out[KEYS_B64_LEN + 1]. */
void keys_public_base64(const keys_public *pub, char out[KEYS_B64_LEN + 1]);

/* A short public identifier of the worker key, to compare by eye:
 * lowercase hex of the first 16 bytes of
 *   SHA-256("infemeral worker key v1" || pub)
 * (the domain string without its NUL). */
inf_status keys_fingerprint(const keys_public *pub, char out[KEYS_FPR_LEN], inf_error *err);

/* ---- session keys ---------------------------------------------------------- */

#define SEAL_SID_BYTES 16
#define SEAL_SID_HEX 32
#define SEAL_KEY_BYTES 32
#define SEAL_NONCE_BYTES 12
#define SEAL_TAG_BYTES 16

/* Nonce directions (the first 4 nonce bytes, big-endian). */
#define SEAL_DIR_C2S 1u /* client -> worker (requests) */
#define SEAL_DIR_S2C 2u /* worker -> client (replies) */

#define SEAL_INFO_C2S "infemeral v1 c2s"
#define SEAL_INFO_S2C "infemeral v1 s2c"

/* The two AES-256 keys of one session: c2s seals requests, s2c replies. */
typedef struct {
    uint8_t c2s[SEAL_KEY_BYTES];
    uint8_t s2c[SEAL_KEY_BYTES];
} seal_keys;

/* 16 fresh random bytes (RAND_bytes). */
inf_status seal_sid_generate(uint8_t sid[SEAL_SID_BYTES], inf_error *err);
/* Lowercase hex into out[SEAL_SID_HEX + 1]. */
void seal_sid_hex(const uint8_t sid[SEAL_SID_BYTES], char out[SEAL_SID_HEX + 1]);
/* Parses exactly 32 lowercase hex characters (NUL-terminated). */
inf_status seal_sid_parse(const char *hex, uint8_t sid[SEAL_SID_BYTES], inf_error *err);

/* Client side: shared = X25519(eph.priv, worker_pub); worker side: shared =
 * X25519(worker.priv, eph_pub) — the same 32 bytes. Then
 *   c2s = HKDF-SHA256(ikm = shared, salt = sid, info = "infemeral v1 c2s", 32)
 *   s2c = HKDF-SHA256(ikm = shared, salt = sid, info = "infemeral v1 s2c", 32)
 * An all-zero shared secret (a low-order public key) is refused with
 * INF_E_AUTH. The shared secret is wiped before returning. */
inf_status seal_derive_client(const keys_pair *eph, const keys_public *worker_pub,
                              const uint8_t sid[SEAL_SID_BYTES], seal_keys *keys, inf_error *err);
inf_status seal_derive_worker(const keys_pair *worker, const keys_public *eph_pub,
                              const uint8_t sid[SEAL_SID_BYTES], seal_keys *keys, inf_error *err);
void seal_keys_wipe(seal_keys *keys);

/* nonce = be32(dir) || be64(step). */
void seal_nonce(uint32_t dir, uint64_t step, uint8_t nonce[SEAL_NONCE_BYTES]);

/* AES-256-GCM under the key of `dir` (SEAL_DIR_C2S -> keys->c2s, SEAL_DIR_S2C
 * -> keys->s2c) with nonce seal_nonce(dir, step). out receives n + 16 bytes:
 * the ciphertext, then the tag. pt and out may be the same buffer. */
inf_status seal_encrypt(const seal_keys *keys, uint32_t dir, uint64_t step, const void *aad, size_t aad_len,
                        const void *pt, size_t n, uint8_t *out, inf_error *err);

/* The inverse: in = ciphertext || tag (in_len >= 16), out receives
 * in_len - 16 bytes. Any mismatch (wrong key, direction or step, a changed
 * byte of ciphertext, tag or AAD) gives INF_E_AUTH with the message
 * "<what>: authentication failed ..." listing the possible causes; out is
 * wiped then. `what` names the message in errors (NULL: "sealed data"). */
inf_status seal_decrypt(const seal_keys *keys, uint32_t dir, uint64_t step, const void *aad, size_t aad_len,
                        const uint8_t *in, size_t in_len, uint8_t *out, const char *what, inf_error *err);

/* SHA-256 (EVP_Digest). */
inf_status seal_sha256(const void *data, size_t n, uint8_t out[32], inf_error *err);

#endif
