/* If this fails, error messages users see lose the name of what was wrong. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "status.h"

Test(status, fail_formats_message_and_returns_code) {
    inf_error err;
    inf_status st = inf_fail(&err, INF_E_FORMAT, "%s: bad %s", "model.gguf", "magic");
    cr_assert_eq(st, INF_E_FORMAT);
    cr_assert_str_eq(err.msg, "model.gguf: bad magic");
    st = inf_wrap(&err, st, "loading %s", "x");
    cr_assert_str_eq(err.msg, "loading x: model.gguf: bad magic");
}

Test(status, null_error_is_allowed) {
    cr_assert_eq(inf_fail(NULL, INF_E_IO, "x"), INF_E_IO);
}

Test(status, size_arithmetic_detects_overflow) {
    size_t r;
    cr_assert(inf_mul_size(1u << 20, 1u << 10, &r));
    cr_assert_eq(r, (size_t)1 << 30);
    cr_assert_not(inf_mul_size(SIZE_MAX / 2 + 1, 2, &r));
    cr_assert_not(inf_add_size(SIZE_MAX, 1, &r));
    cr_assert_str_eq(inf_strstatus(INF_E_SHAPE), "shape mismatch");
}
