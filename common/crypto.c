/* crypto.c — see crypto.h. OpenSSL 3 EVP only. */
#include "crypto.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "base64.h"
#include "mapfile.h"

#define FPR_DOMAIN "infemeral worker key v1"

/* ---- small helpers ------------------------------------------------------------ */

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void put_be64(uint8_t *p, uint64_t v) {
    put_be32(p, (uint32_t)(v >> 32));
    put_be32(p + 4, (uint32_t)v);
}

/* ---- key pairs ------------------------------------------------------------------ */

void keys_wipe(keys_pair *kp) {
    if (kp) OPENSSL_cleanse(kp, sizeof *kp);
}

/* Fills kp from an EVP X25519 key holding a private key. */
static inf_status pair_from_pkey(EVP_PKEY *pk, keys_pair *kp, inf_error *err) {
    size_t lp = KEYS_BYTES, lq = KEYS_BYTES;
    if (EVP_PKEY_get_raw_private_key(pk, kp->priv, &lp) != 1 || lp != KEYS_BYTES ||
        EVP_PKEY_get_raw_public_key(pk, kp->pub.b, &lq) != 1 || lq != KEYS_BYTES) {
        keys_wipe(kp);
        return inf_fail(err, INF_E_FORMAT, "X25519: cannot export the raw key bytes");
    }
    return INF_OK;
}

inf_status keys_generate(keys_pair *kp, inf_error *err) {
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_X25519, NULL);
    EVP_PKEY *pk = NULL;
    inf_status st;
    if (!ctx || EVP_PKEY_keygen_init(ctx) != 1 || EVP_PKEY_keygen(ctx, &pk) != 1)
        st = inf_fail(err, INF_E_NOMEM, "X25519: key generation failed (OpenSSL)");
    else
        st = pair_from_pkey(pk, kp, err);
    EVP_PKEY_free(pk);
    EVP_PKEY_CTX_free(ctx);
    return st;
}

inf_status keys_from_raw_private(const uint8_t priv[KEYS_BYTES], keys_pair *kp, inf_error *err) {
    EVP_PKEY *pk = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, priv, KEYS_BYTES);
    if (!pk) return inf_fail(err, INF_E_FORMAT, "X25519: the private key is not usable (OpenSSL refused it)");
    inf_status st = pair_from_pkey(pk, kp, err);
    EVP_PKEY_free(pk);
    return st;
}

/* Decodes exactly 32 bytes from 44 base64 characters followed by at most
 * one "\n" (text[0..len)). */
static inf_status decode_key_text(const char *text, size_t len, const char *what, uint8_t out[KEYS_BYTES],
                                  inf_error *err) {
    if (len == KEYS_B64_LEN + 1 && text[KEYS_B64_LEN] == '\n') len = KEYS_B64_LEN;
    if (len != KEYS_B64_LEN)
        return inf_fail(err, INF_E_FORMAT,
                        "%s: not an X25519 key (expected exactly %d base64 characters for 32 bytes and an "
                        "optional newline, found %zu%s characters)",
                        what, KEYS_B64_LEN, len, len > KEYS_B64_LEN + 1 ? " or more" : "");
    size_t got = 0;
    inf_status st = b64_decode(text, len, out, KEYS_BYTES, &got, what, err);
    if (st == INF_OK && got != KEYS_BYTES)
        st = inf_fail(err, INF_E_FORMAT, "%s: the base64 key decodes to %zu bytes, expected 32", what, got);
    if (st != INF_OK) OPENSSL_cleanse(out, KEYS_BYTES);
    return st;
}

inf_status keys_from_base64_private(const char *text, const char *what, keys_pair *kp, inf_error *err) {
    const char *w = what ? what : "private key";
    uint8_t raw[KEYS_BYTES];
    /* strnlen: never read far into something that is not a key. */
    inf_status st = decode_key_text(text, strnlen(text, KEYS_B64_LEN + 2), w, raw, err);
    if (st == INF_OK) st = keys_from_raw_private(raw, kp, err);
    if (st != INF_OK) keys_wipe(kp);
    OPENSSL_cleanse(raw, sizeof raw);
    return st;
}

inf_status keys_public_from_base64(const char *text, keys_public *pub, inf_error *err) {
    return decode_key_text(text, strnlen(text, KEYS_B64_LEN + 2), "public key", pub->b, err);
}

void keys_public_base64(const keys_public *pub, char out[KEYS_B64_LEN + 1]) { b64_encode(pub->b, KEYS_BYTES, out); }

/* Reads at most cap bytes of a small key file; *len = bytes read (cap
 * means "cap or more"). If secret, refuses group/other permissions. */
static inf_status read_key_file(const char *path, bool secret, char *buf, size_t cap, size_t *len, inf_error *err) {
    const char *kind = secret ? "private key file" : "public key file";
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return inf_fail(err, INF_E_IO, "%s: cannot open the %s: %s", path, kind, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return inf_fail(err, INF_E_IO, "%s: cannot stat the %s: %s", path, kind, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return inf_fail(err, INF_E_FORMAT, "%s: the %s is not a regular file", path, kind);
    }
    if (secret && (sb.st_mode & 077)) {
        close(fd);
        return inf_fail(err, INF_E_ARG,
                        "%s: the worker's private key file is accessible by group or others (mode %04o); it "
                        "is a secret — run `chmod 600 %s` and try again",
                        path, (unsigned)(sb.st_mode & 07777), path);
    }
    size_t got = 0;
    while (got < cap) {
        ssize_t r = read(fd, buf + got, cap - got);
        if (r < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            close(fd);
            OPENSSL_cleanse(buf, cap);
            return inf_fail(err, INF_E_IO, "%s: cannot read the %s: %s", path, kind, strerror(e));
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    close(fd);
    *len = got;
    return INF_OK;
}

inf_status keys_read_private(const char *path, keys_pair *kp, inf_error *err) {
    char buf[KEYS_B64_LEN + 2]; /* one more than the longest valid file */
    uint8_t raw[KEYS_BYTES];
    size_t len = 0;
    inf_status st = read_key_file(path, true, buf, sizeof buf, &len, err);
    if (st == INF_OK) st = decode_key_text(buf, len, path, raw, err);
    if (st == INF_OK) st = keys_from_raw_private(raw, kp, err);
    if (st != INF_OK) keys_wipe(kp);
    OPENSSL_cleanse(buf, sizeof buf);
    OPENSSL_cleanse(raw, sizeof raw);
    return st;
}

inf_status keys_read_public(const char *path, keys_public *pub, inf_error *err) {
    char buf[KEYS_B64_LEN + 2];
    size_t len = 0;
    inf_status st = read_key_file(path, false, buf, sizeof buf, &len, err);
    if (st == INF_OK) st = decode_key_text(buf, len, path, pub->b, err);
    return st;
}

inf_status keys_worker_from_env(keys_pair *kp, inf_error *err) {
    const char *text = getenv(KEYS_ENV_KEY);
    if (text && *text) return keys_from_base64_private(text, KEYS_ENV_KEY, kp, err);
    const char *file = getenv(KEYS_ENV_KEY_FILE);
    if (file && *file) {
        inf_status st = keys_read_private(file, kp, err);
        if (st != INF_OK) return inf_wrap(err, st, "%s", KEYS_ENV_KEY_FILE);
        return st;
    }
    return inf_fail(err, INF_E_NOTFOUND,
                    "no worker key: set %s to the base64 private key or %s to the path of a worker.key "
                    "file (make one with `infemeral keygen --out DIR`)",
                    KEYS_ENV_KEY, KEYS_ENV_KEY_FILE);
}

inf_status keys_fingerprint(const keys_public *pub, char out[KEYS_FPR_LEN], inf_error *err) {
    static const char hexd[] = "0123456789abcdef";
    uint8_t msg[sizeof FPR_DOMAIN - 1 + KEYS_BYTES], md[32];
    memcpy(msg, FPR_DOMAIN, sizeof FPR_DOMAIN - 1);
    memcpy(msg + sizeof FPR_DOMAIN - 1, pub->b, KEYS_BYTES);
    inf_status st = seal_sha256(msg, sizeof msg, md, err);
    if (st != INF_OK) return st;
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hexd[md[i] >> 4];
        out[2 * i + 1] = hexd[md[i] & 15];
    }
    out[32] = '\0';
    return INF_OK;
}

/* ---- key files ----------------------------------------------------------------- */

inf_status keys_write(const char *dir, const keys_pair *kp, inf_error *err) {
    char kpath[PATH_MAX], ppath[PATH_MAX], tpath[PATH_MAX];
    if ((size_t)snprintf(kpath, sizeof kpath, "%s/worker.key", dir) >= sizeof kpath ||
        (size_t)snprintf(ppath, sizeof ppath, "%s/worker.pub", dir) >= sizeof ppath ||
        (size_t)snprintf(tpath, sizeof tpath, "%s/.worker.pub.%ld.tmp", dir, (long)getpid()) >= sizeof tpath)
        return inf_fail(err, INF_E_ARG, "%s: directory path too long", dir);

    /* The private key: created exclusively, 0600 from the first byte on. */
    int fd = open(kpath, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        if (errno == EEXIST)
            return inf_fail(err, INF_E_IO,
                            "%s: already exists; a worker key is never overwritten (clients have pinned its "
                            "public key) — remove it yourself or choose another --out directory",
                            kpath);
        return inf_fail(err, INF_E_IO, "%s: cannot create the private key file: %s", kpath, strerror(errno));
    }
    char text[KEYS_B64_LEN + 2];
    b64_encode(kp->priv, KEYS_BYTES, text);
    text[KEYS_B64_LEN] = '\n';
    int bad = fchmod(fd, 0600) != 0 || inf_write_all(fd, text, KEYS_B64_LEN + 1) != 0 || fsync(fd) != 0;
    int e = errno;
    OPENSSL_cleanse(text, sizeof text);
    if (close(fd) != 0 && !bad) {
        bad = 1;
        e = errno;
    }
    if (bad) {
        unlink(kpath);
        return inf_fail(err, INF_E_IO, "%s: cannot write the private key file: %s", kpath, strerror(e));
    }

    /* The public key: temp file + rename, 0644. */
    b64_encode(kp->pub.b, KEYS_BYTES, text);
    text[KEYS_B64_LEN] = '\n';
    fd = open(tpath, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    bad = fd < 0;
    if (!bad) {
        bad = fchmod(fd, 0644) != 0 || inf_write_all(fd, text, KEYS_B64_LEN + 1) != 0 || fsync(fd) != 0;
        e = errno;
        if (close(fd) != 0 && !bad) {
            bad = 1;
            e = errno;
        }
        if (!bad && rename(tpath, ppath) != 0) {
            bad = 1;
            e = errno;
        }
        if (bad) unlink(tpath);
    } else {
        e = errno;
    }
    if (bad) {
        unlink(kpath);
        (void)inf_fsync_dir(dir);
        return inf_fail(err, INF_E_IO, "%s: cannot write the public key file: %s (the new worker.key was removed)",
                        ppath, strerror(e));
    }
    (void)inf_fsync_dir(dir);
    return INF_OK;
}

/* ---- session keys -------------------------------------------------------------- */

void seal_keys_wipe(seal_keys *keys) {
    if (keys) OPENSSL_cleanse(keys, sizeof *keys);
}

inf_status seal_sid_generate(uint8_t sid[SEAL_SID_BYTES], inf_error *err) {
    if (RAND_bytes(sid, SEAL_SID_BYTES) != 1)
        return inf_fail(err, INF_E_IO, "RAND_bytes failed: no session id could be drawn");
    return INF_OK;
}

void seal_sid_hex(const uint8_t sid[SEAL_SID_BYTES], char out[SEAL_SID_HEX + 1]) {
    static const char hexd[] = "0123456789abcdef";
    for (int i = 0; i < SEAL_SID_BYTES; i++) {
        out[2 * i] = hexd[sid[i] >> 4];
        out[2 * i + 1] = hexd[sid[i] & 15];
    }
    out[SEAL_SID_HEX] = '\0';
}

static int lowhex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

inf_status seal_sid_parse(const char *hex, uint8_t sid[SEAL_SID_BYTES], inf_error *err) {
    size_t len = strnlen(hex, SEAL_SID_HEX + 1);
    if (len != SEAL_SID_HEX)
        return inf_fail(err, INF_E_FORMAT, "session: expected exactly 32 lowercase hex characters, found %zu%s",
                        len, len > SEAL_SID_HEX ? " or more" : "");
    for (int i = 0; i < SEAL_SID_BYTES; i++) {
        int hi = lowhex(hex[2 * i]), lo = lowhex(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return inf_fail(err, INF_E_FORMAT, "session: character %d (0x%02x) is not lowercase hex",
                            hi < 0 ? 2 * i : 2 * i + 1, (unsigned char)hex[hi < 0 ? 2 * i : 2 * i + 1]);
        sid[i] = (uint8_t)(hi << 4 | lo);
    }
    return INF_OK;
}

static inf_status hkdf32(const uint8_t *ikm, size_t ikm_len, const uint8_t *salt, size_t salt_len,
                         const char *info, uint8_t out[32], inf_error *err) {
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    EVP_KDF_free(kdf);
    if (!kctx) return inf_fail(err, INF_E_UNSUPPORTED, "HKDF is not available in this OpenSSL");
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)ikm, ikm_len),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, salt_len),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, strlen(info)),
        OSSL_PARAM_construct_end(),
    };
    int ok = EVP_KDF_derive(kctx, out, 32, params) == 1;
    EVP_KDF_CTX_free(kctx);
    if (!ok) return inf_fail(err, INF_E_UNSUPPORTED, "HKDF-SHA256 failed (OpenSSL)");
    return INF_OK;
}

/* shared = X25519(priv, peer); both keys from the shared secret. */
static inf_status derive(const uint8_t priv[KEYS_BYTES], const keys_public *peer, const char *peer_name,
                         const uint8_t sid[SEAL_SID_BYTES], seal_keys *keys, inf_error *err) {
    EVP_PKEY *me = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, priv, KEYS_BYTES);
    EVP_PKEY *them = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, peer->b, KEYS_BYTES);
    EVP_PKEY_CTX *ctx = me ? EVP_PKEY_CTX_new(me, NULL) : NULL;
    uint8_t shared[KEYS_BYTES];
    size_t slen = sizeof shared;
    inf_status st = INF_OK;
    if (!me || !them || !ctx) {
        st = inf_fail(err, INF_E_FORMAT, "X25519: cannot load the keys (OpenSSL)");
    } else if (EVP_PKEY_derive_init(ctx) != 1 || EVP_PKEY_derive_set_peer(ctx, them) != 1 ||
               EVP_PKEY_derive(ctx, shared, &slen) != 1 || slen != KEYS_BYTES) {
        /* OpenSSL itself refuses an all-zero result (a low-order point). */
        st = inf_fail(err, INF_E_AUTH,
                      "X25519 agreement with the %s failed: the public key is invalid or of low order "
                      "(all-zero shared secret)",
                      peer_name);
    } else {
        uint8_t acc = 0;
        for (size_t i = 0; i < sizeof shared; i++) acc |= shared[i];
        if (acc == 0)
            st = inf_fail(err, INF_E_AUTH,
                          "X25519 agreement with the %s gave an all-zero shared secret (a low-order public "
                          "key); refused",
                          peer_name);
    }
    if (st == INF_OK) st = hkdf32(shared, sizeof shared, sid, SEAL_SID_BYTES, SEAL_INFO_C2S, keys->c2s, err);
    if (st == INF_OK) st = hkdf32(shared, sizeof shared, sid, SEAL_SID_BYTES, SEAL_INFO_S2C, keys->s2c, err);
    if (st != INF_OK) seal_keys_wipe(keys);
    OPENSSL_cleanse(shared, sizeof shared);
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(them);
    EVP_PKEY_free(me);
    return st;
}

inf_status seal_derive_client(const keys_pair *eph, const keys_public *worker_pub,
                              const uint8_t sid[SEAL_SID_BYTES], seal_keys *keys, inf_error *err) {
    return derive(eph->priv, worker_pub, "worker's public key", sid, keys, err);
}

inf_status seal_derive_worker(const keys_pair *worker, const keys_public *eph_pub,
                              const uint8_t sid[SEAL_SID_BYTES], seal_keys *keys, inf_error *err) {
    return derive(worker->priv, eph_pub, "client's ephemeral key (epk)", sid, keys, err);
}

/* ---- AEAD ------------------------------------------------------------------------ */

void seal_nonce(uint32_t dir, uint64_t step, uint8_t nonce[SEAL_NONCE_BYTES]) {
    put_be32(nonce, dir);
    put_be64(nonce + 4, step);
}

static const uint8_t *dir_key(const seal_keys *keys, uint32_t dir) {
    if (dir == SEAL_DIR_C2S) return keys->c2s;
    if (dir == SEAL_DIR_S2C) return keys->s2c;
    return NULL;
}

/* EVP's lengths are int: feed big buffers in pieces. */
#define EVP_CHUNK ((size_t)1 << 30)

inf_status seal_encrypt(const seal_keys *keys, uint32_t dir, uint64_t step, const void *aad, size_t aad_len,
                        const void *pt, size_t n, uint8_t *out, inf_error *err) {
    const uint8_t *key = dir_key(keys, dir);
    if (!key) return inf_fail(err, INF_E_ARG, "seal: direction %u is neither 1 (c2s) nor 2 (s2c)", dir);
    uint8_t nonce[SEAL_NONCE_BYTES];
    seal_nonce(dir, step, nonce);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int ok = ctx && EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
             EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, SEAL_NONCE_BYTES, NULL) == 1 &&
             EVP_EncryptInit_ex(ctx, NULL, NULL, key, nonce) == 1;
    int outl = 0;
    for (size_t off = 0; ok && off < aad_len; off += EVP_CHUNK) {
        size_t c = aad_len - off < EVP_CHUNK ? aad_len - off : EVP_CHUNK;
        ok = EVP_EncryptUpdate(ctx, NULL, &outl, (const uint8_t *)aad + off, (int)c) == 1;
    }
    size_t done = 0;
    for (size_t off = 0; ok && off < n; off += EVP_CHUNK) {
        size_t c = n - off < EVP_CHUNK ? n - off : EVP_CHUNK;
        ok = EVP_EncryptUpdate(ctx, out + done, &outl, (const uint8_t *)pt + off, (int)c) == 1;
        if (ok) done += (size_t)outl;
    }
    if (ok) {
        ok = EVP_EncryptFinal_ex(ctx, out + done, &outl) == 1;
        if (ok) done += (size_t)outl;
    }
    ok = ok && done == n && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, SEAL_TAG_BYTES, out + n) == 1;
    EVP_CIPHER_CTX_free(ctx);
    if (!ok) {
        OPENSSL_cleanse(out, n);
        return inf_fail(err, INF_E_NOMEM, "seal: AES-256-GCM encryption failed (OpenSSL)");
    }
    return INF_OK;
}

inf_status seal_decrypt(const seal_keys *keys, uint32_t dir, uint64_t step, const void *aad, size_t aad_len,
                        const uint8_t *in, size_t in_len, uint8_t *out, const char *what, inf_error *err) {
    const char *w = what ? what : "sealed data";
    const uint8_t *key = dir_key(keys, dir);
    if (!key) return inf_fail(err, INF_E_ARG, "%s: direction %u is neither 1 (c2s) nor 2 (s2c)", w, dir);
    if (in_len < SEAL_TAG_BYTES)
        return inf_fail(err, INF_E_FORMAT, "%s: %zu bytes is shorter than the 16-byte AES-GCM tag", w, in_len);
    size_t n = in_len - SEAL_TAG_BYTES;
    uint8_t nonce[SEAL_NONCE_BYTES], tag[SEAL_TAG_BYTES];
    seal_nonce(dir, step, nonce);
    memcpy(tag, in + n, SEAL_TAG_BYTES); /* before out (which may alias in) is written */
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int ok = ctx && EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
             EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, SEAL_NONCE_BYTES, NULL) == 1 &&
             EVP_DecryptInit_ex(ctx, NULL, NULL, key, nonce) == 1;
    int setup_ok = ok;
    int outl = 0;
    for (size_t off = 0; ok && off < aad_len; off += EVP_CHUNK) {
        size_t c = aad_len - off < EVP_CHUNK ? aad_len - off : EVP_CHUNK;
        ok = EVP_DecryptUpdate(ctx, NULL, &outl, (const uint8_t *)aad + off, (int)c) == 1;
    }
    size_t done = 0;
    for (size_t off = 0; ok && off < n; off += EVP_CHUNK) {
        size_t c = n - off < EVP_CHUNK ? n - off : EVP_CHUNK;
        ok = EVP_DecryptUpdate(ctx, out + done, &outl, in + off, (int)c) == 1;
        if (ok) done += (size_t)outl;
    }
    ok = ok && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, SEAL_TAG_BYTES, tag) == 1;
    int auth = ok && EVP_DecryptFinal_ex(ctx, out + done, &outl) == 1;
    EVP_CIPHER_CTX_free(ctx);
    if (!auth) {
        OPENSSL_cleanse(out, n);
        if (!setup_ok) return inf_fail(err, INF_E_NOMEM, "%s: AES-256-GCM setup failed (OpenSSL)", w);
        return inf_fail(err, INF_E_AUTH,
                        "%s: authentication failed (AES-256-GCM tag mismatch): the message was sealed for a "
                        "different key (wrong worker key, or a different session or client key), or its "
                        "payload, header or step was changed or replayed in transit",
                        w);
    }
    return INF_OK;
}

inf_status seal_sha256(const void *data, size_t n, uint8_t out[32], inf_error *err) {
    unsigned int len = 0;
    if (EVP_Digest(data, n, out, &len, EVP_sha256(), NULL) != 1 || len != 32)
        return inf_fail(err, INF_E_NOMEM, "SHA-256 failed (OpenSSL)");
    return INF_OK;
}
