/* base64.h — RFC 4648 base64 (standard alphabet "A-Za-z0-9+/", "=" padding).
 *
 * The encoder always pads. The decoder is strict, because base64 text here
 * comes from the network and part of it is authenticated as text (the
 * client's ephemeral public key is in the AAD): it accepts only the one
 * canonical encoding of each byte string —
 *   - length a multiple of 4, no whitespace or line breaks, no other bytes;
 *   - "=" only as the last one or two characters of the text;
 *   - the unused low bits of the last character before the padding are zero
 *     (so "Zg==" decodes, "Zh==" is refused).
 * Decoded output is bounded by a caller-given capacity, checked before any
 * byte is written past it.
 *
 * Nothing here allocates except b64_encode_alloc; nothing has state, so
 * everything is thread-safe.
 */
#ifndef INF_BASE64_H
#define INF_BASE64_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* Characters of the encoding of n bytes (no NUL): 4 * ceil(n / 3).
 * Returns 0 when that would overflow size_t (n > about 3/4 SIZE_MAX). */
size_t b64_encoded_len(size_t n);

/* Writes the encoding of in[0..n) and a NUL to out, which must hold
 * b64_encoded_len(n) + 1 bytes. */
void b64_encode(const void *in, size_t n, char *out);

/* The encoding as a malloc'd NUL-terminated string (caller frees); NULL on
 * overflow or when out of memory. */
char *b64_encode_alloc(const void *in, size_t n);

/* Bytes that a valid text of `len` characters decodes to, at most
 * (3 * len / 4; exact unless the text ends in padding). */
size_t b64_decoded_max(size_t len);

/* Decodes text[0..len) (no NUL needed) into out, which holds cap bytes.
 * *out_len gets the decoded length. Errors (INF_E_FORMAT, or INF_E_RANGE
 * when the result would be larger than cap) give the offset and, for a bad
 * character, its code — never the surrounding text. `what` names the field
 * in messages ("payload", "epk", a file name); may be NULL. On failure the
 * contents of out are unspecified (callers wipe it if it mattered). */
inf_status b64_decode(const char *text, size_t len, uint8_t *out, size_t cap, size_t *out_len,
                      const char *what, inf_error *err);

#endif
