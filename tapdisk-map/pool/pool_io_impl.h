// Internal to the pool layer: constructors of the two PoolIo implementations, used by
// CreatePoolIo (pool_io.cc). Not for use outside tapdisk-map/pool/.
#pragma once

#include "tapdisk-map/pool/pool_io.h"

namespace tapmap::pool::internal {

// Fails (not-supported / io-error) if the kernel refuses io_uring; `file` is moved
// from only on success.
Result<std::unique_ptr<PoolIo>> CreateUringPoolIo(boost::asio::io_context& io, PoolFile& file,
                                                 unsigned queue_depth);
std::unique_ptr<PoolIo> CreateThreadPoolIo(boost::asio::io_context& io, PoolFile file,
                                           unsigned threads);

}  // namespace tapmap::pool::internal
