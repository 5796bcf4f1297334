/* test_crypto.c — base64, the worker's key pair and files, session keys and
 * the AEAD of the wire (common/base64.h, common/crypto.h).
 *
 * If this fails, a user would see a client and worker that cannot talk
 * (keys derived differently on the two sides), or worse, a wire that only
 * looks secure: a tampered or replayed message accepted, a nonce reused, a
 * private key file left readable by other users or silently overwritten,
 * or a key accepted from malformed text.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "base64.h"
#include "crypto.h"
#include "keygen.h"
#include "testutil.h"

static void unhex(const char *h, uint8_t *out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        cr_assert_eq(sscanf(h + 2 * i, "%2x", &v), 1);
        out[i] = (uint8_t)v;
    }
}

static void sid_n(uint8_t sid[SEAL_SID_BYTES], int k) {
    for (int i = 0; i < SEAL_SID_BYTES; i++) sid[i] = (uint8_t)(i + k);
}

/* A client/worker pair of session keys for the same session. */
typedef struct {
    keys_pair worker, eph;
    uint8_t sid[SEAL_SID_BYTES];
    seal_keys client, server;
} session;

static void session_new(session *s) {
    inf_error err;
    cr_assert_eq(keys_generate(&s->worker, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(keys_generate(&s->eph, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(seal_sid_generate(s->sid, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(seal_derive_client(&s->eph, &s->worker.pub, s->sid, &s->client, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(seal_derive_worker(&s->worker, &s->eph.pub, s->sid, &s->server, &err), INF_OK, "%s", err.msg);
}

/* ---- base64 ----------------------------------------------------------------- */

static const char *const RFC4648[][2] = {
    {"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},         {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"},
};

Test(base64, rfc4648_vectors_encode_and_decode) {
    for (size_t i = 0; i < sizeof RFC4648 / sizeof RFC4648[0]; i++) {
        const char *raw = RFC4648[i][0], *enc = RFC4648[i][1];
        char out[16];
        cr_assert_eq(b64_encoded_len(strlen(raw)), strlen(enc));
        b64_encode(raw, strlen(raw), out);
        cr_assert_str_eq(out, enc);
        uint8_t dec[16];
        size_t n = 99;
        inf_error err;
        cr_assert_eq(b64_decode(enc, strlen(enc), dec, sizeof dec, &n, "t", &err), INF_OK, "%s: %s", enc, err.msg);
        cr_assert_eq(n, strlen(raw));
        cr_assert_eq(memcmp(dec, raw, n), 0);
        char *a = b64_encode_alloc(raw, strlen(raw));
        cr_assert_str_eq(a, enc);
        free(a);
    }
}

Test(base64, all_byte_values_and_lengths_round_trip) {
    uint8_t raw[300], dec[300];
    for (int i = 0; i < 300; i++) raw[i] = (uint8_t)(i * 131 + 7);
    for (size_t len = 0; len <= 300; len++) {
        char enc[404];
        b64_encode(raw, len, enc);
        size_t n = 0;
        inf_error err;
        cr_assert_eq(b64_decode(enc, strlen(enc), dec, len, &n, NULL, &err), INF_OK, "len %zu: %s", len, err.msg);
        cr_assert_eq(n, len);
        cr_assert_eq(memcmp(dec, raw, len), 0);
        cr_assert_leq(n, b64_decoded_max(strlen(enc)));
    }
}

Test(base64, strict_decoder_rejects) {
    static const char *const bad[] = {
        "Zg=",      /* length not a multiple of 4 */
        "Zg",       /* missing padding */
        "Z===",     /* three pads */
        "====",     /* only padding */
        "Zh==",     /* nonzero unused bits */
        "Zm9=",     /* nonzero unused bits (one pad) */
        "Zg==Zg==", /* padding in the middle */
        "=Zg=",     /* leading padding */
        "Zm9v\n",   /* newline */
        "Zm 9v   ", /* space */
        "Zm-v",     /* url-safe alphabet */
        "Zm_v",     /* url-safe alphabet */
        "Zm9\x80",  /* high byte */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t out[16];
        size_t n;
        inf_error err = {{0}};
        inf_status st = b64_decode(bad[i], strlen(bad[i]), out, sizeof out, &n, "field", &err);
        cr_assert_eq(st, INF_E_FORMAT, "case %zu accepted (st %d)", i, st);
        cr_assert(strstr(err.msg, "field:") == err.msg, "message names the field: %s", err.msg);
    }
    /* Embedded NUL: the length, not the NUL, bounds the text. */
    uint8_t out[8];
    size_t n;
    inf_error err;
    cr_assert_eq(b64_decode("Zm\0v", 4, out, sizeof out, &n, NULL, &err), INF_E_FORMAT);
}

Test(base64, output_is_bounded) {
    uint8_t out[5];
    size_t n;
    inf_error err;
    cr_assert_eq(b64_decode("Zm9vYmFy", 8, out, 5, &n, "payload", &err), INF_E_RANGE);
    cr_assert(strstr(err.msg, "payload") && strstr(err.msg, "6 bytes"), "%s", err.msg);
    cr_assert_eq(b64_decode("Zm9vYmE=", 8, out, 5, &n, "payload", &err), INF_OK, "%s", err.msg);
    cr_assert_eq(n, 5);
}

/* ---- X25519 + HKDF ------------------------------------------------------------ */

/* RFC 7748, section 6.1. */
#define A_PRIV "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
#define A_PUB "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
#define B_PRIV "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"
#define B_PUB "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
/* HKDF-SHA256(ikm = K of RFC 7748 6.1, salt = 00 01 .. 0f, info), computed
 * independently with Python's hmac module. */
#define C2S_OF_K "2faa245ec585582a1a2045f9e0aaacf9ce360ec7ea23b160f831643d0a0c923c"
#define S2C_OF_K "f16bf55f3e76bfc8347809fd6b0b7bba54960c4d8d823eedf564dc54edd1469f"

Test(crypto, rfc7748_vectors_and_hkdf_layout) {
    uint8_t a[32], b[32], want[32];
    unhex(A_PRIV, a, 32);
    unhex(B_PRIV, b, 32);
    keys_pair ka, kb;
    inf_error err;
    cr_assert_eq(keys_from_raw_private(a, &ka, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(keys_from_raw_private(b, &kb, &err), INF_OK, "%s", err.msg);
    unhex(A_PUB, want, 32);
    cr_assert_eq(memcmp(ka.pub.b, want, 32), 0);
    unhex(B_PUB, want, 32);
    cr_assert_eq(memcmp(kb.pub.b, want, 32), 0);
    uint8_t sid[16];
    sid_n(sid, 0);
    seal_keys kc, kw;
    cr_assert_eq(seal_derive_client(&ka, &kb.pub, sid, &kc, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(seal_derive_worker(&kb, &ka.pub, sid, &kw, &err), INF_OK, "%s", err.msg);
    unhex(C2S_OF_K, want, 32);
    cr_assert_eq(memcmp(kc.c2s, want, 32), 0, "c2s = HKDF(K, sid, \"infemeral v1 c2s\")");
    unhex(S2C_OF_K, want, 32);
    cr_assert_eq(memcmp(kc.s2c, want, 32), 0, "s2c = HKDF(K, sid, \"infemeral v1 s2c\")");
    cr_assert_eq(memcmp(&kc, &kw, sizeof kc), 0);
}

Test(crypto, agreement_is_the_same_both_ways) {
    for (int i = 0; i < 8; i++) {
        session s;
        session_new(&s);
        cr_assert_eq(memcmp(&s.client, &s.server, sizeof s.client), 0);
    }
}

Test(crypto, session_ids_and_directions_give_different_keys) {
    session s;
    session_new(&s);
    uint8_t sid2[16];
    memcpy(sid2, s.sid, 16);
    sid2[15] ^= 1;
    seal_keys k2;
    inf_error err;
    cr_assert_eq(seal_derive_client(&s.eph, &s.worker.pub, sid2, &k2, &err), INF_OK);
    cr_assert_neq(memcmp(k2.c2s, s.client.c2s, 32), 0);
    cr_assert_neq(memcmp(k2.s2c, s.client.s2c, 32), 0);
    cr_assert_neq(memcmp(s.client.c2s, s.client.s2c, 32), 0, "the two directions have different keys");
    /* A request sealed c2s does not open as s2c, even with the same step. */
    uint8_t ct[5 + 16], pt[5];
    cr_assert_eq(seal_encrypt(&s.client, SEAL_DIR_C2S, 3, "a", 1, "hello", 5, ct, &err), INF_OK);
    cr_assert_eq(seal_decrypt(&s.server, SEAL_DIR_S2C, 3, "a", 1, ct, sizeof ct, pt, NULL, &err), INF_E_AUTH);
    cr_assert_eq(seal_decrypt(&s.server, SEAL_DIR_C2S, 3, "a", 1, ct, sizeof ct, pt, NULL, &err), INF_OK, "%s",
                 err.msg);
}

Test(crypto, low_order_public_key_is_refused) {
    keys_pair me;
    inf_error err;
    cr_assert_eq(keys_generate(&me, &err), INF_OK);
    uint8_t sid[16];
    sid_n(sid, 1);
    seal_keys k;
    keys_public zero = {{0}}, one = {{1}};
    cr_assert_eq(seal_derive_worker(&me, &zero, sid, &k, &err), INF_E_AUTH);
    cr_assert(strstr(err.msg, "epk") && strstr(err.msg, "low order"), "%s", err.msg);
    cr_assert_eq(seal_derive_client(&me, &one, sid, &k, &err), INF_E_AUTH);
    cr_assert(strstr(err.msg, "worker's public key"), "%s", err.msg);
}

Test(crypto, session_id_hex) {
    uint8_t sid[16], back[16];
    sid_n(sid, 0xf0);
    char hex[33];
    seal_sid_hex(sid, hex);
    cr_assert_str_eq(hex, "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
    inf_error err;
    cr_assert_eq(seal_sid_parse(hex, back, &err), INF_OK);
    cr_assert_eq(memcmp(sid, back, 16), 0);
    cr_assert_eq(seal_sid_parse("F0F1F2F3F4F5F6F7F8F9FAFBFCFDFEFF", back, &err), INF_E_FORMAT);
    cr_assert_eq(seal_sid_parse("f0f1", back, &err), INF_E_FORMAT);
    cr_assert_eq(seal_sid_parse("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff0", back, &err), INF_E_FORMAT);
}

/* ---- AEAD ----------------------------------------------------------------------- */

Test(crypto, seal_open_round_trip_in_place_and_empty) {
    session s;
    session_new(&s);
    inf_error err;
    const char *aad = "header";
    uint8_t buf[1000 + 16], orig[1000], out[1000];
    for (int i = 0; i < 1000; i++) orig[i] = buf[i] = (uint8_t)(i * 7);
    cr_assert_eq(seal_encrypt(&s.client, SEAL_DIR_C2S, 42, aad, 6, buf, 1000, buf, &err), INF_OK, "%s", err.msg);
    cr_assert_neq(memcmp(buf, orig, 1000), 0);
    cr_assert_eq(seal_decrypt(&s.server, SEAL_DIR_C2S, 42, aad, 6, buf, sizeof buf, out, NULL, &err), INF_OK, "%s",
                 err.msg);
    cr_assert_eq(memcmp(out, orig, 1000), 0);
    /* Empty plaintext: just the tag, still authenticated. */
    uint8_t tag[16], none[1];
    cr_assert_eq(seal_encrypt(&s.server, SEAL_DIR_S2C, 0, aad, 6, NULL, 0, tag, &err), INF_OK);
    cr_assert_eq(seal_decrypt(&s.client, SEAL_DIR_S2C, 0, aad, 6, tag, 16, none, NULL, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(seal_decrypt(&s.client, SEAL_DIR_S2C, 0, aad, 5, tag, 16, none, NULL, &err), INF_E_AUTH);
    cr_assert_eq(seal_decrypt(&s.client, SEAL_DIR_S2C, 0, aad, 6, tag, 15, none, NULL, &err), INF_E_FORMAT);
    cr_assert_eq(seal_encrypt(&s.client, 3, 0, aad, 6, orig, 4, buf, &err), INF_E_ARG);
}

Test(crypto, every_tampering_is_an_auth_error) {
    session s;
    session_new(&s);
    inf_error err;
    uint8_t aad[] = "infemeral/1 req ...";
    uint8_t pt[64], ct[64 + 16], out[64];
    for (int i = 0; i < 64; i++) pt[i] = (uint8_t)i;
    cr_assert_eq(seal_encrypt(&s.client, SEAL_DIR_C2S, 7, aad, sizeof aad, pt, 64, ct, &err), INF_OK);

    for (size_t i = 0; i < sizeof ct; i++) { /* every ciphertext and tag byte */
        ct[i] ^= 0x01;
        memset(out, 0x55, sizeof out);
        cr_assert_eq(seal_decrypt(&s.server, SEAL_DIR_C2S, 7, aad, sizeof aad, ct, sizeof ct, out, "request", &err),
                     INF_E_AUTH, "byte %zu", i);
        ct[i] ^= 0x01;
        for (int j = 0; j < 64; j++) cr_assert_eq(out[j], 0, "plaintext wiped after a failed tag");
    }
    cr_assert(strstr(err.msg, "request: authentication failed") && strstr(err.msg, "wrong worker key"), "%s",
              err.msg);
    for (size_t i = 0; i < sizeof aad; i++) { /* every AAD byte */
        aad[i] ^= 0x20;
        cr_assert_eq(seal_decrypt(&s.server, SEAL_DIR_C2S, 7, aad, sizeof aad, ct, sizeof ct, out, NULL, &err),
                     INF_E_AUTH, "aad byte %zu", i);
        aad[i] ^= 0x20;
    }
    /* Wrong step (a replay under another step, or a skipped one). */
    cr_assert_eq(seal_decrypt(&s.server, SEAL_DIR_C2S, 8, aad, sizeof aad, ct, sizeof ct, out, NULL, &err), INF_E_AUTH);
    cr_assert_eq(seal_decrypt(&s.server, SEAL_DIR_C2S, 6, aad, sizeof aad, ct, sizeof ct, out, NULL, &err), INF_E_AUTH);
    /* Wrong key: another worker, and another client's session. */
    session t;
    session_new(&t);
    cr_assert_eq(seal_decrypt(&t.server, SEAL_DIR_C2S, 7, aad, sizeof aad, ct, sizeof ct, out, NULL, &err), INF_E_AUTH);
    seal_keys wrong;
    cr_assert_eq(seal_derive_worker(&t.worker, &s.eph.pub, s.sid, &wrong, &err), INF_OK);
    cr_assert_eq(seal_decrypt(&wrong, SEAL_DIR_C2S, 7, aad, sizeof aad, ct, sizeof ct, out, NULL, &err), INF_E_AUTH);
    /* And the untouched message still opens. */
    cr_assert_eq(seal_decrypt(&s.server, SEAL_DIR_C2S, 7, aad, sizeof aad, ct, sizeof ct, out, NULL, &err), INF_OK);
    cr_assert_eq(memcmp(out, pt, 64), 0);
}

Test(crypto, nonce_layout_matches_a_direct_evp_call) {
    session s;
    session_new(&s);
    inf_error err;
    const uint64_t step = UINT64_C(0x0102030405060708);
    uint8_t nonce[12];
    seal_nonce(SEAL_DIR_S2C, step, nonce);
    const uint8_t want_nonce[12] = {0, 0, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8};
    cr_assert_eq(memcmp(nonce, want_nonce, 12), 0);

    const char *aad = "aad text";
    uint8_t pt[100], ours[116], theirs[116];
    for (int i = 0; i < 100; i++) pt[i] = (uint8_t)(255 - i);
    for (uint32_t dir = 1; dir <= 2; dir++) {
        cr_assert_eq(seal_encrypt(&s.client, dir, step, aad, 8, pt, 100, ours, &err), INF_OK);
        uint8_t iv[12] = {0, 0, 0, (uint8_t)dir, 1, 2, 3, 4, 5, 6, 7, 8};
        EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
        int l = 0, l2 = 0;
        cr_assert_eq(EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, dir == 1 ? s.client.c2s : s.client.s2c, iv), 1);
        cr_assert_eq(EVP_EncryptUpdate(c, NULL, &l, (const uint8_t *)aad, 8), 1);
        cr_assert_eq(EVP_EncryptUpdate(c, theirs, &l, pt, 100), 1);
        cr_assert_eq(EVP_EncryptFinal_ex(c, theirs + l, &l2), 1);
        cr_assert_eq(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, theirs + 100), 1);
        EVP_CIPHER_CTX_free(c);
        cr_assert_eq(memcmp(ours, theirs, sizeof ours), 0, "dir %u: ciphertext || tag", dir);
    }
}

/* ---- key files ------------------------------------------------------------------ */

static mode_t file_mode(const char *p) {
    struct stat sb;
    cr_assert_eq(stat(p, &sb), 0, "%s", p);
    return sb.st_mode & 07777;
}

Test(keys, write_modes_contents_and_read_back) {
    char dir[256], kp_path[300], pub_path[300];
    cr_assert_not_null(tu_tmpdir(dir, sizeof dir));
    snprintf(kp_path, sizeof kp_path, "%s/worker.key", dir);
    snprintf(pub_path, sizeof pub_path, "%s/worker.pub", dir);
    umask(0); /* the files' modes must not depend on the umask */
    keys_pair k, back;
    keys_public pub;
    inf_error err;
    cr_assert_eq(keys_generate(&k, &err), INF_OK);
    cr_assert_eq(keys_write(dir, &k, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(file_mode(kp_path), 0600);
    cr_assert_eq(file_mode(pub_path), 0644);
    size_t len;
    char *text = tu_read_file(kp_path, &len);
    char want[64];
    b64_encode(k.priv, 32, want);
    strcat(want, "\n");
    cr_assert_str_eq(text, want);
    free(text);
    text = tu_read_file(pub_path, &len);
    keys_public_base64(&k.pub, want);
    strcat(want, "\n");
    cr_assert_str_eq(text, want);
    free(text);
    cr_assert_eq(keys_read_private(kp_path, &back, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(memcmp(&back, &k, sizeof k), 0);
    cr_assert_eq(keys_read_public(pub_path, &pub, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(memcmp(&pub, &k.pub, sizeof pub), 0);

    /* Never overwritten: a second keygen into the same directory fails and
     * leaves the first key as it was. */
    keys_pair k2;
    cr_assert_eq(keys_generate(&k2, &err), INF_OK);
    cr_assert_eq(keys_write(dir, &k2, &err), INF_E_IO);
    cr_assert(strstr(err.msg, "worker.key") && strstr(err.msg, "already exists"), "%s", err.msg);
    cr_assert_eq(keys_read_private(kp_path, &back, &err), INF_OK);
    cr_assert_eq(memcmp(&back, &k, sizeof k), 0);
    cr_assert_eq(keys_read_public(pub_path, &pub, &err), INF_OK);
    cr_assert_eq(memcmp(&pub, &k.pub, sizeof pub), 0);
    unlink(kp_path);
    unlink(pub_path);
    rmdir(dir);
}

Test(keys, group_or_world_readable_private_key_is_refused) {
    char dir[256], path[300];
    cr_assert_not_null(tu_tmpdir(dir, sizeof dir));
    keys_pair k, back;
    inf_error err;
    cr_assert_eq(keys_generate(&k, &err), INF_OK);
    cr_assert_eq(keys_write(dir, &k, &err), INF_OK, "%s", err.msg);
    snprintf(path, sizeof path, "%s/worker.key", dir);
    const mode_t modes[] = {0640, 0604, 0620, 0644};
    for (size_t i = 0; i < 4; i++) {
        cr_assert_eq(chmod(path, modes[i]), 0);
        cr_assert_eq(keys_read_private(path, &back, &err), INF_E_ARG, "mode %o", modes[i]);
        cr_assert(strstr(err.msg, "chmod 600") && strstr(err.msg, path), "%s", err.msg);
    }
    cr_assert_eq(chmod(path, 0400), 0);
    cr_assert_eq(keys_read_private(path, &back, &err), INF_OK, "%s", err.msg);
    /* The public key file has no such rule. */
    snprintf(path, sizeof path, "%s/worker.pub", dir);
    keys_public pub;
    cr_assert_eq(keys_read_public(path, &pub, &err), INF_OK, "%s", err.msg);
    snprintf(path, sizeof path, "%s/worker.key", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/worker.pub", dir);
    unlink(path);
    rmdir(dir);
}

Test(keys, malformed_key_files_are_refused_without_echoing_them) {
    char dir[256], path[300];
    cr_assert_not_null(tu_tmpdir(dir, sizeof dir));
    snprintf(path, sizeof path, "%s/k", dir);
    keys_pair k, back;
    inf_error err;
    cr_assert_eq(keys_generate(&k, &err), INF_OK);
    char good[64];
    b64_encode(k.priv, 32, good);
    char bad[5][128];
    snprintf(bad[0], 128, "%s\n\n", good);           /* two newlines */
    snprintf(bad[1], 128, "%.43s", good);            /* one character short */
    snprintf(bad[2], 128, " %s", good);              /* leading space */
    snprintf(bad[3], 128, "%s\r\n", good);           /* CRLF */
    snprintf(bad[4], 128, "%.40s!%s", good, good + 41); /* bad character */
    for (int i = 0; i < 5; i++) {
        unlink(path);
        cr_assert_eq(tu_write_file(path, bad[i], strlen(bad[i])), 0);
        cr_assert_eq(chmod(path, 0600), 0);
        memset(&back, 0x77, sizeof back);
        cr_assert_eq(keys_read_private(path, &back, &err), INF_E_FORMAT, "case %d", i);
        cr_assert(strstr(err.msg, path), "%s", err.msg);
        cr_assert_null(strstr(err.msg, good + 10), "message must not echo the key: %s", err.msg);
        keys_pair zero;
        memset(&zero, 0, sizeof zero);
        cr_assert_eq(memcmp(&back, &zero, sizeof back), 0, "wiped on failure");
    }
    unlink(path);
    /* No such file, a directory. */
    cr_assert_eq(keys_read_private(path, &back, &err), INF_E_IO);
    cr_assert_eq(keys_read_private(dir, &back, &err), INF_E_FORMAT);
    rmdir(dir);
}

Test(keys, environment_loading) {
    keys_pair k, back;
    inf_error err;
    cr_assert_eq(keys_generate(&k, &err), INF_OK);
    char text[64];
    b64_encode(k.priv, 32, text);
    unsetenv(KEYS_ENV_KEY);
    unsetenv(KEYS_ENV_KEY_FILE);
    cr_assert_eq(keys_worker_from_env(&back, &err), INF_E_NOTFOUND);
    cr_assert(strstr(err.msg, "INFEMERAL_WORKER_KEY ") && strstr(err.msg, "INFEMERAL_WORKER_KEY_FILE"), "%s", err.msg);

    setenv(KEYS_ENV_KEY, text, 1);
    cr_assert_eq(keys_worker_from_env(&back, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(memcmp(&back, &k, sizeof k), 0);
    strcat(text, "\n"); /* as `export INFEMERAL_WORKER_KEY="$(cat worker.key)\n"` would have it */
    setenv(KEYS_ENV_KEY, text, 1);
    cr_assert_eq(keys_worker_from_env(&back, &err), INF_OK, "%s", err.msg);

    static const char *const bad[] = {"not base64 at all", "AAAA", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                                      "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="}; /* last: 31 bytes */
    for (size_t i = 0; i < 4; i++) {
        setenv(KEYS_ENV_KEY, bad[i], 1);
        cr_assert_eq(keys_worker_from_env(&back, &err), INF_E_FORMAT, "case %zu", i);
        cr_assert(strstr(err.msg, "INFEMERAL_WORKER_KEY"), "%s", err.msg);
    }

    /* The file variable, when the text one is unset or empty. */
    char dir[256], path[300];
    cr_assert_not_null(tu_tmpdir(dir, sizeof dir));
    cr_assert_eq(keys_write(dir, &k, &err), INF_OK);
    snprintf(path, sizeof path, "%s/worker.key", dir);
    setenv(KEYS_ENV_KEY, "", 1);
    setenv(KEYS_ENV_KEY_FILE, path, 1);
    memset(&back, 0, sizeof back);
    cr_assert_eq(keys_worker_from_env(&back, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(memcmp(&back, &k, sizeof k), 0);
    chmod(path, 0644);
    cr_assert_eq(keys_worker_from_env(&back, &err), INF_E_ARG);
    cr_assert(strstr(err.msg, "INFEMERAL_WORKER_KEY_FILE") && strstr(err.msg, "chmod 600"), "%s", err.msg);
    unlink(path);
    snprintf(path, sizeof path, "%s/worker.pub", dir);
    unlink(path);
    rmdir(dir);
}

Test(keys, fingerprint_is_stable) {
    keys_public pub;
    for (int i = 0; i < 32; i++) pub.b[i] = (uint8_t)i;
    char f[KEYS_FPR_LEN];
    inf_error err;
    cr_assert_eq(keys_fingerprint(&pub, f, &err), INF_OK);
    /* hashlib.sha256(b"infemeral worker key v1" + bytes(range(32))).digest()[:16].hex() */
    cr_assert_str_eq(f, "2ee8a6e1550ff65ba1466a943cfdce7b");
    pub.b[31] ^= 1;
    char g[KEYS_FPR_LEN];
    cr_assert_eq(keys_fingerprint(&pub, g, &err), INF_OK);
    cr_assert_str_neq(f, g);
}

Test(keys, keygen_command) {
    char dir[256], sub[300], path[340];
    cr_assert_not_null(tu_tmpdir(dir, sizeof dir));
    snprintf(sub, sizeof sub, "%s/keys", dir); /* created by keygen */
    char *ok[] = {"--out", sub};
    fflush(stdout);
    cr_assert_eq(cmd_keygen(2, ok), 0);
    snprintf(path, sizeof path, "%s/worker.key", sub);
    cr_assert_eq(file_mode(path), 0600);
    keys_pair k;
    inf_error err;
    cr_assert_eq(keys_read_private(path, &k, &err), INF_OK, "%s", err.msg);
    cr_assert_eq(cmd_keygen(2, ok), 1, "an existing worker.key is refused");
    keys_pair again;
    cr_assert_eq(keys_read_private(path, &again, &err), INF_OK);
    cr_assert_eq(memcmp(&k, &again, sizeof k), 0);
    char *none[] = {"--bogus"};
    cr_assert_eq(cmd_keygen(0, none), 2);
    cr_assert_eq(cmd_keygen(1, none), 2);
    unlink(path);
    snprintf(path, sizeof path, "%s/worker.pub", sub);
    unlink(path);
    rmdir(sub);
    rmdir(dir);
}
