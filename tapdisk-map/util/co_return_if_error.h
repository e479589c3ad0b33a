// TAPMAP_CO_RETURN_IF_ERROR: TAPMAP_RETURN_IF_ERROR (common/status.h) for coroutines:
// evaluates `expr` (a Status) and co_returns it if it is not OK.
#pragma once

#include "common/status.h"

#define TAPMAP_CO_RETURN_IF_ERROR(expr)        \
  do {                                         \
    ::tapmap::Status _tapmap_s = (expr);       \
    if (!_tapmap_s.ok()) co_return _tapmap_s;  \
  } while (0)
