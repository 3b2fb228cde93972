/* harmony.c - placeholder while the renderer is written. */
#include "harmony.h"

bool harmony_is_stop(uint32_t id) {
    return id == TOK_RETURN || id == TOK_CALL;
}
